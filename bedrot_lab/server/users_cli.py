"""``bedrot-lab server user``: the tracking server's accounts (MLflow's basic-auth app), for its admin."""

from __future__ import annotations

import sys

import click

from ..cli import CliError
from ..cli.output import echo_json, echo_table
from .accounts import PERMISSIONS


@click.group()
def user() -> None:
    """Accounts on the lake's tracking server: add, list, grant, remove (its admin only).

    They talk to [tracking] uri (or MLFLOW_TRACKING_URI) as the admin whose login is in
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or the [tracking] credentials
    file). The server must run with accounts on ([server] auth = true); see docs/server.md.
    """


def _accounts(state):
    from ..config import load_settings
    from .accounts import Accounts

    return Accounts.open(load_settings(state.lake))


@user.command()
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--admin", is_flag=True, help="Make the user an admin of the server.")
@click.pass_obj
def add(state, name: str, password_stdin: bool, admin: bool) -> None:
    """Add user NAME; the password is asked for twice (or read with --password-stdin).

    A password never goes on the command line, where other users of the machine can see
    it. The server wants 12 characters or more.
    """
    accounts = _accounts(state)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True, err=True)
    if not password:
        raise CliError("the password is empty: give one (12 characters or more)", exit_code=2)
    added = accounts.add(name, password, admin=admin)
    click.echo(f"user {added['username']!r} added on {accounts.url}" + (" as an admin" if admin else ""))


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def list_users(state, as_json: bool) -> None:
    """The server's users: admin or not, and what each was granted beyond the default permission."""
    users = _accounts(state).users()
    if as_json:
        echo_json(users)
        return
    rows = [{"user": found["username"], "admin": "yes" if found["admin"] else "",
             "permissions": "; ".join(_grant(grant) for grant in found["permissions"])} for found in users]
    echo_table(rows, ["user", "admin", "permissions"])


def _grant(grant: dict) -> str:
    kind = {"experiment": "experiment", "registered_model": "model"}.get(grant["resource_type"],
                                                                         grant["resource_type"])
    where = f"every {kind}" if grant["resource"] == "*" else f"{kind} {grant['name']}"
    return f"{grant['permission']} on {where}" + (f" (role {grant['role']})" if grant["role"] else "")


@user.command("set-permission")
@click.argument("name")
@click.argument("target", metavar="EXPERIMENT")
@click.argument("permission", metavar="PERMISSION", type=click.Choice(PERMISSIONS, case_sensitive=False))
@click.option("--model", is_flag=True, help="EXPERIMENT is a registered model's name.")
@click.pass_obj
def set_permission(state, name: str, target: str, permission: str, model: bool) -> None:
    """Grant user NAME PERMISSION on EXPERIMENT (a name or an id), replacing an earlier grant.

    \b
    READ            see its runs (what every account gets by default: [server] default_permission)
    EDIT            also write to it: runs, params, metrics, tags; end others' runs (the reaper)
    MANAGE          also delete it and grant permissions on it (its creator has this)
    NO_PERMISSIONS  nothing, whatever the default
    USE and DENY are MLflow's too: DENY wins over every other grant.
    """
    accounts = _accounts(state)
    found = accounts.set_permission(name, target, permission, model=model)
    click.echo(f"{name!r} has {permission.upper()} on {found.shown}")


@user.command()
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def remove(state, name: str, yes: bool) -> None:
    """Remove user NAME and the permissions granted to it (its runs stay)."""
    accounts = _accounts(state)
    if not yes:
        click.confirm(f"remove user {name!r} from {accounts.url}?", abort=True, err=True)
    accounts.remove(name)
    click.echo(f"user {name!r} removed from {accounts.url}")
