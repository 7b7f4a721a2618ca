"""``bedrot-lab server``: MLflow's tracking server for a lake, on a real PostgreSQL, with accounts.

One server (workers 1, accounts on) serves the whole module; the refusals that need no server
are checked on lakes of their own."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

import pytest
from servers import free_port, running_server, server_cli

from bedrot_lab.config import DEFAULT_CONFIG
from bedrot_lab.server.process import group_alive
from bedrot_lab.server.settings import ServerSettings
from bedrot_lab.testing import ISOLATED_VARIABLES, make_lake

pytestmark = pytest.mark.server

PLUGIN = """
from bedrot_lab import experiment, hookimpl

@experiment("served")
def served(ctx):
    ctx.log_metric("answer", 42)
    ctx.log_text("logged through the server", "note.txt")

@hookimpl
def register_experiments(register):
    register(served)
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ISOLATED_VARIABLES}
    return {**env, "BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD": "1", "BEDROT_USER": "tester",
            "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


def lake_with(root: Path, server_table: str, tracking_uri: str | None = None) -> Path:
    config = DEFAULT_CONFIG.format(name="served")
    if tracking_uri:
        config = config.replace("[tracking]\n", f'[tracking]\nuri = "{tracking_uri}"\n')
    return make_lake(root, config=config + "\n[server]\n" + server_table)


@pytest.fixture(scope="module")
def database(postgres: str):
    """A fresh database for the module's server, its URI with a (fake, ignored by the trust
    authentication of the test cluster) password that must never show; both databases dropped."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    password = "dbpw-" + secrets.token_hex(8)
    user_at_host = postgres.split("://", 1)[1].rsplit("/", 1)[0]
    user, host = user_at_host.split("@", 1)
    yield f"postgresql://{user}:{password}@{host}/{name}", name, password
    with psycopg.connect(postgres.replace("+psycopg", ""), autocommit=True) as connection:
        for database_name in (name, f"{name}_auth"):
            connection.execute(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def served(tmp_path_factory, database):
    """A lake whose [tracking] uri is its own server, started with accounts on and its secrets
    in an owner-only file; yields the lake, the server's URL, a client env (admin) and the secrets."""
    uri, name, db_password = database
    port = free_port()
    root = tmp_path_factory.mktemp("served") / "lake"
    artifacts = tmp_path_factory.mktemp("artifact-store")
    admin_password, secret_key = "pw-" + secrets.token_hex(8), "key-" + secrets.token_hex(16)
    secrets_file = root.parent / "server.secrets"
    secrets_file.write_text(f"# the server's secrets\nMLFLOW_AUTH_ADMIN_PASSWORD={admin_password}\n"
                            f"MLFLOW_FLASK_SERVER_SECRET_KEY='{secret_key}'\n")
    secrets_file.chmod(0o600)
    lake = lake_with(root, f"""
auth = true
secrets_file = "{secrets_file}"
artifacts_destination = "{artifacts}"
allowed_hosts = ["127.0.0.1:{port}", "lab.example.com"]
""", tracking_uri=f"http://127.0.0.1:{port}")
    (lake / "plugins" / "served_probe.py").write_text(PLUGIN)
    with running_server(lake, uri, port=port, env=clean_env()) as (url, env):
        del env["BEDROT_LAKE"], env["MLFLOW_TRACKING_URI"]  # the lake's [tracking] uri is the server
        env.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=admin_password)
        yield {"lake": lake, "url": url, "env": env, "artifacts": artifacts, "database": name,
               "hidden": (admin_password, secret_key, db_password)}


def request(url: str, host: str | None = None, auth: tuple[str, str] | None = None) -> int:
    headers = {"Host": host} if host else {}
    if auth:
        headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_run_is_logged_through_the_server_into_postgresql_with_proxied_artifacts(served):
    from mlflow import MlflowClient

    lake, env = served["lake"], served["env"]
    done = subprocess.run([sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "run", "served", "--json"], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=env["MLFLOW_TRACKING_PASSWORD"])
    try:
        run = MlflowClient(served["url"]).get_run(run_id)
    finally:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name)
    assert run.info.status == "FINISHED" and run.data.metrics["answer"] == 42
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert str(served["artifacts"]) not in run.info.artifact_uri
    [note] = served["artifacts"].rglob("note.txt")
    assert run_id in note.parts and note.read_text() == "logged through the server"
    assert not (lake / "mlruns" / "mlflow.db").exists()  # nothing went to the embedded store
    import psycopg

    base = os.environ["BEDROT_TEST_POSTGRES"].replace("+psycopg", "").rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/{served['database']}") as connection:
        assert connection.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone() == ("FINISHED",)


