"""The lake's own state: schema versions and migrations (bedrot_lab.statedb); the usage
index, the violations store, the secret-scan cache and the digest cache as today's code
wrote them adopted without losing a row, a newer one refused or left alone; surrogate-safe text."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bedrot_lab.lake import DIGESTS_VERSION, cached_sha256
from bedrot_lab.sandbox.credentials import SecretFinding, SecretScanCache
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.violation import Violation
from bedrot_lab.sandbox.violations import ViolationStore
from bedrot_lab.statedb import (
    StateTooNew,
    db_text,
    from_db_text,
    migrate,
    schema_version,
)
from tests.conftest import bedrot_forked as bedrot  # what the commands do, not how they start


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, timeout=30)


def version_of(path: Path) -> int:
    con = connect(path)
    try:
        return schema_version(con)
    finally:
        con.close()


def make(path: Path, script: str) -> None:
    """A database as an earlier bedrot-lab left it: ``script`` run, no schema version set."""
    con = connect(path)
    con.executescript(script)
    con.close()
    assert version_of(path) == 0


# -- the mechanism -----------------------------------------------------------------------


def recording(log: list[str], name: str, sql: str = ""):
    def step(con: sqlite3.Connection) -> None:
        log.append(name)
        if sql:
            con.execute(sql)
    return step


def test_a_new_database_gets_every_migration_in_order(tmp_path: Path):
    log: list[str] = []
    migrations = [recording(log, "one", "CREATE TABLE a (x)"), recording(log, "two", "ALTER TABLE a ADD COLUMN y")]
    con = connect(tmp_path / "state.db")
    assert migrate(con, tmp_path / "state.db", migrations) == 0
    assert log == ["one", "two"] and schema_version(con) == 2
    assert migrate(con, tmp_path / "state.db", migrations) == 2  # current: nothing runs
    migrations.append(recording(log, "three", "CREATE TABLE b (z)"))
    assert migrate(con, tmp_path / "state.db", migrations) == 2
    assert log == ["one", "two", "three"] and schema_version(con) == 3
    con.close()


def test_a_migration_that_fails_leaves_the_database_as_it_was(tmp_path: Path):
    path = tmp_path / "state.db"
    con = connect(path)
    migrate(con, path, [recording([], "one", "CREATE TABLE a (x)")])
    con.execute("INSERT INTO a VALUES (1)")

    def broken(con: sqlite3.Connection) -> None:
        raise RuntimeError("a bug in migration three")

    steps = [recording([], "one"), recording([], "two", "DROP TABLE a"), broken]
    with pytest.raises(RuntimeError, match="migration three"):
        migrate(con, path, steps)
    assert not con.in_transaction and schema_version(con) == 1
    assert con.execute("SELECT x FROM a").fetchall() == [(1,)]  # migration two was rolled back with it
    con.close()


def test_a_database_newer_than_the_code_is_refused_in_one_line_naming_it(tmp_path: Path):
    path = tmp_path / "violations.db"
    con = connect(path)
    con.execute("CREATE TABLE future (x)")
    con.execute("PRAGMA user_version = 7")
    log: list[str] = []
    with pytest.raises(StateTooNew) as refused:
        migrate(con, path, [recording(log, "one")])
    message = str(refused.value)
    assert str(path) in message and "\n" not in message
    assert "newer bedrot-lab" in message and "7" in message
    assert log == [] and schema_version(con) == 7
    con.close()


def test_two_processes_opening_a_new_database_at_once_migrate_it_once(tmp_path: Path):
    path = tmp_path / "state.db"
    make(path, "PRAGMA journal_mode=WAL")

    def slow_first(con: sqlite3.Connection) -> None:
        con.execute("CREATE TABLE IF NOT EXISTS runs (who)")
        con.execute("INSERT INTO runs VALUES (?)", (threading.current_thread().name,))
        time.sleep(0.2)

    results: dict[str, int] = {}

    def open_it() -> None:
        con = connect(path)
        try:
            results[threading.current_thread().name] = migrate(con, path, [slow_first])
        finally:
            con.close()

    threads = [threading.Thread(target=open_it, name=f"opener{k}") for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    con = connect(path)
    assert len(con.execute("SELECT who FROM runs").fetchall()) == 1
    assert sorted(results.values()) == [0, 1] and schema_version(con) == 1
    con.close()


# -- text SQLite can store ----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["plain.csv", "café/straße.csv", "bad\udcff\udc80name.csv", "", "日本\udce9"])
def test_any_file_name_goes_into_sqlite_and_comes_back(tmp_path: Path, text: str):
    con = connect(tmp_path / "names.db")
    con.execute("CREATE TABLE names (name TEXT PRIMARY KEY)")
    con.execute("INSERT INTO names VALUES (?)", (db_text(text),))
    (stored,) = con.execute("SELECT name FROM names").fetchone()
    assert from_db_text(stored) == text
    assert (db_text(text) == text) == (text.encode("utf-8", "surrogatepass") == text.encode("utf-8", "ignore"))
    con.close()


def test_none_stays_none():
    assert db_text(None) is None and from_db_text(None) is None


# -- the stores, as today's code wrote them -----------------------------------------------------

# The SQL below is what bedrot-lab wrote before schema versions: copied, never imported, so
# that these tests keep proving the adoption of those files whatever the code becomes.

INDEX_BEFORE_VERSIONS = """
PRAGMA journal_mode=WAL;
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE owners (
    id INTEGER PRIMARY KEY, area TEXT NOT NULL, user TEXT NOT NULL, project TEXT NOT NULL,
    run_id TEXT NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0,
    UNIQUE (area, user, project, run_id));
