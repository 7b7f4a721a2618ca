"""The sandbox usage index: every file under the sandbox, its size, times and owner, in SQLite."""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..statedb import db_text, from_db_text, migrate, schema_version
from .records import FileRecord, Owner
from .walk import ScanWalk
from .writer import IndexWriter, plan

if TYPE_CHECKING:
    from ..config import Settings
    from .records import Change

log = logging.getLogger(__name__)

#: the index's file name in the lake's state folder
DB_NAME = "sandbox.db"
#: usage() groupings: ``by`` -> the key columns of each row
USAGE_KEYS: dict[str, tuple[str, ...]] = {
    "area": ("area",),
    "user": ("user",),
    "project": ("user", "project"),
    "run": ("user", "project", "run_id"),
}

_BUSY_MS = 600_000  # a writer waits this long for a full scan elsewhere to finish


@dataclass(frozen=True, slots=True)
class ScanStats:
    """What :meth:`UsageIndex.full_scan` found: files, folders, bytes, entries it could
    not read (``errors``), wall time, and how many helper processes walked with it."""

    files: int
    dirs: int
    bytes: int
    errors: int
    seconds: float
    workers: int


@dataclass(frozen=True, slots=True)
class ReconcileStats:
    """What :meth:`UsageIndex.reconcile` corrected: files added, updated (size, mtime,
    ctime or type changed) and removed, folders added and removed, and its wall time."""

    added: int
    updated: int
    removed: int
    dirs_added: int
    dirs_removed: int
    seconds: float

    @property
    def changed(self) -> int:
        """Every correction counted together."""
        return self.added + self.updated + self.removed + self.dirs_added + self.dirs_removed


# -- schema ---------------------------------------------------------------------------------

_FILES_DDL = """CREATE TABLE {name} (
    dir_id INTEGER NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    mtime REAL NOT NULL, atime REAL NOT NULL, ctime REAL NOT NULL, is_link INTEGER NOT NULL,
    PRIMARY KEY (dir_id, name)) WITHOUT ROWID"""
_DIRS_DDL = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY, parent_id INTEGER, path TEXT NOT NULL UNIQUE,
    owner_id INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0)"""
_OWNERS_DDL = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY, area TEXT NOT NULL, user TEXT NOT NULL, project TEXT NOT NULL,
    run_id TEXT NOT NULL, bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0,
    UNIQUE (area, user, project, run_id))"""


def _create_tables(con: sqlite3.Connection, suffix: str = "") -> None:
    con.execute(_OWNERS_DDL.format(name="owners" + suffix))
    con.execute(_DIRS_DDL.format(name="dirs" + suffix))
    con.execute(_FILES_DDL.format(name="files" + suffix))


