"""``bedrot-lab server``: start, stop and look at the lake's MLflow tracking server."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import click

from ..cli import CliError
from ..cli.output import duration, echo_json

#: seconds ``server stop`` waits after SIGTERM before it sends SIGKILL
STOP_TIMEOUT = 15.0


@click.group()
def server() -> None:
    """MLflow's tracking server for this lake: many analysts, one store (see docs/server.md).

    It serves the backend store of [server] in bedrot-lab.toml (PostgreSQL for a team; the
    lake's own store by default) and proxies artifacts, so clients need only its URL:
    [tracking] uri = "http://HOST:PORT", or MLFLOW_TRACKING_URI.
    """


@server.command()
@click.option("--host", help="Interface to listen on (default: [server] host, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: [server] port, else 5000).")
@click.option("--workers", type=click.IntRange(min=1), help="Worker processes (default: [server] workers, else 2).")
@click.option("--backend-store-uri", metavar="URI",
              help="Database of runs and models (default: [server] backend_store_uri, else the lake's store).")
@click.option("--artifacts-destination", metavar="PATH|URI",
              help="Where artifacts are kept (default: [server] artifacts_destination, else mlruns/artifacts).")
@click.option("--auth/--no-auth", default=None, help="Accounts (MLflow's basic-auth) on or off (default: [server] auth).")
@click.option("--foreground", is_flag=True, help="Run in this terminal (for systemd); Ctrl-C stops it.")
@click.pass_obj
def start(state, host, port, workers, backend_store_uri, artifacts_destination, auth, foreground: bool) -> None:
    """Start the tracking server for this lake and wait until it answers.

    Flags win over [server] in bedrot-lab.toml. A second server for the same lake is
    refused. With accounts on, MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY
    come from the environment or [server] secrets_file.
    """
    from ..locks import file_lock
    from . import process
    from .settings import ServerSettings

    lake = state.lab.settings
    settings = ServerSettings.from_settings(lake).overridden(
        host=host, port=port, workers=workers, backend_store_uri=backend_store_uri,
        artifacts_destination=artifacts_destination, auth=auth)
    folder = process.state_folder(lake.state_dir)
    with file_lock(folder / "start.lock"):  # two starts at once: the second finds the first's record
        child = _launch(settings, lake.state_dir, foreground)
    log = folder / process.LOG_NAME
    click.echo(f"starting MLflow's tracking server (pid {child.pid}, {settings.workers} worker"
               f"{'s' if settings.workers != 1 else ''}) at {settings.url} ...")
    started = time.monotonic()
    healthy = process.wait_healthy(settings.url, lambda: child.poll() is None, settings.start_timeout,
                                   progress=lambda waited: click.echo(f"  still waiting ({waited:.0f} s)"))
    if not healthy:
        if child.poll() is None:
            process.stop_server(child.pid, 5)
            why = f"did not answer {settings.url}/health within {settings.start_timeout:g} s"
        else:
            why = f"exited with code {child.returncode}"
        process.forget(lake.state_dir)
        tail = process.log_tail(log)
        raise CliError(f"the server {why}; the end of {log}:\n{tail}" if tail else f"the server {why}")
    click.echo(f"server healthy after {time.monotonic() - started:.1f} s: {settings.url}")
    admin = None
    if settings.auth:
        admin = settings.admin_username, process.read_secrets(settings, os.environ)["MLFLOW_AUTH_ADMIN_PASSWORD"]
    process.delete_empty_default(settings.url, admin)
    click.echo(f"  backend: {_masked(settings.backend_store_uri)}")
    click.echo(f"  artifacts: {settings.artifacts_destination} (proxied: clients see mlflow-artifacts:/ URIs)")
    if not settings.backend_store_uri.startswith("sqlite"):
        click.echo(f"  database connections: up to {settings.max_connections} ({settings.workers} x "
                   f"{settings.engines_per_worker} pools of {settings.pool_size}+{settings.max_overflow}, "
                   f"and the parent's; see docs/server.md)")
    if settings.auth:
        click.echo(f"  accounts: on (admin {settings.admin_username!r}, default permission "
                   f"{settings.default_permission})")
    click.echo(f"clients: [tracking] uri = \"{settings.url}\" in bedrot-lab.toml, or "
               f"export MLFLOW_TRACKING_URI={settings.url}")
    click.echo(f"log: {log}; stop it with: bedrot-lab server stop")


def _launch(settings, state_dir: Path, foreground: bool) -> subprocess.Popen:
    """Check, prepare and start the server in the background (``foreground``: become it)."""
    from . import process

    running, _ = process.recorded_server(state_dir)
    if running is not None:
        raise CliError(f"a server already runs for this lake: {running.describe()}; "
                       "stop it with: bedrot-lab server stop")
    process.check_port_free(settings.host, settings.port)
    secrets = process.read_secrets(settings, os.environ) if settings.auth else {}
    for uri, what in _databases(settings):
        if process.ensure_database(uri, what):
            click.echo(f"created the {what}: {_masked(uri)}")
    if "://" not in settings.artifacts_destination:
        Path(settings.artifacts_destination).mkdir(parents=True, exist_ok=True)
    folder = process.state_folder(state_dir)
    auth_ini = process.write_auth_ini(folder, settings, process.auth_database_uri(settings)) if settings.auth else None
    command = process.server_command(settings)
    env = process.server_environment(settings, os.environ, secrets, auth_ini)
    if foreground:
        _write_state(folder, os.getpid(), settings, log=None)
        sys.stdout.flush()
        os.execve(sys.executable, command, env)  # the same pid: systemd and the state file both see MLflow
    log = folder / process.LOG_NAME
    with log.open("ab") as output:
        output.write(f"--- bedrot-lab server start, {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %z}\n".encode())
        output.flush()
        child = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    _write_state(folder, child.pid, settings, log=log)
    return child


def _databases(settings) -> list[tuple[str, str]]:
    from .process import auth_database_uri

    databases = [(settings.backend_store_uri, "backend store database")]
    if settings.auth:
        databases.append((auth_database_uri(settings), "account database"))
    return databases


def _write_state(folder: Path, pid: int, settings, log: Path | None) -> None:
    from ..fsutil import atomic_write
    from .process import STATE_NAME

    record = {
        "pid": pid, "url": settings.url, "host": settings.host, "port": settings.port,
        "workers": settings.workers, "started": time.time(),
        "backend_store_uri": _masked(settings.backend_store_uri),
        "artifacts_destination": settings.artifacts_destination, "auth": settings.auth,
        "log": str(log) if log else None,
    }
    atomic_write(folder / STATE_NAME, json.dumps(record, indent=2).encode())


def _masked(uri: str) -> str:
    from ..secrets import scrub

    return scrub(uri)[0]


@server.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=STOP_TIMEOUT, show_default=True,
              help="Seconds to wait after SIGTERM before SIGKILL.")
@click.pass_obj
def stop(state, timeout: float) -> None:
    """Stop this lake's server (SIGTERM to its processes, SIGKILL after --timeout)."""
    from . import process

    state_dir = state.lab.settings.state_dir
    running, record = process.recorded_server(state_dir)
    if running is None:
        process.forget(state_dir)
        stale = f" (removed the stale record of pid {record.get('pid')})" if record else ""
        click.echo(f"no server runs for this lake{stale}")
        return
    started = time.monotonic()
    gentle = process.stop_server(running.pid, timeout)
    process.forget(state_dir)
    how = "" if gentle else f" (killed: it ignored SIGTERM for {timeout:g} s)"
    click.echo(f"server stopped (pid {running.pid}) in {time.monotonic() - started:.1f} s{how}")


@server.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(state, as_json: bool) -> None:
    """Is the server running? Its pid, URL, uptime, stores and health."""
    from . import process

    state_dir = state.lab.settings.state_dir
    running, record = process.recorded_server(state_dir)
    record = dict(record or {})
    report = {
        "running": running is not None,
        "pid": running.pid if running else None,
        "url": record.get("url") if running else None,
        "uptime_seconds": round(running.uptime, 1) if running else None,
        "health": process.health(running.url) if running else None,
        "workers": record.get("workers") if running else None,
        "backend_store_uri": record.get("backend_store_uri") if running else None,
        "artifacts_destination": record.get("artifacts_destination") if running else None,
        "auth": record.get("auth") if running else None,
        "log": str(process.state_folder(state_dir) / process.LOG_NAME),
    }
    if as_json:
        echo_json(report)
        return
    if running is None:
        click.echo("not running; start it with: bedrot-lab server start")
        return
    click.echo(f"running: {running.describe()} (up {duration(running.uptime)}), health: {report['health']}")
    click.echo(f"workers: {report['workers']}; accounts: {'on' if report['auth'] else 'off'}")
    click.echo(f"backend: {report['backend_store_uri']}")
    click.echo(f"artifacts: {report['artifacts_destination']}")
    click.echo(f"log: {report['log']}")


if importlib.util.find_spec(f"{__package__}.users_cli") is not None:  # the accounts commands, once there
    from .users_cli import user

    server.add_command(user)
