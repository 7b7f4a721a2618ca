"""Accounts on a real tracking server (MLflow's basic-auth app on PostgreSQL): the admin's
`server user` commands, what an analyst may read and write with default_permission READ,
the reaper's account, client credentials from a netrc-style file, and a password that is
never recorded. One server serves the whole module."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import new_database
from servers import running_server

from bedrot_lab.testing import make_lake

pytestmark = pytest.mark.server

PLUGIN = '''
import os
import time

import pandas as pd

from bedrot_lab import experiment, hookimpl


@experiment("ana-study")
def ana_study(ctx):
    ctx.log_metric("answer", 42)


@experiment("ben-study")
def ben_study(ctx):
    ctx.log_metric("answer", 7)


@experiment("sleepy")
def sleepy(ctx):
    ctx.log_metric("started", 1)
    time.sleep(600)


@experiment("leaky", params={"note": ""})
def leaky(ctx):
    password = os.environ["MLFLOW_TRACKING_PASSWORD"]
    ctx.set_tag("said", f"logged in with {password}")
    ctx.log_table(pd.DataFrame({"said": [password, "nothing"]}), "said")
    ctx.log_text(f"it was {password} all along", "notes.txt")
    ctx.log_metric("done", 1)
    raise RuntimeError(f"could not use {password}")


@hookimpl
def register_experiments(register):
    for found in (ana_study, ben_study, sleepy, leaky):
        register(found)
'''


@pytest.fixture(scope="module")
def backend(postgres: str) -> Iterator[str]:
    """A database for the module's server (and, beside it, the one its accounts go to), dropped after."""
    with new_database(postgres, beside=("_auth",)) as uri:
        yield uri


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_lake(tmp_path_factory.mktemp("accounts") / "lake")
    (root / "plugins" / "studies.py").write_text(PLUGIN)
    return root


@pytest.fixture(scope="module")
def server(lake: Path, backend: str) -> Iterator[dict[str, str]]:
    """The server, with users ana and ben added by the admin: the admin's client environment,
    with the others' passwords under ``ANA`` and ``BEN`` (for the test only)."""
    env = {**os.environ, "BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD": "1", "BEDROT_USER": "tester"}
    with running_server(lake, backend, auth=True, env=env) as (_, admin):
        passwords = {"ana": "pw-" + secrets.token_hex(8), "ben": "pw-" + secrets.token_hex(8)}
        for name, password in passwords.items():
            added = bedrot("server", "user", "add", name, "--password-stdin", env=admin, input=password + "\n")
            assert added.returncode == 0, added
        yield {**admin, "ANA": passwords["ana"], "BEN": passwords["ben"]}


