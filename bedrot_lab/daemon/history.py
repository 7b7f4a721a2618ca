"""What the daemon did: each job's runs (start, end, result) and the daemon's own status,
in the lake's state folder (``daemon.db``), so that a restart knows what is due."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..secrets import scrub
from ..statedb import migrate

DB_NAME = "daemon.db"


def _schema_1(con: sqlite3.Connection) -> None:
    con.execute("CREATE TABLE IF NOT EXISTS job_runs (id INTEGER PRIMARY KEY, job TEXT NOT NULL, "
                "started REAL NOT NULL, ended REAL, ok INTEGER, result TEXT, pid INTEGER)")
    con.execute("CREATE INDEX IF NOT EXISTS job_runs_job ON job_runs (job, started)")
    con.execute("CREATE TABLE IF NOT EXISTS status (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")


MIGRATIONS = (_schema_1,)


class JobHistory:
    """The daemon's record in ``<state>/daemon.db``: usable from several threads and processes."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute("PRAGMA synchronous=NORMAL")  # the status is rewritten every few seconds: no fsync each time
        self._lock = threading.Lock()
        migrate(self._con, path, MIGRATIONS)

    @classmethod
    def for_state(cls, state_dir: Path) -> JobHistory:
        return cls(state_dir / DB_NAME)

    def __enter__(self) -> JobHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def started(self, job: str, at: float | None = None) -> int:
        """Record that ``job`` started; returns the run's id for :meth:`ended`."""
        import os

        with self._lock:
            cursor = self._con.execute("INSERT INTO job_runs (job, started, pid) VALUES (?, ?, ?)",
                                       (job, time.time() if at is None else at, os.getpid()))
            return int(cursor.lastrowid or 0)

    def ended(self, run: int, ok: bool | None, result: str, at: float | None = None) -> None:
        """Record how run ``run`` ended: ``ok`` True (done), False (failed) or None (stopped
        half way by the daemon's stop: neither a success nor a failure). A credential in
        ``result`` (an error's message) is masked."""
        with self._lock:
            self._con.execute("UPDATE job_runs SET ended = ?, ok = ?, result = ? WHERE id = ?",
                              (time.time() if at is None else at, None if ok is None else int(ok),
                               scrub(result)[0][:2000], run))

    def last_success(self, job: str) -> float | None:
        """When ``job``'s newest successful run started, or None."""
        with self._lock:
            row = self._con.execute("SELECT MAX(started) FROM job_runs WHERE job = ? AND ok = 1", (job,)).fetchone()
        return row[0] if row and row[0] is not None else None

    def summary(self, job: str) -> dict[str, Any]:
        """The newest run of ``job`` (started, ended, ok, result, seconds) and how many runs in a
        row have failed; empty values when it never ran."""
        with self._lock:
            rows = self._con.execute("SELECT started, ended, ok, result FROM job_runs WHERE job = ? "
                                     "ORDER BY started DESC LIMIT 50", (job,)).fetchall()
            runs = self._con.execute("SELECT COUNT(*) FROM job_runs WHERE job = ?", (job,)).fetchone()[0]
        if not rows:
            return {"last_run": None, "ended": None, "result": None, "ok": None, "seconds": None,
                    "consecutive_failures": 0, "runs": 0}
        started, ended, ok, result = rows[0]
        failures = 0
        for row in rows:
            if row[2] == 0:
                failures += 1
            elif row[2] == 1:
                break
        return {"last_run": started, "ended": ended, "result": result, "ok": None if ok is None else bool(ok),
                "seconds": round(ended - started, 3) if ended else None, "consecutive_failures": failures,
                "runs": runs}

    def run_by(self, job: str, pid: int) -> dict[str, Any] | None:
        """The newest run of ``job`` recorded by process ``pid`` (with its ``id``), or None."""
        with self._lock:
            row = self._con.execute("SELECT id, started, ended, ok, result FROM job_runs WHERE job = ? AND pid = ? "
                                    "ORDER BY started DESC LIMIT 1", (job, pid)).fetchone()
        if row is None:
            return None
        return {"id": row[0], "started": row[1], "ended": row[2], "ok": None if row[3] is None else bool(row[3]),
                "result": row[4]}

    def runs(self, job: str) -> list[dict[str, Any]]:
        """Every recorded run of ``job``, oldest first."""
        with self._lock:
            rows = self._con.execute("SELECT started, ended, ok, result, pid FROM job_runs WHERE job = ? "
                                     "ORDER BY started", (job,)).fetchall()
        return [{"started": r[0], "ended": r[1], "ok": None if r[2] is None else bool(r[2]), "result": r[3],
                 "pid": r[4]} for r in rows]

    def set_status(self, **values: Any) -> None:
        """Remember the daemon's status (pid, started, watcher state ...), as JSON values."""
        with self._lock:
            self._con.executemany("INSERT OR REPLACE INTO status VALUES (?, ?)",
                                  [(key, json.dumps(value)) for key, value in values.items()])

    def note(self, job: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into the state job ``job`` noted (``status()["job:<name>"]``)."""
        key = f"job:{job}"
        with self._lock:
            row = self._con.execute("SELECT value FROM status WHERE key = ?", (key,)).fetchone()
            merged = {**(json.loads(row[0]) if row else {}), **values}
            self._con.execute("INSERT OR REPLACE INTO status VALUES (?, ?)", (key, json.dumps(merged)))

    def status(self) -> dict[str, Any]:
        with self._lock:
            rows = self._con.execute("SELECT key, value FROM status").fetchall()
        return {key: json.loads(value) for key, value in rows}