CREATE TABLE dirs (
    id INTEGER PRIMARY KEY, parent_id INTEGER, path TEXT NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0);
CREATE TABLE files (
    dir_id INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    mtime REAL NOT NULL, atime REAL NOT NULL, ctime REAL NOT NULL, is_link INTEGER NOT NULL,
    PRIMARY KEY (dir_id, name)) WITHOUT ROWID;
CREATE INDEX dirs_parent ON dirs (parent_id);
INSERT INTO owners (id, area, user, project, run_id) VALUES (1, '', '', '', '');
INSERT INTO dirs (id, parent_id, path, owner_id) VALUES (1, NULL, '', 1);
INSERT INTO meta VALUES ('schema', 1), ('full_scans', 0), ('reconciles', 0);
"""

INDEX_ROWS = """
INSERT INTO owners VALUES (2, 'users', 'ana', 'churn', '', 0, 0);
INSERT INTO owners VALUES (3, 'users', 'ana', '', '', 0, 0);
INSERT INTO dirs VALUES (2, 1, 'users', 1, 0, 0), (3, 2, 'users/ana', 3, 0, 0), (4, 3, 'users/ana/churn', 2, 1500, 2);
INSERT INTO files VALUES (4, 'model.ckpt', 1000, 1.0e9, 1.0e9, 1.0e9, 0), (4, ?, 500, 2.0e9, 2.0e9, 2.0e9, 0);
UPDATE owners SET bytes = 1500, files = 2 WHERE id = 2;
UPDATE meta SET value = 7 WHERE key = 'full_scans';
INSERT INTO meta VALUES ('last_full_scan', 1700000000.0), ('heartbeat', 'watcher 42');
"""


def test_a_usage_index_from_before_schema_versions_is_adopted_with_its_rows(tmp_path: Path):
    path = tmp_path / "sandbox.db"
    make(path, INDEX_BEFORE_VERSIONS)
    con = connect(path)
    for statement in INDEX_ROWS.strip().split(";\n"):
        con.execute(statement, (db_text("n\udcffme.csv"),) if "?" in statement else ())
    con.close()

    with UsageIndex(path, tmp_path / "sandbox", workers=0) as index:
        assert index.total() == (1500, 2)
        assert index.usage("project") == [{"user": "ana", "project": "churn", "bytes": 1500, "files": 2}]
        assert index.get("users/ana/churn/model.ckpt").size == 1000
        assert index.get("users/ana/churn/n\udcffme.csv").size == 500
        info = index.info()
        assert (info["full_scans"], info["last_full_scan"], info["heartbeat"]) == (7, 1700000000.0, "watcher 42")
    assert version_of(path) == 1


def test_a_new_usage_index_is_version_one(tmp_path: Path):
    with UsageIndex(tmp_path / "sandbox.db", tmp_path, workers=0) as index:
        assert index.total() == (0, 0) and index.info()["full_scans"] == 0
    assert version_of(tmp_path / "sandbox.db") == 1


VIOLATIONS_BEFORE_VERSIONS = """
CREATE TABLE IF NOT EXISTS violations (
    rule TEXT NOT NULL, subject TEXT NOT NULL, status TEXT NOT NULL,
    severity TEXT NOT NULL, measured NUMERIC, limit_value NUMERIC, detail TEXT NOT NULL,
    path TEXT, line INTEGER, first_seen REAL NOT NULL, last_seen REAL NOT NULL, resolved_at REAL,
    alerted_rank INTEGER NOT NULL, alerted_step INTEGER NOT NULL,
    PRIMARY KEY (rule, subject)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS violations_status ON violations (status);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL, rule TEXT NOT NULL,
    subject TEXT NOT NULL, severity TEXT NOT NULL, measured NUMERIC, limit_value NUMERIC,
    detail TEXT NOT NULL, path TEXT, line INTEGER, first_seen REAL NOT NULL);
