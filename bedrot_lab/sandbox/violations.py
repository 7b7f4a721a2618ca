"""Violations of the sandbox rules, remembered: since when, how they changed, and which changes to alert."""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..plugins import call_each, log_failure
from ..statedb import db_text, from_db_text, migrate
from .rules import effective_rules, evaluate
from .settings import SEVERITIES
from .violation import Violation, owns

if TYPE_CHECKING:
    from ..config import Settings
    from .index import UsageIndex

log = logging.getLogger(__name__)

DB_NAME = "violations.db"
#: the kinds of transition, each handed to the ``handle_violation`` hooks
KINDS = ("new", "escalated", "resolved")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}

_SCHEMA = """
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
CREATE INDEX IF NOT EXISTS history_subject ON history (subject, id)
"""
_COLUMNS = "rule, subject, severity, measured, limit_value, detail, path, line"


def _schema_1(con: sqlite3.Connection) -> None:
    """Tables ``violations`` and ``history``, kept as they are where a store from before
    schema versions has them."""
    for statement in _SCHEMA.split(";"):
        con.execute(statement)


#: the store's schema versions, oldest first (see :func:`bedrot_lab.statedb.migrate`)
MIGRATIONS = (_schema_1,)


def step(violation: Violation) -> int:
    """How far past its limit a violation is, in doublings: 0 below twice the limit,
    1 from 2x, 2 from 4x ... (0 when the limit is not positive)."""
    if not violation.limit or violation.limit <= 0 or violation.measured < 2 * violation.limit:
        return 0
    return int(math.log2(violation.measured / violation.limit))


def level(violation: Violation) -> tuple[int, int]:
    """What an alert was about: (severity rank, :func:`step`); a higher level escalates."""
    return (_RANK[violation.severity], step(violation))


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Transition:
    """A change worth telling someone: ``kind`` is ``"new"``, ``"escalated"`` (a higher
    severity, or the measured value reached a further doubling of its limit) or
    ``"resolved"``. ``violation`` is the current one (for ``resolved``, the last
    one seen), ``previous`` what was last alerted (``escalated`` only),
    ``first_seen`` since when it has been open, ``at`` when this happened."""

    kind: str
    violation: Violation
    first_seen: float
    at: float
    previous: Violation | None = None

    def describe(self) -> str:
        """One line for a log or a terminal."""
        v = self.violation
        since = datetime.fromtimestamp(self.first_seen, UTC).strftime("%Y-%m-%d %H:%M UTC")
        line = f"sandbox violation {self.kind}: [{v.severity}] {v.rule} {v.subject}: {v.detail} (since {since})"
        return line.encode("utf-8", "backslashreplace").decode("utf-8")  # names that are not UTF-8

    def to_dict(self) -> dict[str, Any]:
        """The transition as JSON-ready values (times as ISO 8601, UTC)."""
        return {"event": self.kind, "at": _iso(self.at), "since": _iso(self.first_seen),
                **self.violation.to_dict(),
                "previous_severity": self.previous.severity if self.previous else None,
                "previous_measured": self.previous.measured if self.previous else None}


