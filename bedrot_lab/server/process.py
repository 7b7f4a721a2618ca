"""Starting, finding and stopping a lake's MLflow tracking server: its databases, its secrets,
its command line and environment, its state file, its health."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BedrotLabError
from ..secrets import scrub
from .settings import ServerSettings

STATE_FOLDER = "server"
STATE_NAME = "server.json"
LOG_NAME = "server.log"
AUTH_INI = "auth.ini"
#: the secrets the basic-auth app needs -> what each is, for the message when one is missing
SECRETS = {
    "MLFLOW_AUTH_ADMIN_PASSWORD": "the admin account's password, 12 characters or more",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "the key that signs the web forms, a long random string",
}
#: MLflow's own minimum for a password (mlflow.server.auth), checked first for a clearer message
MIN_PASSWORD_LENGTH = 12


class ServerError(BedrotLabError):
    """The server could not be started, found or stopped; the message says why and what to do."""


def state_folder(state_dir: Path) -> Path:
    return state_dir / STATE_FOLDER


@dataclass(frozen=True)
class RunningServer:
    """A server recorded in the lake's state folder whose process is alive."""

    pid: int
    url: str
    started: float
    record: Mapping[str, Any]

    @property
    def uptime(self) -> float:
        return max(0.0, time.time() - self.started)

    def describe(self) -> str:
        return f"pid {self.pid} at {self.url}"


def recorded_server(state_dir: Path) -> tuple[RunningServer | None, dict[str, Any] | None]:
    """The lake's running server, and the state file's record (``None`` when there is none).
    A record whose process is gone, or is no longer an MLflow server, is stale: no server."""
    path = state_folder(state_dir) / STATE_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    pid = record.get("pid")
    if isinstance(pid, int) and _is_mlflow_server(pid):
        return RunningServer(pid, record.get("url", ""), float(record.get("started", 0)), record), record
    return None, record


def forget(state_dir: Path) -> None:
    """Remove the state file (a stale one, or after a stop)."""
    (state_folder(state_dir) / STATE_NAME).unlink(missing_ok=True)


def _is_mlflow_server(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # no /proc: trust the pid
    try:
        words = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mlflow" in words and b"server" in words  # a reused pid belongs to another program


# -- before starting -------------------------------------------------------------------------

def check_port_free(host: str, port: int) -> None:
    """Refuse a port that another program listens on, in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "is in use by another program" if exc.errno == 98 else f"cannot be used ({exc.strerror})"
            raise ServerError(f"port {port} on {host} {reason}; choose another with --port or [server] port") \
                from None


def read_secrets(settings: ServerSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The admin password and Flask secret key: the environment's, else the secrets file's.
    A missing one is named; so is a secrets file that others can read."""
    from_file = read_secrets_file(settings.secrets_file) if settings.secrets_file else {}
    found = {}
    for name, what in SECRETS.items():
        value = env.get(name) or from_file.get(name)
        if not value:
            where = (f"or in {settings.secrets_file} ([server] secrets_file)" if settings.secrets_file
                     else "or in a file named by [server] secrets_file")
            raise ServerError(f"accounts are on ([server] auth) but {name} ({what}) is not set: "
                              f"set it in the environment {where}")
        found[name] = value
    if len(found["MLFLOW_AUTH_ADMIN_PASSWORD"]) < MIN_PASSWORD_LENGTH:
        raise ServerError(f"MLFLOW_AUTH_ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters, "
                          "MLflow's minimum; choose a longer one")
    return found


def read_secrets_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, blank lines) of a file only its owner may read."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ServerError(f"the secrets file {path} ([server] secrets_file) does not exist") from None
    if info.st_mode & 0o077:
        raise ServerError(f"the secrets file {path} can be read by others (mode {stat.filemode(info.st_mode)}); "
                          f"run: chmod 600 {path}")
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not sep or name not in SECRETS:
            raise ServerError(f"{path}, line {number}: expected NAME=VALUE with NAME one of {', '.join(SECRETS)}")
        values[name] = value.strip().strip("'\"")
    return values


def auth_database_uri(settings: ServerSettings) -> str:
    """``[server] auth_database_uri``, else one beside the backend: database ``<name>_auth`` on
    the same database server, or ``basic_auth.db`` in the SQLite backend's folder."""
    if settings.auth_database_uri:
        return settings.auth_database_uri
    from sqlalchemy.engine import make_url

    backend = make_url(settings.backend_store_uri)
    if backend.get_backend_name() == "sqlite":
        folder = Path(backend.database or "").parent
        return f"sqlite:///{folder / 'basic_auth.db'}"
    return backend.set(database=f"{backend.database}_auth").render_as_string(hide_password=False)


def ensure_database(uri: str, what: str) -> bool:
    """Make sure database ``uri`` exists: a SQLite file's folder, a PostgreSQL database (created
    when missing, else the exact command to run). True when it was created."""
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        return False
    if url.get_backend_name() != "postgresql":
        return False  # another database: MLflow reports what it cannot reach
    import psycopg
    from psycopg import sql

    def connect(database: str) -> psycopg.Connection:
        conninfo = url.set(drivername="postgresql", database=database).render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=10)

    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    name = url.database or ""
    try:
        connect(name).close()
        return False
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise ServerError(f"cannot connect to the {what} at {where}: {_first_line(exc)}") from None
    try:
        with connect("postgres") as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.DuplicateDatabase:
        return False  # created meanwhile by someone else
    except psycopg.Error as exc:
        raise ServerError(
            f"the {what} {name!r} does not exist at {where} and could not be created ({_first_line(exc)}); "
            f"ask its administrator to run: createdb -h {url.host or 'localhost'} -p {url.port or 5432} "
            f"-U {url.username or 'USER'} {name}") from None
    return True


