"""Shared test helpers. The lake fixtures (bedrot_lake, bedrot_lab, bedrot_env)
come from bedrot_lab.testing, the pytest plugin shipped for plugin authors."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bedrot_lab.builtin.datasets import DK_BANK_COLUMNS

REPO = Path(__file__).resolve().parents[1]
REPO_PLUGINS = REPO / "plugins"

#: the header line of a DistroKid statement (dk_bank_details.csv), from the catalog
STATEMENT_HEADER = ",".join(DK_BANK_COLUMNS) + "\n"


@pytest.fixture(autouse=True)
def no_installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from a plugin-free baseline: installed packages' plugins (BEDROT's own
    analyses among them, once bedrot-lab is installed) are not loaded, in subprocesses neither."""
    monkeypatch.setenv("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def installed_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load installed packages' plugins (entry points) again, for the tests of that."""
    monkeypatch.delenv("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD")


@pytest.fixture
def quiet_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests that run the CLI in their own process: it sets MLflow's log level variable for the
    process, which must not leak into other tests."""
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "ERROR")


@pytest.fixture
def write_plugin(bedrot_lake: Path):
    """Write a plugin file (dedented source) into the lake's plugins/ folder."""

    def write(name: str, source: str) -> Path:
        path = bedrot_lake / "plugins" / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def cli_env(bedrot_lake: Path) -> dict[str, str]:
    """Environment for running ``bedrot-lab`` in a subprocess against ``bedrot_lake``."""
    return {**os.environ, "BEDROT_LAKE": str(bedrot_lake), "BEDROT_USER": "tester"}


def bedrot(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``bedrot-lab`` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "bedrot_lab", *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False,
    )


#: A Python process that has imported MLflow, pandas and pyarrow once (most of a command's start-up),
#: then runs each command it is sent (one JSON line) as ``python -m bedrot_lab ARGS`` in a forked child
#: of its own, with the command's environment, folder and output files; it answers each with the
#: child's pid, then its exit code. bedrot-lab itself is imported afresh by every child.
FORK_LAUNCHER = r"""
import json, os, runpy, sys, traceback
import mlflow, pandas, pyarrow.parquet

def child(job):
    code = 1
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path in ((0, os.devnull), (1, job["stdout"]), (2, job["stderr"])):
            handle = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(handle, fd)
            os.close(handle)
        sys.argv = [sys.executable, *job["args"]]
        sys.path[0] = job["cwd"]  # as `python -m` has it
        try:
            runpy.run_module("bedrot_lab", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # as the interpreter turns SystemExit into an exit code
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(job)
    print(json.dumps({"pid": pid}), flush=True)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}), flush=True)
"""


class _ForkLauncher:
    """The running :data:`FORK_LAUNCHER` of this test process (one, started on first use)."""

    process: subprocess.Popen[bytes] | None = None
    environment: dict[str, str] = {}
    pending = b""  # what was read of its answers beyond the last whole line

    @classmethod
    def get(cls) -> subprocess.Popen[bytes]:
        if cls.process is None or cls.process.poll() is not None:
            cls.environment = {key: value for key, value in os.environ.items()
                               if not key.startswith(("BEDROT_", "MLFLOW_"))}
            cls.process = subprocess.Popen(
                [sys.executable, "-c", FORK_LAUNCHER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                env={**cls.environment, "MLFLOW_DISABLE_TELEMETRY": "true"}, cwd=REPO)
            cls.pending = b""
            atexit.register(cls.process.stdin.close)  # its loop ends, and it exits, when its input does
        return cls.process

    @classmethod
    def answer(cls, timeout: float) -> dict | None:
        """The launcher's next answer, or None when none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in cls.pending:
            fd = cls.process.stdout.fileno()
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the bedrot-lab fork launcher exited")
            cls.pending += chunk
        line, cls.pending = cls.pending.split(b"\n", 1)
        return json.loads(line)


def bedrot_forked(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``bedrot-lab`` as :func:`bedrot` does, in a real, separate process that skips the ~2 s of
    importing MLflow and pandas: a child forked from :data:`FORK_LAUNCHER`. For tests about what a command
    does and prints, not about how its process starts (imports, start-up time, detaching); a command
    whose ``PYTHON*`` variables differ from this process's runs as :func:`bedrot` runs it, and so does
    every command when ``BEDROT_TESTS_COLD`` is set (to see whether a failure depends on the forking)."""
    env = dict(os.environ if env is None else env)
    if os.environ.get("BEDROT_TESTS_COLD"):
        return bedrot(*args, env=env, cwd=cwd, timeout=timeout)
    launcher = _ForkLauncher.get()
    if {k: v for k, v in env.items() if k.startswith("PYTHON")} != {
            k: v for k, v in _ForkLauncher.environment.items() if k.startswith("PYTHON")}:
        return bedrot(*args, env=env, cwd=cwd, timeout=timeout)
    command = [sys.executable, "-m", "bedrot_lab", *args]
    with tempfile.TemporaryDirectory(prefix="bedrot-forked-") as folder:
        stdout, stderr = Path(folder, "stdout"), Path(folder, "stderr")
        job = {"args": list(args), "env": env, "cwd": str(Path(cwd or os.getcwd()).resolve()),
               "stdout": str(stdout), "stderr": str(stderr)}
        launcher.stdin.write((json.dumps(job) + "\n").encode())
        pid = _ForkLauncher.answer(600)["pid"]  # the first waits for its imports
        ended = _ForkLauncher.answer(timeout)
        if ended is None:
            os.kill(pid, signal.SIGKILL)
            _ForkLauncher.answer(60)
            raise subprocess.TimeoutExpired(command, timeout, stdout.read_text(), stderr.read_text())
        return subprocess.CompletedProcess(command, ended["returncode"], stdout.read_text(), stderr.read_text())


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a subprocess; the test fails, showing its output, unless it exits 0."""
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


# -- PostgreSQL, for the tests marked `server` ------------------------------------------------

POSTGRES_HOWTO = ("needs PostgreSQL: `source .ci/postgres.sh && start_postgres` starts a throw-away cluster "
                  "and sets BEDROT_TEST_POSTGRES (.ci/run does this)")


@pytest.fixture(scope="session")
def postgres() -> str:
    """The URI of the throw-away PostgreSQL cluster started by ``.ci/postgres.sh`` (its
    ``postgres`` database). Without one the test is skipped, except in CI, where it fails."""
    uri = os.environ.get("BEDROT_TEST_POSTGRES")
    if not uri:
        if os.environ.get("CI"):
            pytest.fail(f"BEDROT_TEST_POSTGRES is not set in CI: {POSTGRES_HOWTO}")
        pytest.skip(POSTGRES_HOWTO)
    return uri


@contextlib.contextmanager
def new_database(postgres: str, beside: tuple[str, ...] = ()) -> Iterator[str]:
    """A new, empty database in the test cluster for the block: its URI. Afterwards it is dropped,
    with the databases named like it plus each suffix of ``beside`` (``"_auth"``: its accounts')."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = postgres.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            for database in (name, *(name + suffix for suffix in beside)):
                connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture
def postgres_database(postgres: str) -> Iterator[str]:
    """A new, empty database in the test cluster, dropped after the test: its URI."""
    with new_database(postgres) as uri:
        yield uri
