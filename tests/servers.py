"""A real MLflow tracking server for tests, started and stopped through ``bedrot-lab server``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

#: seconds a test waits for ``server start`` (MLflow's server takes seconds to import on a busy machine)
START_TIMEOUT = 240


def free_port() -> int:
    """A TCP port on loopback that nothing listens on just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_cli(lake: Path, *args: str, env: Mapping[str, str] | None = None,
               timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``bedrot-lab --lake LAKE server ARGS`` in a subprocess (not checked: look at the result)."""
    return subprocess.run([sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "server", *args],
                          capture_output=True, text=True, env=dict(env if env is not None else os.environ),
                          timeout=timeout, check=False)


@contextlib.contextmanager
def running_server(lake: Path, backend_uri: str, *, auth: bool = False, workers: int = 1,
                   env: Mapping[str, str] | None = None, port: int | None = None,
                   args: tuple[str, ...] = ()) -> Iterator[tuple[str, dict[str, str]]]:
    """Run ``bedrot-lab server start`` for ``lake`` (a folder with a ``bedrot-lab.toml``) on a
    free loopback port, yield ``(url, client_env)``, and always stop it afterwards.

    Args:
        lake: the lake; its ``bedrot-lab.toml`` is not changed (``[server]`` in it applies,
            the flags below win), its state folder keeps the server's log and state file.
        backend_uri: the backend store, e.g. the ``postgres_database`` fixture's URI.
        auth: accounts on (``--auth``): a fake admin password and Flask secret key are made
            and passed to the server by environment only.
        workers: ``--workers``.
        env: the environment for the server command (default ``os.environ``).
        port: the port (default: a free one).
        args: more ``server start`` flags, e.g. ``("--artifacts-destination", "/x")``.

    ``client_env`` is ``env`` plus ``MLFLOW_TRACKING_URI=url`` and ``BEDROT_LAKE=lake``, and with
    ``auth`` the admin's ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``: give it to
    subprocesses that act as clients. A start that fails fails the test with the command's
    output; the stop is ``server stop``, then SIGKILL to the server's process group if needed.
    """
    base = dict(env if env is not None else os.environ)
    base.pop("MLFLOW_TRACKING_URI", None)
    port = port or free_port()
    server_env = dict(base)
    flags = ["--port", str(port), "--workers", str(workers), "--backend-store-uri", backend_uri, *args]
    admin = {}
    if auth:
        admin = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": "pw-" + secrets.token_hex(8)}
        server_env["MLFLOW_AUTH_ADMIN_PASSWORD"] = admin["MLFLOW_TRACKING_PASSWORD"]
        server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = "key-" + secrets.token_hex(16)
        flags.append("--auth")
    try:
        started = server_cli(lake, "start", *flags, env=server_env)
        assert started.returncode == 0, f"server start failed:\n{started.stdout}\n{started.stderr}"
        url = f"http://127.0.0.1:{port}"
        yield url, {**base, "MLFLOW_TRACKING_URI": url, "BEDROT_LAKE": str(lake), **admin}
    finally:
        stop_server(lake, env=base, port=port)


def stop_server(lake: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
    """``bedrot-lab server stop`` for ``lake``; if the server's processes outlive it, SIGKILL them.
    With ``port``, only a server recorded on that port is stopped (not one that another test
    started for the same lake, which made this one's start fail)."""
    state = Path(lake) / ".bedrot-lab" / "server" / "server.json"
    try:
        record = json.loads(state.read_text())
        pid = record["pid"]
    except (OSError, ValueError, KeyError):
        return
    if port is not None and record.get("port") != port:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server_cli(lake, "stop", "--timeout", "10", env=env, timeout=60)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