def _first_line(exc: BaseException) -> str:
    return scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[0]


def write_auth_ini(folder: Path, settings: ServerSettings, database_uri: str) -> Path:
    """MLflow's basic-auth configuration (``MLFLOW_AUTH_CONFIG_PATH``), owner-only: it may hold
    the database's password. The admin password stays out of it (the environment has it)."""
    path = folder / AUTH_INI
    text = ("[mlflow]\n"
            f"default_permission = {settings.default_permission}\n"
            f"database_uri = {database_uri.replace('%', '%%')}\n"
            f"admin_username = {settings.admin_username}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {settings.auth_cache_seconds}\n")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
    return path


# -- the command line and environment -------------------------------------------------------

def server_command(settings: ServerSettings) -> list[str]:
    """``python -m mlflow server ...``: no credential in it (``ps`` shows it); the stores'
    URIs travel in the environment (:func:`server_environment`)."""
    command = [sys.executable, "-m", "mlflow", "server",
               "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
               "--serve-artifacts", "--artifacts-destination", settings.artifacts_destination,
               # TCP_NODELAY on the workers' shared socket: 40 ms less per REST call (see the module)
               "--uvicorn-opts", "--loop bedrot_lab.server.nodelay:NoDelayLoop"]
    if settings.allowed_hosts:
        command += ["--allowed-hosts", ",".join(settings.allowed_hosts)]
    if settings.cors_allowed_origins:
        command += ["--cors-allowed-origins", ",".join(settings.cors_allowed_origins)]
    if settings.x_frame_options:
        command += ["--x-frame-options", settings.x_frame_options]
    if settings.auth:
        command += ["--app-name", "basic-auth"]
    return command


def server_environment(settings: ServerSettings, base: Mapping[str, str], secrets: Mapping[str, str],
                       auth_ini: Path | None) -> dict[str, str]:
    """The server's environment: ours, minus anything that would point it at a server, plus
    its stores, pools, options and (with auth) secrets."""
    env = {name: value for name, value in base.items()
           if name not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_USERNAME",
                           "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", *SECRETS)}
    env.update({
        "MLFLOW_BACKEND_STORE_URI": settings.backend_store_uri,
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(settings.pool_size),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(settings.max_overflow),
        "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": str(settings.pool_recycle),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if settings.job_execution else "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    })
    if auth_ini is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_ini)
        env.update(secrets)
    return env


# -- health and stopping ---------------------------------------------------------------------

def health(url: str, timeout: float = 2.0) -> str:
    """``"ok"`` when ``GET url/health`` answers 200, else what went wrong."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return "ok" if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"unreachable ({getattr(exc, 'reason', exc)})"


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float,
                 progress: Callable[[float], None] | None = None) -> bool:
    """Poll ``url/health`` until it answers 200 (True), the process dies or ``timeout`` passes
    (False). ``progress(seconds)`` is called every five seconds of waiting."""
    started = time.monotonic()
    next_note = 5.0
    while (waited := time.monotonic() - started) < timeout:
        if health(url, timeout=1.0) == "ok":
            return True
        if not alive():
            return False
        if progress and waited >= next_note:
            progress(waited)
            next_note += 5.0
        time.sleep(0.2)
    return False


def delete_empty_default(url: str, admin: tuple[str, str] | None = None) -> bool:
    """Delete MLflow's ``Default`` experiment (id 0) on the server while it holds no run, as the
    lab does in its embedded store: the lab never records there, and the UI would list it first,
    empty. ``admin``: the login to do it with when accounts are on. True when it was deleted."""
    import base64

    headers = {"Content-Type": "application/json"}
    if admin:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(admin).encode()).decode()

    def call(endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None  # None: a GET
        request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data, headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    try:
        default = call("experiments/get?experiment_id=0").get("experiment", {})
        if default.get("lifecycle_stage") != "active":
            return False
        if call("runs/search", {"experiment_ids": ["0"], "max_results": 1, "run_view_type": "ALL"}).get("runs"):
            return False
        call("experiments/delete", {"experiment_id": "0"})
        return True
    except (OSError, ValueError):  # refused or gone: the UI shows an empty Default, nothing worse
        return False


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` lives (a zombie, which nobody may reap where
    the init process does not, does not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp
            return True
    return False


def stop_server(pid: int, timeout: float) -> bool:
    """SIGTERM to the server's process group (to ``pid`` alone when it leads none: a
    ``--foreground`` server started from a script), SIGKILL if it has not ended within
    ``timeout``; True when SIGTERM sufficed."""
    try:
        leader = os.getpgid(pid) == pid
    except ProcessLookupError:
        return True
    if leader:
        return _signal_and_wait(lambda sig: os.killpg(pid, sig), lambda: group_alive(pid), timeout)
    return _signal_and_wait(lambda sig: os.kill(pid, sig), lambda: _is_mlflow_server(pid), timeout)


def _signal_and_wait(send: Callable[[int], None], alive: Callable[[], bool], timeout: float) -> bool:
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return True
        time.sleep(0.1)
    try:
        send(signal.SIGKILL)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return False


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of the log, credentials masked."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return scrub("\n".join(text.strip().splitlines()[-lines:]))[0]