@dataclass(frozen=True)
class StoredViolation:
    """A violation as the store knows it: ``status`` ``open`` or ``resolved``, since when
    (``first_seen``), last seen, and when it was resolved."""

    violation: Violation
    status: str
    first_seen: float
    last_seen: float
    resolved_at: float | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One transition, as recorded: ``event`` is a :data:`KINDS` value."""

    id: int
    at: float
    event: str
    violation: Violation
    first_seen: float


class ViolationStore:
    """The violations of a lake's sandbox, in SQLite (``settings.state_dir / "violations.db"``).

    Table ``violations`` holds one row per (rule, subject), open or resolved,
    with the level last alerted; ``history`` one row per transition.
    :meth:`record` compares what the rules find now with the open rows inside
    one write transaction, so two processes checking at once (a watcher and a
    ``sandbox check``) never both report the same transition.
    """

    def __init__(self, db_path: Path):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
        self._con.execute("PRAGMA busy_timeout=60000")
        try:
            self._create()
        except BaseException:
            self._con.close()
            raise

    @classmethod
    def for_settings(cls, settings: Settings) -> ViolationStore:
        return cls(settings.state_dir / DB_NAME)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._con.close()

    def _create(self) -> None:
        from ..locks import file_lock

        with file_lock(self.db_path.with_name(self.db_path.name + ".lock")):
            migrate(self._con, self.db_path, MIGRATIONS)
            if self._con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self._con.execute("PRAGMA journal_mode=WAL")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                yield self._con
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
            self._con.execute("COMMIT")

    # -- recording -----------------------------------------------------------------------

    def record(self, current: Iterable[Violation], *, now: float | None = None,
               partial: Iterable[str] = ()) -> list[Transition]:
        """Compare ``current`` (everything the rules find now) with the open violations.

        Returns the transitions, ``new`` and ``escalated`` ones in the order of
        ``current``, then ``resolved`` ones: a violation not open before is
        ``new`` (also when it was resolved earlier: it starts again, with a new
        ``first_seen``); an open one whose :func:`level` is above the level last
        alerted is ``escalated``; an open one missing from ``current`` is
        ``resolved``. One that persists, or falls back and rises again no higher
        than already alerted, is updated silently. Open violations of the rules
        named in ``partial`` (rules that failed this time) are left as they are.
        A (rule, subject) given twice counts once, at its highest level.
        """
        now = time.time() if now is None else now
        latest: dict[tuple[str, str], Violation] = {}
        for violation in current:
            seen = latest.get(violation.key)
            if seen is None or (level(violation), violation.measured) > (level(seen), seen.measured):
                latest[violation.key] = violation
        partial = tuple(partial)
        transitions: list[Transition] = []
        resolved: list[Transition] = []
        with self._write() as con:
            open_rows = {(from_db_text(row[0]), from_db_text(row[1])): row for row in con.execute(
                f"SELECT {_COLUMNS}, first_seen, alerted_rank, alerted_step FROM violations WHERE status = 'open'")}
            inserts, updates, closes, history = [], [], [], []
            for key, violation in latest.items():
                row = open_rows.pop(key, None)
                values, alert = _values(violation), level(violation)
                if row is None:
                    inserts.append((*values, "open", now, now, None, *alert))
                    transitions.append(Transition("new", violation, now, now))
                    history.append((now, "new", *values, now))
                    continue
                first_seen, alerted = row[8], (row[9], row[10])
                if alert > alerted:
                    transitions.append(Transition("escalated", violation, first_seen, now, _violation(row)))
                    history.append((now, "escalated", *values, first_seen))
                    alerted = alert
                updates.append((*values[2:], now, *alerted, *values[:2]))
            for key, row in open_rows.items():
                if any(owns(name, key[0]) for name in partial):
                    continue
                old = _violation(row)
                resolved.append(Transition("resolved", old, row[8], now))
                history.append((now, "resolved", *_values(old), row[8]))
                closes.append((now, *_values(old)[:2]))
            con.executemany(
                f"INSERT OR REPLACE INTO violations ({_COLUMNS}, status, first_seen, last_seen, resolved_at, "
                "alerted_rank, alerted_step) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", inserts)
            con.executemany(
                "UPDATE violations SET severity = ?, measured = ?, limit_value = ?, detail = ?, path = ?, "
                "line = ?, last_seen = ?, alerted_rank = ?, alerted_step = ? WHERE rule = ? AND subject = ?",
                updates)
            con.executemany("UPDATE violations SET status = 'resolved', resolved_at = ? "
                            "WHERE rule = ? AND subject = ?", closes)
            con.executemany(f"INSERT INTO history (at, event, {_COLUMNS}, first_seen) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", history)
        return transitions + resolved

    # -- reading -------------------------------------------------------------------------

    def open_violations(self, rule: str | None = None) -> list[StoredViolation]:
        """The open violations (of rule ``rule`` and its sub-rules, if given), the most
        severe first, then the oldest."""
        return [v for v in self._stored("status = 'open'") if rule is None or owns(rule, v.violation.rule)]

    def all_violations(self) -> list[StoredViolation]:
        """Every violation ever recorded, open or resolved (open ones first)."""
        return sorted(self._stored("1"), key=lambda s: s.status != "open")

    def get(self, rule: str, subject: str) -> StoredViolation | None:
        """The stored violation (rule, subject), open or resolved, or None."""
        found = self._stored("rule = ? AND subject = ?", (db_text(rule), db_text(subject)))
        return found[0] if found else None

    def history(self, subject: str | None = None, rule: str | None = None,
                limit: int | None = None) -> list[HistoryEntry]:
        """Transitions, oldest first (the newest ``limit`` of them, if given), of
        ``subject`` and/or rule ``rule`` (and its sub-rules) if given."""
        where, args = [], []
        if subject is not None:
            where.append("subject = ?")
            args.append(db_text(subject))
        if rule is not None:
            where.append("(rule = ? OR substr(rule, 1, ?) = ?)")
            args += [rule, len(rule) + 1, rule + "."]
        sql = f"SELECT id, at, event, {_COLUMNS}, first_seen FROM history"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._con.execute(sql, args).fetchall()
        return [HistoryEntry(row[0], row[1], row[2], _violation(row[3:11]), row[11]) for row in reversed(rows)]

    def _stored(self, where: str, args: tuple[Any, ...] = ()) -> list[StoredViolation]:
        with self._lock:
            rows = self._con.execute(
                f"SELECT {_COLUMNS}, status, first_seen, last_seen, resolved_at FROM violations WHERE {where}",
                args).fetchall()
        stored = [StoredViolation(_violation(row), *row[8:]) for row in rows]
        stored.sort(key=lambda s: (-_RANK[s.violation.severity], s.first_seen, s.violation.key))
        return stored


def _values(violation: Violation) -> tuple[Any, ...]:
    return (db_text(violation.rule), db_text(violation.subject), violation.severity, violation.measured,
            violation.limit, db_text(violation.detail), db_text(violation.path), violation.line)


def _violation(row: tuple[Any, ...]) -> Violation:
    rule, subject, severity, measured, limit, detail, path, line = row[:8]
    return Violation(from_db_text(rule), from_db_text(subject), measured, limit, severity, from_db_text(detail),
                     from_db_text(path), line)


# -- telling the hooks, and the whole check --------------------------------------------------


def notify(transitions: Iterable[Transition], settings: Settings, hook: Any) -> int:
    """Hand each transition to every ``handle_violation`` implementation of ``hook``
    (a plugin manager's ``pm.hook``), in pluggy's call order. A sink that raises
    is logged and the others still run; returns how many calls failed."""
    if hook is None:
        return 0
    failures = 0
    for transition in transitions:
        for call in call_each(hook.handle_violation, transition=transition, settings=settings):
            if call.error is not None:
                failures += 1
                log_failure(call, f" (for {transition.violation.rule} {transition.violation.subject})")
    return failures


@dataclass(frozen=True)
class CheckResult:
    """One check of the sandbox: the violations now, the transitions they caused, the
    rules that failed (name -> error) and how many sink calls failed."""

    violations: list[Violation]
    transitions: list[Transition]
    failed_rules: dict[str, str] = field(default_factory=dict)
    sink_failures: int = 0

    @property
    def hard(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "hard"]


def check(settings: Settings, index: UsageIndex, hook: Any = None, *, now: float | None = None) -> CheckResult:
    """Evaluate the built-in and plugin rules (``hook.sandbox_rules``) against ``index``,
    record the result in the store and hand the transitions to ``hook.handle_violation``."""
    rules = effective_rules(settings, hook)
    now = time.time() if now is None else now
    evaluation = evaluate(rules.rules, index, now)
    with ViolationStore.for_settings(settings) as store:
        partial = list(evaluation.failed)
        if rules.incomplete:  # which rules the failed plugin has is unknown: keep open what none checked
            partial += [stored.violation.rule for stored in store.open_violations()
                        if not any(owns(rule.name, stored.violation.rule) for rule in rules.rules)]
        transitions = store.record(evaluation.violations, now=now, partial=partial)
    failures = notify(transitions, settings, hook)
    return CheckResult(evaluation.violations, transitions, evaluation.failed, failures)