def _schema_1(con: sqlite3.Connection) -> None:
    """Tables ``meta``, ``owners``, ``dirs`` and ``files``. An index from before schema
    versions holds them with ``meta.schema`` 1 and is kept as it is; any other layout
    is only an index of the disk, rebuilt empty."""
    try:
        found = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:
        found = None
    if found is not None and int(found[0]) == 1:
        return
    for table in ("files", "dirs", "owners", "meta"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID")
    _create_tables(con)
    con.execute("CREATE INDEX dirs_parent ON dirs (parent_id)")
    con.execute("INSERT INTO owners (id, area, user, project, run_id) VALUES (1, '', '', '', '')")
    con.execute("INSERT INTO dirs (id, parent_id, path, owner_id) VALUES (1, NULL, '', 1)")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", 1), ("full_scans", 0), ("reconciles", 0)])


#: the index's schema versions, oldest first (see :func:`bedrot_lab.statedb.migrate`)
MIGRATIONS = (_schema_1,)


# -- the index --------------------------------------------------------------------------


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class UsageIndex:
    """Persistent SQLite index of every file under the sandbox (in settings.state_dir / "sandbox.db").

    Tables: ``files`` (one row per file, keyed by folder id and name), ``dirs``
    (one row per folder, with its owner and the bytes and files directly in it)
    and ``owners`` (totals per area, user, project and run), so :meth:`usage`
    and :meth:`total` read a few rows whatever the size of the sandbox.

    :meth:`full_scan` builds it, :meth:`apply` keeps it current from file-system
    events (see :class:`bedrot_lab.sandbox.watcher.SandboxWatcher`) and
    :meth:`reconcile` corrects what events missed. The database is in WAL mode:
    readers in other threads and processes never wait for writers. Each thread
    gets its own connection; the object may be shared between threads.

    ``workers`` is how many helper processes a full scan starts to walk with it:
    None means one fewer than the CPUs this process may use (at most 3), 0 none
    (at most 8).
    """

    def __init__(self, db_path: Path, root: Path, *, workers: int | None = None):
        self.db_path = Path(db_path)
        self.root = Path(root)
        self.workers = min(_cpus() - 1, 3) if workers is None else max(0, min(workers, 8))
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._create()

    @classmethod
    def for_settings(cls, settings: Settings) -> UsageIndex:
        """The index of ``settings``' sandbox zone, in its state folder."""
        return cls(settings.state_dir / DB_NAME, settings.zone("sandbox"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UsageIndex({str(self.db_path)!r}, root={str(self.root)!r})"

    # -- connections ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=_BUSY_MS / 1000)
        con.execute(f"PRAGMA busy_timeout={_BUSY_MS}")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA temp_store=MEMORY")
        con.execute("PRAGMA journal_size_limit=67108864")
        return con

    @property
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            con = self._connect()
            self._local.con = con
            with self._lock:
                self._connections.append(con)
        return con

    def _create(self) -> None:
        """Create the database on first use, or bring an older one to the current schema
        (under a lock beside it). Raises StateTooNew for an index of a newer bedrot-lab."""
        from ..locks import file_lock

        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.db_path.with_name(self.db_path.name + ".lock")):
            con = None
            try:
                con = self._connect()
                current = schema_version(con) == len(MIGRATIONS)
            except sqlite3.DatabaseError as exc:  # not a database: it is only an index, start again
                log.warning("%s is unreadable (%s); starting a new index", self.db_path, exc)
                if con is not None:
                    con.close()
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
                con = self._connect()
                current = False
            try:
                if not current:
                    migrate(con, self.db_path, MIGRATIONS)
                    con.execute("PRAGMA journal_mode=WAL")
            finally:
                con.close()

    def close(self) -> None:
        """Close every connection this object opened (in any thread)."""
        self._closed = True
        with self._lock:
            connections, self._connections = self._connections, []
        for con in connections:
            try:
                con.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    # -- building ---------------------------------------------------------------------

    def full_scan(self, progress: Callable[[int], None] | None = None) -> ScanStats:
        """Rebuild the index from disk; readers see the old index until it is done.
        One full scan at a time: a second, in any process, waits for the first.

        The new tables are built beside the old ones in one write transaction
        and swapped in when it commits, so other writers (a watcher's
        :meth:`apply`) wait for it and then apply what happened meanwhile. The
        top levels are listed first; the folders found there are walked by this
        process and :attr:`workers` helper processes together, each taking the
        next unclaimed unit, the helpers into scratch databases merged at the end.
        ``progress`` is called with the number of files this process has indexed
        so far, about every 16,000 files, and with the total at the end; what it
        raises abandons the scan (the index stays as it was).
        """
        with self._scan_lock():
            return self._full_scan(progress)

    def build_if_never(self, progress: Callable[[int], None] | None = None) -> ScanStats | None:
        """Build the index by a full scan if it never was, once however many threads and
        processes ask at the same time; None when it already was built."""
        if self.info().get("full_scans"):
            return None
        with self._scan_lock():
            if self.info().get("full_scans"):
                return None
            return self._full_scan(progress)

    def _scan_lock(self) -> AbstractContextManager[None]:
        from ..locks import file_lock

        return file_lock(self.db_path.with_name(self.db_path.name + ".scan.lock"))

    def _full_scan(self, progress: Callable[[int], None] | None) -> ScanStats:
        started = time.perf_counter()
        root = str(self.root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"the sandbox root {root} is not a folder")
        con = self._con
        scratch = tempfile.mkdtemp(prefix=f".{self.db_path.name}.scan-", dir=self.db_path.parent)
        walk = ScanWalk(con, root, "main.files_new", scratch, self.workers, progress)
        try:
            walk.attach()
            con.execute("PRAGMA main.synchronous=OFF")
            # Not BEGIN IMMEDIATE: it would lock the helpers' attached scratch databases too. A
            # write as the first statement waits for another writer as IMMEDIATE would (a
            # transaction that read first could not wait: its snapshot would be stale).
            con.execute("BEGIN")
            con.execute("UPDATE main.meta SET value = value WHERE key = 'full_scans'")
            for table in ("files_new", "dirs_new", "owners_new"):
                con.execute(f"DROP TABLE IF EXISTS main.{table}")
            _create_tables(con, "_new")
            walk.run()
            con.execute("""INSERT INTO main.owners_new (area, user, project, run_id, bytes, files)
                SELECT area, user, project, run_id, SUM(bytes), SUM(files) FROM temp.scan_dirs
                GROUP BY area, user, project, run_id""")
            con.execute("""INSERT INTO main.dirs_new (id, parent_id, path, owner_id, bytes, files)
                SELECT s.id, s.parent_id, s.path, o.id, s.bytes, s.files FROM temp.scan_dirs s
                JOIN main.owners_new o ON o.area = s.area AND o.user = s.user AND o.project = s.project
                AND o.run_id = s.run_id ORDER BY s.id""")
            con.execute("DROP TABLE temp.scan_dirs")
            for table in ("files", "dirs", "owners"):
                con.execute(f"DROP TABLE main.{table}")
                con.execute(f"ALTER TABLE main.{table}_new RENAME TO {table}")
            con.execute("CREATE INDEX main.dirs_parent ON dirs (parent_id)")
            self._bump(con, "full_scans", last_full_scan=time.time(), files=walk.files, bytes=walk.bytes)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.execute("PRAGMA main.synchronous=NORMAL")
            walk.close()
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if progress is not None:
            progress(walk.files)
        return ScanStats(walk.files, walk.dirs, walk.bytes, walk.errors, time.perf_counter() - started, walk.helpers)

    def _bump(self, con: sqlite3.Connection, counter: str, **values: Any) -> None:
        con.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (counter,))
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    # -- keeping it current -------------------------------------------------------------

    def apply(self, changes: Iterable[Change]) -> None:
        """Apply file-system changes in one transaction.

        Idempotent: a created or modified path is re-stat'ed from disk (a path
        that no longer exists is removed), so duplicate or stale events are
        harmless; a created folder is read whole (events for files written
        before its watch existed are lost); a moved folder moves its subtree and
        a deleted one removes it. Folder ``modified`` changes need nothing.
        """
        steps = plan(changes)
        if not steps:
            return
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            writer = IndexWriter(con, self.root)
            writer.apply(steps)
            writer.flush()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def reconcile(self, commit_seconds: float = 0.5, *, under: str = "") -> ReconcileStats:
        """Compare the index with the disk and fix what events missed.

        Walks the sandbox (or only folder ``under``, relative) folder by folder,
        comparing each folder's files and sub-folders with the index, and
        commits every ``commit_seconds`` so that other writers are not held up
        for the whole walk. Also refreshes access times, which the watcher
        cannot see (a refreshed atime alone is not counted as an update).
        """
        started = time.perf_counter()
        under = under.strip("/")
        con = self._con
        writer = IndexWriter(con, self.root)
        root = str(self.root)
        con.execute("BEGIN IMMEDIATE")
        try:
            if not os.path.isdir(root):
                writer.remove_subtree("")
            elif under and (start := writer.ensure_dir(under)) is None:
                writer.forget(under)  # gone, or not a folder: sync what is there instead
                writer.sync(under)
            else:
                stack = [(under, start if under else writer.ensure_dir(""))]
                generation, deadline = 0, time.monotonic() + commit_seconds
                while stack:
                    rel, row = stack.pop()
                    if generation:  # rows read before the last commit: look them up again
                        row = writer.dir_row(rel)
                        if row is None:
                            continue
                    writer.sync_dir(rel, row, stack)
                    if time.monotonic() > deadline:
                        writer.flush()
                        con.execute("COMMIT")
                        con.execute("BEGIN IMMEDIATE")
                        writer.cache.clear()
                        generation += 1
                        deadline = time.monotonic() + commit_seconds
            writer.flush()
            if not under:
                self._bump(con, "reconciles", last_reconcile=time.time())
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        return ReconcileStats(writer.added, writer.updated, writer.removed, writer.dirs_added,
                              writer.dirs_removed, time.perf_counter() - started)

    # -- reading ----------------------------------------------------------------------

    def usage(self, by: str) -> list[dict[str, Any]]:
        """Bytes and files per ``by`` (``"user"``, ``"project"``, ``"area"`` or ``"run"``),
        largest first.

        Rows are ``{"user": ..., "bytes": ..., "files": ...}``; ``project`` rows
        also hold ``user``, ``run`` rows ``user``, ``project`` and ``run_id``.
        ``area`` covers every file (``""`` is the sandbox root itself); the other
        groupings only the files that have that key (personal workspaces).
        Groups without files are left out.
        """
        keys = USAGE_KEYS.get(by)
        if keys is None:
            raise ValueError(f"usage by {by!r}: expected one of {', '.join(USAGE_KEYS)}")
        columns = ", ".join(keys)
        where = "" if by == "area" else f"WHERE {keys[-1]} != ''"
        rows = self._con.execute(
            f"SELECT {columns}, SUM(bytes), SUM(files) FROM owners {where} GROUP BY {columns} "
            f"HAVING SUM(files) > 0 ORDER BY SUM(bytes) DESC, {columns}").fetchall()
        return [{**{key: from_db_text(value) for key, value in zip(keys, row)}, "bytes": row[-2], "files": row[-1]}
                for row in rows]

    def others(self, by: str) -> list[dict[str, Any]]:
        """Bytes and files per area of the files no :meth:`usage` row of ``by`` holds
        (shared areas, the sandbox root, a workspace's files outside projects or runs),
        largest first: ``{"area": ..., "bytes": ..., "files": ...}``. With them,
        ``usage(by)`` adds up to :meth:`total`. Empty for ``"area"``, which holds every file."""
        keys = USAGE_KEYS.get(by)
        if keys is None:
            raise ValueError(f"usage by {by!r}: expected one of {', '.join(USAGE_KEYS)}")
        if by == "area":
            return []
        rows = self._con.execute(
            f"SELECT area, SUM(bytes), SUM(files) FROM owners WHERE {keys[-1]} = '' GROUP BY area "
            f"HAVING SUM(files) > 0 ORDER BY SUM(bytes) DESC, area").fetchall()
        return [{"area": from_db_text(area), "bytes": nbytes, "files": nfiles} for area, nbytes, nfiles in rows]

    @contextmanager
    def snapshot(self) -> Iterator[Self]:
        """Reads in the block (in this thread) see one state of the index, whatever a
        watcher writes meanwhile: rows and totals read in it add up."""
        con = self._con
        con.execute("BEGIN")
        try:
            yield self
        finally:
            con.execute("COMMIT")

    def total(self) -> tuple[int, int]:
        """Bytes and files in the whole sandbox."""
        nbytes, nfiles = self._con.execute("SELECT SUM(bytes), SUM(files) FROM owners").fetchone()
        return (nbytes or 0, nfiles or 0)

    def owner_totals(self, user: str, project: str | None = None) -> tuple[int, int]:
        """Bytes and files of user ``user``'s workspace, or of one of its projects."""
        sql = "SELECT SUM(bytes), SUM(files) FROM owners WHERE area = 'users' AND user = ?"
        args = [db_text(user)]
        if project is not None:
            sql += " AND project = ?"
            args.append(db_text(project))
        nbytes, nfiles = self._con.execute(sql, args).fetchone()
        return (nbytes or 0, nfiles or 0)

    def run_bytes(self, run_id: str) -> int:
        """Bytes under the workdir(s) of MLflow run ``run_id``
        (``users/<user>/<project>/runs/<run_id>/``)."""
        row = self._con.execute("SELECT SUM(bytes) FROM owners WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] or 0

    def files(self, under: str = "", *, unused_before: float | None = None) -> Iterator[FileRecord]:
        """Every indexed file in folder ``under`` (relative, ``""`` = all) and below,
        folder by folder; with ``unused_before``, only those whose atime, mtime and
        ctime are all older than it. Streams from the database: memory stays flat."""
        under = under.strip("/")
        sql = ("SELECT d.path, f.name, f.size, f.mtime, f.atime, f.ctime, f.is_link, d.owner_id "
               "FROM dirs d JOIN files f ON f.dir_id = d.id")
        where, args = [], []
        if under:
            db = db_text(under)
            where.append("(d.path = ? OR (d.path >= ? AND d.path < ?))")
            args += [db, db + "/", db + "0"]
        if unused_before is not None:
            where.append("max(f.atime, f.mtime, f.ctime) < ?")
            args.append(unused_before)
        rows = self._con.execute(f"{sql} WHERE {' AND '.join(where)}" if where else sql, args)
        owners: dict[int, Owner] = {}
        for path, name, size, mtime, atime, ctime, is_link, owner_id in rows:
            owner = owners.get(owner_id)
            if owner is None:
                owner = owners[owner_id] = self._owner(owner_id)
            full = f"{path}/{name}" if path else name
            yield FileRecord(from_db_text(full), size, mtime, atime, ctime, bool(is_link), owner)

    def changed_files(self, stamps_db: Path, *, max_size: int | None = None) -> Iterator[FileRecord]:
        """The regular, non-empty files (up to ``max_size`` bytes) whose size, mtime or
        ctime differ from their row in table ``stamps`` of SQLite database ``stamps_db``,
        or that have no row there: what a per-file cache must look at again.

        ``stamps`` has columns ``path`` (the primary key, as :func:`db_text` gives it),
        ``size``, ``mtime`` and ``ctime``. The comparison runs inside SQLite (one
        key lookup per file), so an unchanged sandbox of a million files costs about
        a second, not a Python loop over every file.
        """
        full = "CASE WHEN d.path = '' THEN f.name ELSE d.path || '/' || f.name END"
        con = self._connect()  # a connection of its own: the attached database stays private to it
        try:
            con.execute("ATTACH DATABASE ? AS stamps_db", (str(stamps_db),))
            rows = con.execute(
                f"SELECT d.path, f.name, f.size, f.mtime, f.atime, f.ctime, d.owner_id FROM dirs d "
                f"JOIN files f ON f.dir_id = d.id LEFT JOIN stamps_db.stamps s ON s.path = {full} "
                f"WHERE f.is_link = 0 AND f.size > 0 AND f.size <= ? AND (s.path IS NULL OR s.size != f.size "
                f"OR s.mtime != f.mtime OR s.ctime != f.ctime)",
                (max_size if max_size is not None else 1 << 62,))
            owners: dict[int, Owner] = {}
            for path, name, size, mtime, atime, ctime, owner_id in rows:
                owner = owners.get(owner_id)
                if owner is None:
                    owner = owners[owner_id] = self._owner(owner_id)
                full_path = f"{path}/{name}" if path else name
                yield FileRecord(from_db_text(full_path), size, mtime, atime, ctime, False, owner)
        finally:
            con.close()

    def file_count(self) -> int:
        """How many files the index holds."""
        return self._con.execute("SELECT SUM(files) FROM owners").fetchone()[0] or 0

    def get(self, path: str) -> FileRecord | None:
        """The record of file ``path`` (relative), or None when the index has no such file."""
        parent, _, name = path.strip("/").rpartition("/")
        row = self._con.execute(
            "SELECT f.size, f.mtime, f.atime, f.ctime, f.is_link, d.owner_id FROM dirs d "
            "JOIN files f ON f.dir_id = d.id WHERE d.path = ? AND f.name = ?",
            (db_text(parent), db_text(name))).fetchone()
        if row is None:
            return None
        return FileRecord(path.strip("/"), *row[:4], bool(row[4]), self._owner(row[5]))

    def folders(self, under: str = "") -> Iterator[str]:
        """Every indexed folder at or below ``under`` (relative paths; ``""`` is the root)."""
        under = under.strip("/")
        if under:
            db = db_text(under)
            rows = self._con.execute("SELECT path FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
                                     (db, db + "/", db + "0"))
        else:
            rows = self._con.execute("SELECT path FROM dirs")
        for (path,) in rows:
            yield from_db_text(path)

    def folder_count(self) -> int:
        """How many folders the index holds, the root included."""
        return self._con.execute("SELECT COUNT(*) FROM dirs").fetchone()[0]

    def info(self) -> dict[str, Any]:
        """Bookkeeping: ``full_scans`` and ``reconciles`` done, ``last_full_scan`` and
        ``last_reconcile`` (epoch seconds), the counts of the last full scan, and
        what :meth:`note` recorded."""
        return {key: value for key, value in self._con.execute("SELECT key, value FROM meta")}

    def note(self, **values: Any) -> None:
        """Record bookkeeping values (a watcher's heartbeat, say), shown by :meth:`info`."""
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
        con.execute("COMMIT")

    def _owner(self, owner_id: int) -> Owner:
        area, user, project, run_id = self._con.execute(
            "SELECT area, user, project, run_id FROM owners WHERE id = ?", (owner_id,)).fetchone()
        return Owner(from_db_text(area), from_db_text(user) or None, from_db_text(project) or None,
                     from_db_text(run_id) or None)