def bedrot(*args: str, env: dict[str, str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real ``bedrot-lab`` command in a subprocess, ``input`` on its standard input."""
    return subprocess.run([sys.executable, "-m", "bedrot_lab", *args], input=input, capture_output=True,
                          text=True, env=env, timeout=240, check=False)


def as_user(server: dict[str, str], name: str) -> dict[str, str]:
    """The client environment of user ``name`` (``admin``, ``ana`` or ``ben``)."""
    env = {key: value for key, value in server.items() if key not in ("ANA", "BEN")}
    if name != "admin":
        env.update(MLFLOW_TRACKING_USERNAME=name, MLFLOW_TRACKING_PASSWORD=server[name.upper()])
    return env


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    """``done`` failed with one error line (after any progress line) holding each of ``expected``,
    and no traceback."""
    assert done.returncode != 0, done
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in errors[0], errors[0]


@pytest.fixture
def admin_client(server: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """An MLflow client in this process, logged in as the admin."""
    from mlflow import MlflowClient

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(key, server[key])
    return MlflowClient(server["MLFLOW_TRACKING_URI"])


def statuses(client, experiment: str) -> list[str]:
    """The statuses of the runs of ``experiment`` (by name), as the store has them."""
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else [run.info.status for run in client.search_runs([found.experiment_id])]


# -- the admin's commands ---------------------------------------------------------------------


def test_account_mistakes_are_one_line_each(server: dict[str, str]) -> None:
    admin = as_user(server, "admin")
    one_line_error(bedrot("server", "user", "add", "carl", "--password-stdin", env=admin, input="short-pw\n"),
                   "the password is too short", "12 characters")
    one_line_error(bedrot("server", "user", "add", "ana", "--password-stdin", env=admin, input="pw-" + "x" * 16),
                   "user 'ana' exists already")
    one_line_error(bedrot("server", "user", "set-permission", "nobody", "ana-study", "EDIT", env=admin),
                   "no user 'nobody'")
    one_line_error(bedrot("server", "user", "set-permission", "ben", "no-such-study", "EDIT", env=admin),
                   "no experiment 'no-such-study'")
    wrong = {**admin, "MLFLOW_TRACKING_PASSWORD": "pw-" + secrets.token_hex(8)}
    one_line_error(bedrot("server", "user", "list", env=wrong), "did not accept the password of 'admin'")
    one_line_error(bedrot("server", "user", "add", "carl", "--password-stdin", env=as_user(server, "ana"),
                          input="pw-" + secrets.token_hex(8)), "'ana'", "is not an admin")


def test_the_admin_lists_the_users_it_added(server: dict[str, str]) -> None:
    done = bedrot("server", "user", "list", "--json", env=as_user(server, "admin"))
    assert done.returncode == 0, done
    users = {user["username"]: user for user in json.loads(done.stdout)}
    assert set(users) == {"admin", "ana", "ben"}  # no carl: the refused adds left nothing
    assert users["admin"]["admin"] and not users["ana"]["admin"] and not users["ben"]["admin"]
    assert server["ANA"] not in done.stdout


# -- what an analyst may do with default_permission READ ----------------------------------------


def test_an_analyst_reads_everyones_runs_and_writes_only_her_own(server: dict[str, str], admin_client) -> None:
    ana, ben = as_user(server, "ana"), as_user(server, "ben")
    done = bedrot("run", "ana-study", env=ana)
    assert done.returncode == 0, done
    listed = bedrot("runs", "list", "--experiment", "ana-study", "--json", env=ben)
    assert listed.returncode == 0, listed
    assert [run["status"] for run in json.loads(listed.stdout)] == ["FINISHED"]

    one_line_error(bedrot("run", "ana-study", env=ben), "refused 'ben' permission")
    assert statuses(admin_client, "ana-study") == ["FINISHED"]

    done = bedrot("run", "ben-study", env=ben)
    assert done.returncode == 0, done
    assert statuses(admin_client, "ben-study") == ["FINISHED"]


def test_the_reaper_ends_anothers_run_once_its_account_may_edit_it(server: dict[str, str], admin_client) -> None:
    ana, ben = as_user(server, "ana"), as_user(server, "ben")
    process = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "run", "sleepy"], env=ana,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not statuses(admin_client, "sleepy") and time.monotonic() < deadline:
            assert process.poll() is None, "the sleepy run ended by itself"
            time.sleep(1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # as a crash would: the run stays RUNNING
        process.wait()
    assert statuses(admin_client, "sleepy") == ["RUNNING"]

    refused = bedrot("daemon", "run-job", "reap", env=ben)
    assert refused.returncode == 1, refused
    assert "1 gone but not ended" in refused.stdout
    assert "refused 'ben' permission to end them; give the reaper's account EDIT" in refused.stdout
    assert statuses(admin_client, "sleepy") == ["RUNNING"]

    granted = bedrot("server", "user", "set-permission", "ben", "sleepy", "EDIT", env=as_user(server, "admin"))
    assert granted.returncode == 0, granted
    assert "'ben' has EDIT on experiment 'sleepy'" in granted.stdout
    reaped = bedrot("daemon", "run-job", "reap", env=ben)
    assert reaped.returncode == 0, reaped
    assert "1 reaped" in reaped.stdout
    assert statuses(admin_client, "sleepy") == ["KILLED"]


# -- credentials --------------------------------------------------------------------------------


def test_credentials_come_from_an_owner_only_netrc_file(server: dict[str, str], lake: Path,
                                                       tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"machine 127.0.0.1\n  login ben\n  password {server['BEN']}\n")
    credentials.chmod(0o644)
    env = {key: value for key, value in as_user(server, "admin").items()
           if key not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    env["NETRC"] = str(credentials)  # the file requests would read too, unchecked

    one_line_error(bedrot("runs", "list", env=env), str(credentials), "others may read it",
                   f"chmod 600 {credentials}")
    credentials.chmod(0o600)
    assert bedrot("runs", "list", env=env).returncode == 0
    # ben, as the file says: he may not write to ana's experiment
    one_line_error(bedrot("run", "ana-study", env=env), "refused 'ben' permission")

    # the environment's login wins over a netrc entry for the same host (requests would swap them)
    done = bedrot("run", "ana-study", env={**env, **{key: value for key, value in as_user(server, "ana").items()
                                                      if key.startswith("MLFLOW_TRACKING_")}})
    assert done.returncode == 0, done


def test_a_password_is_never_recorded(server: dict[str, str], admin_client, tmp_path: Path) -> None:
    ana = as_user(server, "ana")
    password = ana["MLFLOW_TRACKING_PASSWORD"]
    done = bedrot("run", "leaky", "-P", f"note=mine is {password}", env=ana)
    assert done.returncode == 1, done
    assert password not in done.stdout + done.stderr

    experiment = admin_client.get_experiment_by_name("leaky")
    [run] = admin_client.search_runs([experiment.experiment_id])
    folder = Path(admin_client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    assert run.info.status == "FAILED"
    recorded = [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]
    assert run.data.params["note"] == "mine is ****"
    assert run.data.tags["said"] == "logged in with ****"
    artifacts = [path for path in folder.rglob("*") if path.is_file()]
    assert {"notes.txt", "error/traceback.txt"} <= {path.relative_to(folder).as_posix() for path in artifacts}
    assert not [text for text in recorded if password in text]
    assert not [path for path in artifacts if password.encode() in path.read_bytes()]


# -- without a server -----------------------------------------------------------------------------


def test_the_credentials_file_is_read_for_the_servers_host_only(tmp_path: Path) -> None:
    from bedrot_lab.config import settings_from
    from bedrot_lab.credentials import CredentialsError, resolve

    password = "pw-" + secrets.token_hex(8)
    settings = settings_from(tmp_path, {"tracking": {"uri": "http://lab.example:5000", "credentials": "login"}},
                             None, env={})
    with pytest.raises(CredentialsError, match=f"{tmp_path / 'login'}: cannot read the credentials file"):
        resolve(settings, env={})
    credentials = tmp_path / "login"
    credentials.write_text(f"machine other.example login ana password {password}\n")
    credentials.chmod(0o644)
    assert resolve(settings, env={}) is None  # nothing for this server: its mode is not ours to judge
    credentials.write_text(f"machine other.example login ana password {password}\ndefault login ben password {password}\n")
    with pytest.raises(CredentialsError, match="chmod 600"):
        resolve(settings, env={})
    credentials.chmod(0o600)
    found = resolve(settings, env={})
    assert (found.username, found.password) == ("ben", password)
    assert password not in repr(found)
    local = settings_from(tmp_path, {"tracking": {"credentials": "login"}}, None, env={})
    assert resolve(local, env={}) is None  # the embedded store has no accounts


def test_log_lines_mask_the_tracking_password(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from bedrot_lab.masked_logging import MaskingFormatter

    password = "pw-" + secrets.token_hex(8)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "login with %s failed", (password,), None)
    assert MaskingFormatter("%(message)s").format(record) == "login with **** failed"