CREATE INDEX IF NOT EXISTS history_subject ON history (subject, id);
PRAGMA journal_mode=WAL;
INSERT INTO violations VALUES ('quota.user', 'user:ana', 'open', 'soft', 120, 100, 'ana uses 120 of 100 bytes',
    NULL, NULL, 1000.0, 3000.0, NULL, 1, 0);
INSERT INTO violations VALUES ('secrets', 'users/ana/.env:3', 'resolved', 'hard', 1, 0, 'aws', 'users/ana/.env', 3,
    1500.0, 2500.0, 2600.0, 2, 0);
INSERT INTO history VALUES (1, 1000.0, 'new', 'quota.user', 'user:ana', 'soft', 120, 100,
    'ana uses 120 of 100 bytes', NULL, NULL, 1000.0);
INSERT INTO history VALUES (2, 1500.0, 'new', 'secrets', 'users/ana/.env:3', 'hard', 1, 0, 'aws', 'users/ana/.env',
    3, 1500.0);
INSERT INTO history VALUES (3, 2600.0, 'resolved', 'secrets', 'users/ana/.env:3', 'hard', 1, 0, 'aws',
    'users/ana/.env', 3, 1500.0);
"""


def test_a_violations_store_from_before_schema_versions_keeps_its_history(tmp_path: Path):
    path = tmp_path / "violations.db"
    make(path, VIOLATIONS_BEFORE_VERSIONS)
    with ViolationStore(path) as store:
        assert [(h.id, h.event, h.violation.subject) for h in store.history()] == [
            (1, "new", "user:ana"), (2, "new", "users/ana/.env:3"), (3, "resolved", "users/ana/.env:3")]
        [quota] = store.open_violations()
        assert (quota.violation.rule, quota.first_seen, quota.last_seen) == ("quota.user", 1000.0, 3000.0)
        assert store.get("secrets", "users/ana/.env:3").resolved_at == 2600.0
        # and it goes on from there: still open, so nothing new to report
        assert store.record([Violation("quota.user", "user:ana", 130, 100, "soft", "more")], now=4000.0) == []
        assert len(store.history()) == 3
    assert version_of(path) == 1


SCAN_CACHE_BEFORE_VERSIONS = """
PRAGMA journal_mode=WAL;
CREATE TABLE scans (path BLOB PRIMARY KEY, findings TEXT);
CREATE TABLE IF NOT EXISTS stamps (path TEXT PRIMARY KEY, size INTEGER,
    mtime REAL, ctime REAL, findings TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO stamps VALUES ('users/ana/.env', 40, 1000.0, 1000.0, '[[3, "aws"]]');
INSERT INTO stamps VALUES ('users/ana/clean.py', 10, 1000.0, 1000.0, '[]');
"""


def test_a_secret_scan_cache_from_before_schema_versions_keeps_its_stamps(tmp_path: Path):
    path = tmp_path / "secret-scan.db"
    make(path, SCAN_CACHE_BEFORE_VERSIONS)
    cache = SecretScanCache(path)
    try:
        assert cache.count() == 2
        assert cache.with_findings() == [("users/ana/.env", (40, 1000.0, 1000.0), [SecretFinding(3, "aws")])]
    finally:
        cache.close()
    con = connect(path)
    assert [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["stamps"]
    assert schema_version(con) == 1
    con.close()


@pytest.mark.parametrize("opener", [
    lambda path: UsageIndex(path, path.parent, workers=0),
    ViolationStore,
    SecretScanCache,
], ids=["usage index", "violations", "secret-scan cache"])
def test_every_store_refuses_a_database_of_a_newer_bedrot_lab(tmp_path: Path, opener):
    path = tmp_path / "state.db"
    make(path, "CREATE TABLE from_the_future (x); INSERT INTO from_the_future VALUES (1)")
    con = connect(path)
    con.execute("PRAGMA user_version = 2")
    con.close()
    with pytest.raises(StateTooNew, match="newer bedrot-lab") as refused:
        opener(path)
    assert str(path) in str(refused.value)
    con = connect(path)
    assert con.execute("SELECT x FROM from_the_future").fetchall() == [(1,)] and schema_version(con) == 2
    con.close()


def test_the_command_line_says_so_in_one_line_and_exits_1(bedrot_lake: Path, cli_env: dict[str, str]):
    (bedrot_lake / "sandbox" / "users" / "ana").mkdir(parents=True, exist_ok=True)
    path = bedrot_lake / ".bedrot-lab" / "sandbox.db"
    path.parent.mkdir(exist_ok=True)
    connect(path).execute("PRAGMA user_version = 3").connection.close()
    done = bedrot("sandbox", "usage", env=cli_env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        (f"Error: {path} was written by a newer bedrot-lab (schema version 3; this one knows up to 1): "
         "upgrade bedrot-lab to use it")]


# -- the digest cache (digests.json) ------------------------------------------------------------


def stamp_of(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def test_a_digest_cache_from_before_versions_is_trusted_and_kept(tmp_path: Path):
    data, other = tmp_path / "statement.csv", tmp_path / "other.csv"
    data.write_bytes(b"a,b\n1,2\n")
    cache = tmp_path / "state" / "digests.json"
    cache.parent.mkdir()
    before = {str(data.resolve()): {"stamp": stamp_of(data), "sha256": "remembered"},
              str(other): {"stamp": [1, 2, 3], "sha256": "other"}}
    cache.write_text(json.dumps(before))  # as today's code writes it: no version
    assert cached_sha256(data, cache) == "remembered"  # not hashed again
    data.write_bytes(b"a,b\n1,3\n")
    assert cached_sha256(data, cache) == hashlib.sha256(b"a,b\n1,3\n").hexdigest()
    after = json.loads(cache.read_text())
    assert after["version"] == DIGESTS_VERSION == 1
    assert after[str(other)] == before[str(other)]
    assert after[str(data.resolve())]["stamp"] == stamp_of(data)


def test_a_digest_cache_of_a_newer_bedrot_lab_is_left_alone(tmp_path: Path):
    data = tmp_path / "statement.csv"
    data.write_bytes(b"x")
    cache = tmp_path / "digests.json"
    newer = json.dumps({"version": DIGESTS_VERSION + 1, "entries": {str(data.resolve()): "a new layout"}})
    cache.write_text(newer)
    assert cached_sha256(data, cache) == hashlib.sha256(b"x").hexdigest()
    assert cache.read_text() == newer