def test_status_shows_the_running_server_with_the_database_password_masked(served):
    done = server_cli(served["lake"], "status", "--json", env=served["env"])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["running"] and report["health"] == "ok" and report["url"] == served["url"]
    assert report["auth"] is True and report["workers"] == 1 and report["uptime_seconds"] >= 0
    assert "****@" in report["backend_store_uri"] and report["backend_store_uri"].startswith("postgresql+psycopg://")
    text = server_cli(served["lake"], "status", env=served["env"]).stdout
    assert f"running: pid {report['pid']} at {served['url']}" in text


def test_no_secret_reaches_the_command_lines_logs_or_state_files(served):
    lake = served["lake"]
    folder = lake / ".bedrot-lab" / "server"
    state = json.loads((folder / "server.json").read_text())
    command_lines = b"".join(Path(f"/proc/{pid}/cmdline").read_bytes()
                             for pid in subprocess.run(["pgrep", "-g", str(state["pid"])], capture_output=True,
                                                       text=True).stdout.split())
    assert b"mlflow" in command_lines
    texts = {"argv": command_lines.decode(errors="replace"), "log": (folder / "server.log").read_text(),
             "state": (folder / "server.json").read_text(),
             "status": server_cli(lake, "status", env=served["env"]).stdout}
    for secret in served["hidden"]:
        for where, text in texts.items():
            assert secret not in text, f"a secret in the {where}"
    auth_ini = folder / "auth.ini"
    assert stat.S_IMODE(auth_ini.stat().st_mode) == 0o600
    assert served["hidden"][0] not in auth_ini.read_text()  # the admin password travels by environment only


def test_accounts_are_on_and_their_database_was_made_beside_the_backend(served):
    url, password = served["url"], served["env"]["MLFLOW_TRACKING_PASSWORD"]
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=5"
    assert request(search) == 401
    assert request(search, auth=("admin", "wrong-" + secrets.token_hex(6))) == 401
    assert request(search, auth=("admin", password)) == 200
    import psycopg

    with psycopg.connect(os.environ["BEDROT_TEST_POSTGRES"].replace("+psycopg", "")) as connection:
        names = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
    assert f"{served['database']}_auth" in names


def test_host_headers_outside_allowed_hosts_are_refused(served):
    search = f"{served['url']}/api/2.0/mlflow/experiments/search?max_results=5"
    admin = ("admin", served["env"]["MLFLOW_TRACKING_PASSWORD"])
    assert request(search, host="evil.example.com", auth=admin) == 403
    assert request(search, host="lab.example.com", auth=admin) == 200
    assert request(search, host="10.1.2.3", auth=admin) == 403  # allowed_hosts replaces MLflow's private ranges


def test_a_second_server_for_the_same_lake_is_refused_naming_the_first(served):
    status = json.loads(server_cli(served["lake"], "status", "--json", env=served["env"]).stdout)
    done = server_cli(served["lake"], "start", "--port", str(free_port()), env=served["env"])
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: a server already runs for this lake: pid {status['pid']} at "
                                   f"{served['url']}; stop it with: bedrot-lab server stop")


def test_a_port_in_use_is_one_line(served, tmp_path):
    other = lake_with(tmp_path / "other", "")
    port = served["url"].rsplit(":", 1)[1]
    done = server_cli(other, "start", "--port", port, env=clean_env())
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: port {port} on 127.0.0.1 is in use by another program; "
                                   "choose another with --port or [server] port")


def test_stop_ends_every_process_of_the_server(served):
    lake, env = served["lake"], served["env"]
    pid = json.loads((lake / ".bedrot-lab" / "server" / "server.json").read_text())["pid"]
    assert group_alive(pid)
    done = server_cli(lake, "stop", env=env)
    assert done.returncode == 0 and done.stdout.startswith(f"server stopped (pid {pid})"), done.stderr
    assert not group_alive(pid)
    assert server_cli(lake, "status", env=env).stdout.startswith("not running")
    assert server_cli(lake, "stop", env=env).stdout.strip() == "no server runs for this lake"


# -- refusals before anything starts ---------------------------------------------------------

