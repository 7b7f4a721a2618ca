"""The leader lock: daemons of one lake on several hosts share a PostgreSQL database, and
only the one holding a session-level advisory lock in it runs the jobs (docs/daemon.md)."""

from __future__ import annotations

import hashlib
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import BedrotLabError
from ..secrets import scrub

#: what the lock key is the hash of, before the lake's name
KEY_PREFIX = "bedrot-lab daemon "
#: the server drops a silent leader's session after this many keepalive probes go unanswered
PROBES = 3
#: seconds between the watcher's looks at its stop event (it wakes at once when the session ends)
WATCH_TICK = 0.5


class LeaderLockError(BedrotLabError):
    """The leader lock cannot be used at all: psycopg missing, or its database unreachable at start."""


def lock_key(lake_name: str) -> int:
    """The advisory lock's key for lake ``lake_name``: the first 8 bytes of
    ``sha256("bedrot-lab daemon " + name)``, as a signed 64-bit integer (big-endian). Two
    lakes of different names on one database never share a lock; the same lake on two
    hosts always does."""
    digest = hashlib.sha256((KEY_PREFIX + lake_name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def identity() -> str:
    """This daemon as the other daemons see it (the leader session's ``application_name``;
    PostgreSQL keeps 63 bytes of it, so a long host name is cut, never the pid)."""
    return f"bedrot-lab daemon pid {os.getpid()} on {socket.gethostname()}"[:63]


class LeaderLock:
    """One dedicated connection to the lock's database, in autocommit, and the lock on it.

    ``uri`` is a libpq URI (``postgresql://...``). ``poll`` sets the timers: the standby
    tries every ``poll`` seconds; the leader checks its session every ``poll`` seconds, a
    check given up after ``max(poll, 5)`` seconds without an answer (``tcp_user_timeout``).
    The server drops a leader that went silent (its host gone) only after ``grace`` (the
    daemon's stop_timeout) + ``poll`` + ``max(poll, 5)`` seconds and three unanswered
    keepalive probes ``poll`` seconds apart: by then a leader that still runs has noticed
    and stopped its jobs.
    """

    def __init__(self, uri: str, lake_name: str, poll: float, grace: float):
        self.uri = uri
        self.key = lock_key(lake_name)
        self.poll = poll
        self.answer_timeout = max(poll, 5.0)
        self.server_silence = grace + poll + self.answer_timeout  # keepalive idle, server side
        self.name = identity()
        #: why the last :meth:`acquire` could not ask the database ("" when it could)
        self.problem = ""
        self._connection: Any = None
        self._watcher: threading.Thread | None = None
        self._unwatch = threading.Event()

    @property
    def where(self) -> str:
        """The database, for messages (a password in the URI masked)."""
        return scrub(self.uri)[0]

    def connect(self) -> None:
        """Open the connection; :class:`LeaderLockError` naming the database and the cause when that fails."""
        try:
            import psycopg
        except ImportError:
            raise LeaderLockError("[daemon] leader_lock needs psycopg: pip install 'bedrot-lab[server]'") from None
        try:
            self._open()
        except psycopg.Error as exc:
            raise LeaderLockError(f"cannot reach the leader lock's database {self.where}: {_first_line(exc)}; "
                                  "check [daemon] leader_lock and that the database answers") from None

    def _open(self) -> None:
        import psycopg

        self.close()
        server_side = {"tcp_keepalives_idle": round(self.server_silence), "tcp_keepalives_interval": round(self.poll),
                       "tcp_keepalives_count": PROBES,
                       "tcp_user_timeout": round((self.server_silence + PROBES * self.poll) * 1000)}
        self._connection = psycopg.connect(
            self.uri, autocommit=True, application_name=self.name, connect_timeout=round(self.answer_timeout),
            keepalives=1, keepalives_idle=round(self.poll), keepalives_interval=round(self.poll),
            keepalives_count=PROBES, tcp_user_timeout=round(self.answer_timeout * 1000),
            options=" ".join(f"-c {name}={value}" for name, value in server_side.items()))

    def acquire(self) -> bool:
        """Take the lock if nobody holds it (connecting first if needed); False when another
        daemon holds it or the database does not answer (:attr:`problem` says which)."""
        import psycopg

        self.problem = ""
        try:
            if self._connection is None or self._connection.closed:
                self._open()
            row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            self.problem = _first_line(exc)
            self.close()
            return False
        return bool(row and row[0])

    def watch(self, on_lost: Callable[[str], None]) -> None:
        """While leading, a thread watches the session: it waits on the connection's socket, so
        that a session the server ended (terminated, restarted) is seen at once, and asks every
        ``poll`` seconds whether the lock is still held, so that a dead network is seen within
        ``poll`` plus ``max(poll, 5)`` seconds. It calls ``on_lost(why)`` once when the lock is
        gone, then ends. Nothing else may use the connection until :meth:`unwatch`."""
        self._unwatch.clear()
        self._watcher = threading.Thread(target=self._watch, args=(on_lost,), name="leader-lock", daemon=True)
        self._watcher.start()

    def _watch(self, on_lost: Callable[[str], None]) -> None:
        descriptor = self._connection.fileno()
        due = time.monotonic() + self.poll
        while not self._unwatch.is_set():
            readable, _, _ = select.select([descriptor], [], [], min(WATCH_TICK, max(0.0, due - time.monotonic())))
            if self._unwatch.is_set():
                return
            if readable or time.monotonic() >= due:
                why = self.check()
                if why:
                    on_lost(why)
                    return
                due = time.monotonic() + self.poll

    def unwatch(self) -> None:
        """Stop the watching thread (within half a second, or a check's time)."""
        self._unwatch.set()
        if self._watcher is not None:
            self._watcher.join(self.answer_timeout + 1)
            self._watcher = None

    def check(self) -> str:
        """"" while this session still holds the lock, else why not (the connection lost ...)."""
        import psycopg

        try:
            row = self._connection.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
                "AND pid = pg_backend_pid() AND classid = %s::bigint::oid AND objid = %s::bigint::oid",
                _halves(self.key)).fetchone()
        except (psycopg.Error, AttributeError) as exc:
            self.close()
            return f"the connection to {self.where} failed: {_first_line(exc)}"
        return "" if row and row[0] else "this session no longer holds the lock"

    def holder(self) -> str:
        """Who holds the lock: its session's application name (``bedrot-lab daemon pid PID
        on HOST``) and address, "nobody" or "unknown" (the database does not answer)."""
        import psycopg

        if self._connection is None:
            return "unknown (the database does not answer)"
        try:
            row = self._connection.execute(
                "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objsubid = 1 AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                _halves(self.key)).fetchone()
        except psycopg.Error as exc:
            self.close()
            return f"unknown ({_first_line(exc)})"
        if row is None:
            return "nobody"
        name, address, since = row  # of another role's session, only superusers and pg_read_all_stats see these
        where = f" from {address}" if address else ""
        when = f" since {since.astimezone().isoformat(timespec='seconds')}" if since else ""
        return f"{name or 'an unnamed session'}{where}{when}"

    def close(self) -> None:
        """Close the connection, which releases the lock if it was held."""
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self.unwatch()
        if self._connection is not None:
            try:
                self._connection.close()
            except Exception:  # a connection already broken has nothing left to close
                pass
            self._connection = None


def _halves(key: int) -> tuple[int, int]:
    """``key`` as pg_locks shows a bigint advisory key: (classid, objid), the high and low 32 bits."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return scrub(text[0] if text else type(exc).__name__)[0]
