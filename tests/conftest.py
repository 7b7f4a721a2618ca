"""Shared test helpers. The lake fixtures (bedrot_lake, bedrot_lab, bedrot_env)
come from bedrot_lab.testing, the pytest plugin shipped for plugin authors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
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


@pytest.fixture
def postgres_database(postgres: str) -> Iterator[str]:
    """A new, empty database in the test cluster, dropped after the test: its URI."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = postgres.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield postgres.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