@pytest.mark.parametrize("missing", ["MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"])
def test_accounts_without_their_secrets_are_refused_naming_the_missing_one(tmp_path, missing):
    lake = lake_with(tmp_path / "lake", "auth = true\n")
    given = {"MLFLOW_AUTH_ADMIN_PASSWORD": "pw-" + secrets.token_hex(8),
             "MLFLOW_FLASK_SERVER_SECRET_KEY": "key-" + secrets.token_hex(8)}
    del given[missing]
    done = server_cli(lake, "start", "--port", str(free_port()), env=clean_env(**given))
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: accounts are on ([server] auth) but {missing} (")
    assert "Traceback" not in done.stderr and not (lake / ".bedrot-lab" / "server" / "server.json").exists()


def test_a_secrets_file_that_others_can_read_is_refused(tmp_path):
    secrets_file = tmp_path / "server.secrets"
    secrets_file.write_text(f"MLFLOW_AUTH_ADMIN_PASSWORD=pw-{secrets.token_hex(8)}\n"
                            f"MLFLOW_FLASK_SERVER_SECRET_KEY=key-{secrets.token_hex(8)}\n")
    secrets_file.chmod(0o640)
    lake = lake_with(tmp_path / "lake", f'auth = true\nsecrets_file = "{secrets_file}"\n')
    done = server_cli(lake, "start", "--port", str(free_port()), env=clean_env())
    assert done.returncode == 1
    assert done.stderr.strip() == (f"Error: the secrets file {secrets_file} can be read by others "
                                   f"(mode -rw-r-----); run: chmod 600 {secrets_file}")


@pytest.mark.parametrize(("table", "message"), [
    ('port = "5000"', "server.port: expected a number, got '5000'"),
    ("workers = 0", "server.workers: expected a positive number, got 0"),
    ("max_overflow = 0", "server.max_overflow: expected 1 or more (MLflow ignores 0"),
    ('default_permission = "WRITE"', "server.default_permission: expected one of READ, USE, EDIT, MANAGE"),
    ('backend_store_uri = "http://127.0.0.1:5000"', "server.backend_store_uri: expected a database URI"),
    ("allowed_host = []", "server.allowed_host: unknown key; [server] takes host, port"),
])
def test_a_mistake_in_the_server_table_names_its_key(tmp_path, table, message):
    lake = lake_with(tmp_path / "lake", table + "\n")
    done = server_cli(lake, "status", env=clean_env())
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: {lake / 'bedrot-lab.toml'}: {message}"), done.stderr


def test_settings_default_to_the_lakes_store_and_name_the_psycopg_driver(tmp_path):
    from bedrot_lab.config import load_settings

    lake = lake_with(tmp_path / "lake", "")
    settings = ServerSettings.from_settings(load_settings(lake, env={}))
    assert settings.backend_store_uri == f"sqlite:///{lake / 'mlruns' / 'mlflow.db'}"
    assert settings.artifacts_destination == str(lake / "mlruns" / "artifacts")
    assert (settings.host, settings.port, settings.url) == ("127.0.0.1", 5000, "http://127.0.0.1:5000")
    flagged = settings.overridden(backend_store_uri="postgresql://ana@db.example.com/mlflow", port=None)
    assert flagged.backend_store_uri == "postgresql+psycopg://ana@db.example.com/mlflow" and flagged.port == 5000


def test_a_database_server_that_cannot_be_reached_is_one_line_without_its_password(tmp_path):
    lake = lake_with(tmp_path / "lake", "")
    port, password = free_port(), "dbpw-" + secrets.token_hex(8)
    done = server_cli(lake, "start", "--port", str(free_port()),
                      "--backend-store-uri", f"postgresql://ana:{password}@127.0.0.1:{port}/mlflow", env=clean_env())
    assert done.returncode == 1
    assert done.stderr.startswith(f"Error: cannot connect to the backend store database at 127.0.0.1:{port}: ")
    assert len(done.stderr.strip().splitlines()) == 1 and password not in done.stderr + done.stdout


def test_foreground_becomes_the_server_with_the_lakes_own_store_and_stops_by_pid(tmp_path):
    """What systemd runs: the command's own pid turns into MLflow's server (no process group of
    its own here, so stop signals that pid alone), on the embedded store by default."""
    import time

    from bedrot_lab.server.process import health

    lake = lake_with(tmp_path / "lake", "workers = 1\n")
    port = free_port()
    command = [sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "server", "start", "--foreground",
               "--port", str(port)]
    process = subprocess.Popen(command, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while health(f"http://127.0.0.1:{port}") != "ok" and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        report = json.loads(server_cli(lake, "status", "--json", env=clean_env()).stdout)
        assert report["running"] and report["pid"] == process.pid and report["health"] == "ok", report
        assert report["backend_store_uri"] == f"sqlite:///{lake / 'mlruns' / 'mlflow.db'}"
        done = server_cli(lake, "stop", env=clean_env())
        assert done.returncode == 0 and done.stdout.startswith(f"server stopped (pid {process.pid})"), done.stderr
        assert process.wait(timeout=60) is not None
    finally:
        if process.poll() is None:  # MLflow passes SIGTERM on to uvicorn and its workers
            server_cli(lake, "stop", "--timeout", "10", env=clean_env())
            process.kill()
            process.wait()


def test_mlflows_empty_default_experiment_is_deleted_at_start_as_in_the_embedded_store(served):
    # started with accounts on: deleting it takes the admin's login, read from the secrets file
    import psycopg

    base = os.environ["BEDROT_TEST_POSTGRES"].replace("+psycopg", "").rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/{served['database']}") as connection:
        found = connection.execute("SELECT name, lifecycle_stage FROM experiments WHERE experiment_id = 0").fetchone()
    assert found == ("Default", "deleted")
