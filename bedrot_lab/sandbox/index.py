"""The sandbox usage index: every file under the sandbox, its size, times and owner, in SQLite."""

# This module imports only the standard library and the package's stdlib-only modules at
# top level: the full scan runs part of the walk in a helper interpreter started with -I -S,
# which loads them without the package's __init__ (see _HELPER_BOOT).

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import stat as stat_module
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..fsutil import open_folder
from ..statedb import db_text, from_db_text, migrate, schema_version

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

#: the index's file name in the lake's state folder
DB_NAME = "sandbox.db"
#: an MLflow run id, as the folder name under ``users/<user>/<project>/runs/``
RUN_ID = re.compile(r"[0-9a-f]{32}")
#: usage() groupings: ``by`` -> the key columns of each row
USAGE_KEYS: dict[str, tuple[str, ...]] = {
    "area": ("area",),
    "user": ("user",),
    "project": ("user", "project"),
    "run": ("user", "project", "run_id"),
}
#: the kinds of :class:`Change`
CHANGE_KINDS = frozenset({"created", "modified", "deleted", "moved"})

_BATCH = 16384  # rows per executemany: big enough to amortise, small enough to keep memory flat
_ID_STRIDE = 1 << 40  # the scan helper numbers its folders from here, clear of the main process's
_BUSY_MS = 600_000  # a writer waits this long for a full scan elsewhere to finish


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose a folder is, from where it lies under the sandbox.

    ``area`` is ``"users"`` for personal workspaces, else the top folder under
    ``sandbox/`` (a shared area), or ``""`` for files directly in ``sandbox/``.
    ``user``, ``project`` and ``run_id`` come from
    ``users/<user>/<project>/runs/<run id>/...`` as far as the path goes.
    """

    area: str
    user: str | None = None
    project: str | None = None
    run_id: str | None = None


def owner_of(relative_dir: str) -> Owner:
    """The owner of the files in folder ``relative_dir`` (relative to the sandbox root,
    ``"/"``-separated, ``""`` for the root itself).

    >>> owner_of("users/ana/churn/runs/0123456789abcdef0123456789abcdef/ckpt")
    Owner(area='users', user='ana', project='churn', run_id='0123456789abcdef0123456789abcdef')
    >>> owner_of("analysis/q3")
    Owner(area='analysis', user=None, project=None, run_id=None)
    """
    area, user, project, run_id = _owner_key(relative_dir)
    return Owner(area, user or None, project or None, run_id or None)


def _owner_key(relative_dir: str) -> tuple[str, str, str, str]:
    """owner_of() as the four strings stored in the index, "" for none."""
    parts = [part for part in relative_dir.split("/", 5) if part and part != "."]
    if not parts:
        return ("", "", "", "")
    if parts[0] != "users":
        return (parts[0], "", "", "")
    user = parts[1] if len(parts) > 1 else ""
    project = parts[2] if len(parts) > 2 else ""
    run_id = parts[4] if len(parts) > 4 and parts[3] == "runs" and RUN_ID.fullmatch(parts[4]) else ""
    return ("users", user, project, run_id)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file (or link, or other non-folder entry) as the index knows it.

    ``path`` is relative to the sandbox root and ``"/"``-separated. Times are
    seconds since the epoch as ``os.lstat`` gave them when the file was last
    scanned or changed; the watcher does not see reads, so ``atime`` is as fresh
    as the last reconcile. A symbolic link is recorded with its own ``lstat``
    (``is_link`` true) and never followed.
    """

    path: str
    size: int
    mtime: float
    atime: float
    ctime: float
    is_link: bool
    owner: Owner


@dataclass(frozen=True, slots=True)
class Change:
    """One file-system change for :meth:`UsageIndex.apply`.

    ``kind`` is ``"created"``, ``"modified"``, ``"deleted"`` or ``"moved"``;
    ``path`` (and ``dest`` for a move) are relative to the sandbox root. A move
    whose ``dest`` is None or outside the sandbox counts as a deletion.
    """

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


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


# -- text that SQLite can store ---------------------------------------------------------


def _escaped_rows(rows: Iterable[tuple]) -> list[tuple]:
    return [tuple(db_text(v) if isinstance(v, str) else v for v in row) for row in rows]


def _insert_many(con: sqlite3.Connection, table: str, width: int, rows: list[tuple]) -> None:
    sql = f"INSERT INTO {table} VALUES ({','.join('?' * width)})"
    con.execute("SAVEPOINT batch")
    try:
        con.executemany(sql, rows)
    except UnicodeEncodeError:
        con.execute("ROLLBACK TO batch")
        con.executemany(sql, _escaped_rows(rows))
    con.execute("RELEASE batch")


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
_SCAN_DIRS_DDL = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY, parent_id INTEGER, path TEXT NOT NULL, area TEXT NOT NULL,
    user TEXT NOT NULL, project TEXT NOT NULL, run_id TEXT NOT NULL,
    bytes INTEGER NOT NULL, files INTEGER NOT NULL)"""


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


# -- the walk -------------------------------------------------------------------------------

#: a folder still to walk: (relative path, parent id, depth, owner key)
_Pending = tuple[str, "int | None", int, tuple[str, str, str, str]]


class _Walker:
    """Walks folders and streams their files and folder rows into SQLite tables.

    The loop is the cost of a full scan, so it stays tight: one ``scandir`` per
    folder on an open descriptor (so ``DirEntry.stat`` is an ``fstatat`` of the
    name), the folder type from ``d_type``, the owner computed once per folder
    (and only in the top five levels, where it can change), rows batched. Folder
    ids are given in the order folders are listed, so rows reach the tables in
    key order (appends, the cheapest B-tree insert).
    """

    def __init__(self, con: sqlite3.Connection, root: str, files_table: str, dirs_table: str,
                 next_id: int, progress: Callable[[int], None] | None = None):
        self.con = con
        self.prefix = root.rstrip("/") + "/"
        self.files_table = files_table
        self.dirs_table = dirs_table
        self.next_id = next_id
        self.progress = progress
        self.rows: list[tuple] = []
        self.dir_rows: list[tuple] = []
        self.files = self.bytes = self.dirs = self.errors = 0

    def list_dir(self, pending: _Pending, children: list[_Pending]) -> None:
        """Record one folder's files; append its sub-folders to ``children``."""
        rel, parent, depth, okey = pending
        did = self.next_id
        self.next_id += 1
        prefix = self.prefix
        rows_append = self.rows.append
        nbytes = nfiles = 0
        try:
            fd = open_folder(prefix + rel if rel else prefix)
        except OSError:
            self.errors += 1
        else:
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        name = entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                child = f"{rel}/{name}" if rel else name
                                children.append((child, did, depth + 1, okey if depth >= 5 else _owner_key(child)))
                                continue
                            st = entry.stat(follow_symlinks=False)
                        except OSError:  # gone since the listing
                            self.errors += 1
                            continue
                        size = st.st_size
                        nbytes += size
                        nfiles += 1
                        rows_append((did, name, size, st.st_mtime, st.st_atime, st.st_ctime, entry.is_symlink()))
            except OSError:
                self.errors += 1
            finally:
                os.close(fd)
        self.files += nfiles
        self.bytes += nbytes
        self.dirs += 1
        self.dir_rows.append((did, parent, rel, *okey, nbytes, nfiles))
        if len(self.rows) >= _BATCH:
            self.flush()

    def walk(self, pending: list[_Pending]) -> None:
        """Walk every folder below the given ones (depth first, iterative)."""
        stack = list(pending)
        list_dir = self.list_dir
        while stack:
            list_dir(stack.pop(), stack)

    def flush(self) -> None:
        """Write the rows gathered so far."""
        if self.rows:
            _insert_many(self.con, self.files_table, 7, self.rows)
            self.rows.clear()
        if self.dir_rows:
            _insert_many(self.con, self.dirs_table, 9, self.dir_rows)
            self.dir_rows.clear()
        if self.progress is not None:
            self.progress(self.files)


def _claim(claims: str, unit: int) -> bool:
    """Take work unit ``unit`` for this process; False when another process has it."""
    try:
        os.close(os.open(os.path.join(claims, str(unit)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False


def _connect_scratch(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    return con


def _scan_worker(argv: list[str]) -> None:
    """Entry point of the helper process of a full scan (see ``UsageIndex._start_helper``).

    Arguments: sandbox root, shard database, claims folder (holding ``units.json``),
    first folder id, helper number. Walks the units it claims into the shard's
    ``files`` and ``scan_dirs`` tables, and prints its counts as JSON.
    """
    root, shard, claims, first_id, _number = argv
    with open(os.path.join(claims, "units.json")) as handle:
        units = json.load(handle)
    con = _connect_scratch(shard)
    con.execute("BEGIN")
    walker = _Walker(con, root, "files", "scan_dirs", int(first_id))
    done = []
    for number, unit in enumerate(units):
        if _claim(claims, number):
            walker.walk([(rel, parent, depth, tuple(okey)) for rel, parent, depth, okey in unit])
            done.append(number)
    walker.flush()
    con.execute("COMMIT")
    con.close()
    json.dump({"files": walker.files, "bytes": walker.bytes, "dirs": walker.dirs,
               "errors": walker.errors, "units": done}, sys.stdout)


# bare packages for bedrot_lab and bedrot_lab.sandbox (argv[1]: the package's folder), so that
# the helper imports this module and the stdlib-only ones it needs without running any __init__
_HELPER_BOOT = """
import importlib, sys, types
for name, folder in (("bedrot_lab", sys.argv[1]), ("bedrot_lab.sandbox", sys.argv[1] + "/sandbox")):
    package = sys.modules[name] = types.ModuleType(name)
    package.__path__ = [folder]
importlib.import_module("bedrot_lab.sandbox.index")._scan_worker(sys.argv[2:])
"""


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# -- incremental updates ----------------------------------------------------------------


class _Writer:
    """The operations of one write transaction on the index.

    Folder and owner totals are kept as deltas and written by :meth:`flush`, so a
    batch of changes to one folder costs one update of its totals.
    """

    def __init__(self, con: sqlite3.Connection, root: Path):
        self.con = con
        self.prefix = str(root).rstrip("/") + "/"
        self.cache: dict[str, tuple[int, int] | None] = {}
        self.owner_ids: dict[tuple[str, str, str, str], int] = {}
        self.dir_delta: dict[int, list[int]] = {}
        self.owner_delta: dict[int, list[int]] = {}
        self.added = self.updated = self.removed = self.dirs_added = self.dirs_removed = 0

    # reading
    def abspath(self, rel: str) -> str:
        return self.prefix + rel if rel else self.prefix

    def dir_row(self, rel: str) -> tuple[int, int] | None:
        """(id, owner id) of indexed folder ``rel``, or None."""
        try:
            return self.cache[rel]
        except KeyError:
            row = self.con.execute("SELECT id, owner_id FROM dirs WHERE path = ?", (db_text(rel),)).fetchone()
            self.cache[rel] = row
            return row

    def owner_id(self, rel: str) -> int:
        key = tuple(db_text(part) for part in _owner_key(rel))
        found = self.owner_ids.get(key)
        if found is None:
            row = self.con.execute(
                "SELECT id FROM owners WHERE area = ? AND user = ? AND project = ? AND run_id = ?", key).fetchone()
            found = row[0] if row else self.con.execute(
                "INSERT INTO owners (area, user, project, run_id) VALUES (?, ?, ?, ?)", key).lastrowid
            self.owner_ids[key] = found
        return found

    # totals
    def count(self, row: tuple[int, int], nbytes: int, nfiles: int) -> None:
        """Add to the totals of folder ``row`` (id, owner id) and of its owner."""
        for table, key in ((self.dir_delta, row[0]), (self.owner_delta, row[1])):
            delta = table.get(key)
            if delta is None:
                table[key] = [nbytes, nfiles]
            else:
                delta[0] += nbytes
                delta[1] += nfiles

    def count_owner(self, owner: int, nbytes: int, nfiles: int) -> None:
        """Add to the totals of one owner only."""
        delta = self.owner_delta.setdefault(owner, [0, 0])
        delta[0] += nbytes
        delta[1] += nfiles

    def flush(self) -> None:
        """Write the pending folder and owner totals."""
        if self.dir_delta:
            self.con.executemany("UPDATE dirs SET bytes = bytes + ?, files = files + ? WHERE id = ?",
                                 [(b, f, i) for i, (b, f) in self.dir_delta.items() if b or f])
            self.dir_delta.clear()
        if self.owner_delta:
            self.con.executemany("UPDATE owners SET bytes = bytes + ?, files = files + ? WHERE id = ?",
                                 [(b, f, i) for i, (b, f) in self.owner_delta.items() if b or f])
            self.owner_delta.clear()

    # files
    def put_file(self, row: tuple[int, int], name: str, record: tuple) -> None:
        """Insert or update file ``name`` of folder ``row``; record = (size, mtime, atime, ctime, is_link)."""
        dbname = db_text(name)
        old = self.con.execute("SELECT size FROM files WHERE dir_id = ? AND name = ?", (row[0], dbname)).fetchone()
        self.con.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", (row[0], dbname, *record))
        if old is None:
            self.count(row, record[0], 1)
        elif old[0] != record[0]:
            self.count(row, record[0] - old[0], 0)

    def drop_file(self, row: tuple[int, int], name: str) -> bool:
        """Forget file ``name`` of folder ``row``; True if it was indexed."""
        old = self.con.execute("DELETE FROM files WHERE dir_id = ? AND name = ? RETURNING size",
                               (row[0], db_text(name))).fetchone()
        if old is None:
            return False
        self.count(row, -old[0], -1)
        return True

    # folders
    def insert_dir(self, rel: str, parent: int | None) -> tuple[int, int]:
        owner = self.owner_id(rel)
        did = self.con.execute("INSERT INTO dirs (parent_id, path, owner_id) VALUES (?, ?, ?)",
                               (parent, db_text(rel), owner)).lastrowid
        self.cache[rel] = (did, owner)
        self.dirs_added += 1
        return (did, owner)

    def _subtree(self, rel: str) -> list[tuple[int, str, int, int, int]]:
        """(id, path, owner id, bytes, files) of folder ``rel`` and every folder below it."""
        self.flush()
        if not rel:
            return self.con.execute("SELECT id, path, owner_id, bytes, files FROM dirs").fetchall()
        db = db_text(rel)
        return self.con.execute(
            "SELECT id, path, owner_id, bytes, files FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
            (db, db + "/", db + "0")).fetchall()

    def remove_subtree(self, rel: str) -> None:
        """Forget folder ``rel`` and everything below it (the root row itself stays)."""
        rows = self._subtree(rel)
        if not rows:
            return
        self.con.executemany("DELETE FROM files WHERE dir_id = ?", [(r[0],) for r in rows])
        for _did, _path, owner, nbytes, nfiles in rows:
            self.removed += nfiles
            self.count_owner(owner, -nbytes, -nfiles)
        gone = [(r[0],) for r in rows if r[1] != ""]
        self.con.executemany("DELETE FROM dirs WHERE id = ?", gone)
        if not rel:
            self.con.execute("UPDATE dirs SET bytes = 0, files = 0 WHERE path = ''")
        self.dirs_removed += len(gone)
        self.cache.clear()
        self.flush()

    def move_dir(self, src: str, dest: str) -> bool:
        """Move indexed folder ``src`` and its subtree to ``dest`` (owners follow the new
        paths); False when ``src`` is not indexed."""
        if not src or not dest or self.dir_row(src) is None:
            return False
        if src == dest or dest.startswith(src + "/"):
            return True
        parent_rel, _, name = dest.rpartition("/")
        parent = self.ensure_dir(parent_rel)
        if parent is None:
            return False
        if self.dir_row(dest) is not None:
            # the destination is indexed already: read from disk after the moves of its
            # files (the polling observer reports those first), or an empty folder that
            # rename(2) replaced; either way the disk has the answer
            self.remove_subtree(src)
            self.sync_tree(dest)
            return True
        prow = self.dir_row(parent_rel)
        if prow is not None:
            self.drop_file(prow, name)
        rows = self._subtree(src)
        src_db, dest_db = db_text(src), db_text(dest)
        updates = []
        for did, path, owner, nbytes, nfiles in rows:
            new_path = dest_db + path[len(src_db):]
            new_owner = self.owner_id(from_db_text(new_path))
            if new_owner != owner:
                self.count_owner(owner, -nbytes, -nfiles)
                self.count_owner(new_owner, nbytes, nfiles)
            updates.append((new_path, new_owner, did))
        self.con.executemany("UPDATE dirs SET path = ?, owner_id = ? WHERE id = ?", updates)
        self.con.execute("UPDATE dirs SET parent_id = ? WHERE path = ?", (parent[0], dest_db))
        self.cache.clear()
        return True

    def ensure_dir(self, rel: str) -> tuple[int, int] | None:
        """The row of folder ``rel``, reading it and any missing ancestors from disk
        first; None when it is not a folder on disk."""
        row = self.dir_row(rel)
        if row is not None:
            return row
        if not rel:  # the root row is always there; recreate it if it was lost
            return self.insert_dir("", None)
        missing = rel
        while True:
            parent = missing.rpartition("/")[0]
            if self.dir_row(parent) is not None:
                break
            if not parent:
                self.ensure_dir("")
                break
            missing = parent
        if not os.path.isdir(self.abspath(missing)) or os.path.islink(self.abspath(missing)):
            return None
        self.sync_tree(missing)
        return self.dir_row(rel)

    # syncing with the disk
    def forget(self, rel: str) -> None:
        """``rel`` is gone from disk: drop the file or the folder subtree."""
        if rel:
            parent_rel, _, name = rel.rpartition("/")
            prow = self.dir_row(parent_rel)
            if prow is not None and self.drop_file(prow, name):
                self.removed += 1
        if self.dir_row(rel) is not None:
            self.remove_subtree(rel)

    def sync(self, rel: str, tree: bool = False) -> None:
        """Make the index agree with the disk about ``rel``: a file is re-stat'ed, a
        folder that is new to the index (or with ``tree``) is read whole."""
        try:
            st = os.lstat(self.abspath(rel))
        except (FileNotFoundError, NotADirectoryError):
            self.forget(rel)
            return
        except OSError as exc:
            log.debug("cannot stat %s: %s", rel, exc)
            return
        parent_rel, _, name = rel.rpartition("/")
        if stat_module.S_ISDIR(st.st_mode):
            row = self.dir_row(rel)
            if row is None:
                self.ensure_dir(rel)
            elif tree:
                self.sync_tree(rel)
            prow = self.dir_row(parent_rel) if rel else None
            if prow is not None:
                self.drop_file(prow, name)
            return
        if not rel:
            self.forget("")
            return
        if self.dir_row(rel) is not None:
            self.remove_subtree(rel)
        prow = self.ensure_dir(parent_rel)
        if prow is not None:
            self.put_file(prow, name, (st.st_size, st.st_mtime, st.st_atime, st.st_ctime,
                                       int(stat_module.S_ISLNK(st.st_mode))))

    def sync_tree(self, rel: str) -> None:
        """Compare folder ``rel`` and everything below it with the disk, and fix the index."""
        row = self.dir_row(rel)
        if row is None:
            parent = self.ensure_dir(rel.rpartition("/")[0]) if rel else None
            if rel and parent is None:
                return
            row = self.insert_dir(rel, parent[0] if parent else None)
        stack = [(rel, row)]
        while stack:
            self.sync_dir(*stack.pop(), stack)

    def sync_dir(self, rel: str, row: tuple[int, int], stack: list[tuple[str, tuple[int, int]]]) -> None:
        """Compare one folder's files and sub-folders with the disk and fix the index;
        push its sub-folders (path, row) on ``stack``."""
        try:
            fd = open_folder(self.abspath(rel))
        except PermissionError:
            return
        except OSError:
            self.sync(rel)  # gone, or no longer a folder
            return
        disk: dict[str, tuple] = {}
        subdirs: list[str] = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.append(entry.name)
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    disk[entry.name] = (st.st_size, st.st_mtime, st.st_atime, st.st_ctime, int(entry.is_symlink()))
        except OSError:
            return
        finally:
            os.close(fd)
        did = row[0]
        indexed = {from_db_text(name): tuple(rest) for name, *rest in self.con.execute(
            "SELECT name, size, mtime, atime, ctime, is_link FROM files WHERE dir_id = ?", (did,))}
        writes = []
        for name, record in disk.items():
            old = indexed.pop(name, None)
            if old is None:
                self.added += 1
                self.count(row, record[0], 1)
            elif old != record:
                if old[0] != record[0] or old[1] != record[1] or old[3] != record[3] or old[4] != record[4]:
                    self.updated += 1
                self.count(row, record[0] - old[0], 0)
            else:
                continue
            writes.append((did, db_text(name), *record))
        if writes:
            self.con.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", writes)
        if indexed:
            self.con.executemany("DELETE FROM files WHERE dir_id = ? AND name = ?",
                                 [(did, db_text(name)) for name in indexed])
            self.removed += len(indexed)
            self.count(row, -sum(old[0] for old in indexed.values()), -len(indexed))
        children = {from_db_text(path).rpartition("/")[2]: (cid, owner) for cid, path, owner in self.con.execute(
            "SELECT id, path, owner_id FROM dirs WHERE parent_id = ?", (did,))}
        for name in subdirs:
            child = f"{rel}/{name}" if rel else name
            crow = children.pop(name, None)
            if crow is None:
                crow = self.insert_dir(child, did)
            stack.append((child, crow))
        for name in children:
            self.remove_subtree(f"{rel}/{name}" if rel else name)


def _plan(changes: Iterable[Change]) -> list[tuple[str, Any]]:
    """Turn changes into steps: ("sync", {path: read_whole_tree}) runs, cut by ("move", (src, dest)).

    Every change but a folder move becomes a sync of its path(s) from disk, so
    the order within a run does not matter and duplicates collapse. (The moves
    watchdog reports for each child of a moved folder are kept: a sync before
    the move may already have dropped a child from its old place.)
    """
    steps: list[tuple[str, Any]] = []
    syncs: dict[str, bool] = {}
    for change in changes:
        kind, path, dest = change.kind, change.path.strip("/"), change.dest
        if kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {kind!r}; expected one of {sorted(CHANGE_KINDS)}")
        if kind == "moved" and dest is not None:
            dest = dest.strip("/")
            if change.is_dir:
                if syncs:
                    steps.append(("sync", syncs))
                    syncs = {}
                steps.append(("move", (path, dest)))
                continue
            syncs[path] = syncs.get(path, False)
            syncs[dest] = syncs.get(dest, False)
            continue
        tree = kind == "created" and change.is_dir
        syncs[path] = syncs.get(path, False) or tree
    if syncs:
        steps.append(("sync", syncs))
    return steps


def _covered(path: str, trees: set[str]) -> bool:
    while True:
        if path in trees:
            return True
        if not path:
            return False
        path = path.rpartition("/")[0]


# -- the index --------------------------------------------------------------------------


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

        The new tables are built beside the old ones in one write transaction
        and swapped in when it commits, so other writers (a watcher's
        :meth:`apply`) wait for it and then apply what happened meanwhile. The
        top levels are listed first; the folders found there are walked by this
        process and :attr:`workers` helper processes together, each taking the
        next unclaimed unit, the helpers into scratch databases merged at the end.
        ``progress`` is called with the number of files this process has indexed
        so far, about every 16,000 files, and with the total at the end.
        """
        started = time.perf_counter()
        root = str(self.root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"the sandbox root {root} is not a folder")
        con = self._con
        scratch = tempfile.mkdtemp(prefix=f".{self.db_path.name}.scan-", dir=self.db_path.parent)
        shards = [os.path.join(scratch, f"helper{k}.db") for k in range(self.workers)]
        running: list[tuple[int, subprocess.Popen[str]]] = []
        try:
            for k, shard in enumerate(shards):
                _create_shard(shard)
                con.execute(f"ATTACH DATABASE ? AS shard{k}", (shard,))
            con.execute("PRAGMA main.synchronous=OFF")
            con.execute("BEGIN")
            for table in ("files_new", "dirs_new", "owners_new"):
                con.execute(f"DROP TABLE IF EXISTS main.{table}")
            _create_tables(con, "_new")
            con.execute("DROP TABLE IF EXISTS temp.scan_dirs")
            con.execute(_SCAN_DIRS_DDL.format(name="temp.scan_dirs"))

            walker = _Walker(con, root, "main.files_new", "temp.scan_dirs", 1, progress)
            units = self._top_levels(walker)
            done: set[int] = set()
            if units:
                running = [(k, helper) for k, shard in enumerate(shards)
                           if (helper := self._start_helper(shard, scratch, units, k)) is not None]
                for number, unit in enumerate(units):
                    if _claim(scratch, number):
                        walker.walk(unit)
                        done.add(number)
            merged, extra = [], {"files": 0, "bytes": 0, "dirs": 0, "errors": 0}
            for k, helper in running:
                report = self._finish_helper(helper)
                if report is not None:
                    merged.append(k)
                    done.update(report["units"])
                    for key in extra:
                        extra[key] += report[key]
            running = []
            for number, unit in enumerate(units):  # what a failed helper had claimed
                if number not in done:
                    walker.walk(unit)
            walker.flush()
            for k in merged:
                con.execute(f"INSERT INTO main.files_new SELECT * FROM shard{k}.files")
                con.execute(f"INSERT INTO temp.scan_dirs SELECT * FROM shard{k}.scan_dirs")
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
            files, nbytes = walker.files + extra["files"], walker.bytes + extra["bytes"]
            dirs, errors = walker.dirs + extra["dirs"], walker.errors + extra["errors"]
            self._bump(con, "full_scans", last_full_scan=time.time(), files=files, bytes=nbytes)
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.execute("PRAGMA main.synchronous=NORMAL")
            for _, helper in running:
                helper.kill()
                helper.wait()
            for k in range(len(shards)):
                try:
                    con.execute(f"DETACH DATABASE shard{k}")
                except sqlite3.OperationalError:
                    pass
            _remove_tree(scratch)
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if progress is not None:
            progress(files)
        return ScanStats(files, dirs, nbytes, errors, time.perf_counter() - started, len(merged))

    def _top_levels(self, walker: _Walker) -> list[list[_Pending]]:
        """List the top levels breadth first until there are enough folders to share out;
        returns them as work units ([] when the tree was small enough to finish here)."""
        frontier: list[_Pending] = [("", None, 0, ("", "", "", ""))]
        if self.workers <= 0:
            walker.walk(frontier)
            return []
        while frontier and len(frontier) < 16 * (self.workers + 1):
            children: list[_Pending] = []
            for pending in frontier:
                walker.list_dir(pending, children)
            frontier = children
        if not frontier:
            return []
        count = min(len(frontier), 64 * (self.workers + 1))
        return [frontier[i::count] for i in range(count)]

    def _start_helper(self, shard: str, claims: str, units: list[list[_Pending]],
                      number: int) -> subprocess.Popen[str] | None:
        """Start helper ``number`` of a full scan, walking into ``shard``."""
        listing = os.path.join(claims, "units.json")
        if not os.path.exists(listing):
            with open(listing, "w") as handle:
                json.dump(units, handle)
        try:
            return subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _HELPER_BOOT, str(Path(__file__).parents[1]), str(self.root),
                 shard, claims, str((number + 1) * _ID_STRIDE), str(number)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            log.warning("full scan: cannot start a helper process (%s); walking without it", exc)
            return None

    def _finish_helper(self, helper: subprocess.Popen[str]) -> dict[str, Any] | None:
        """The counts of a helper that finished well; None (and a warning) if it failed."""
        out, err = helper.communicate()
        if helper.returncode == 0:
            try:
                return json.loads(out)
            except ValueError:
                pass
        log.warning("full scan: a helper process failed (exit %s); walking its part here: %s",
                    helper.returncode, err.strip()[-500:])
        return None

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
        steps = _plan(changes)
        if not steps:
            return
        con = self._con
        con.execute("BEGIN IMMEDIATE")
        try:
            writer = _Writer(con, self.root)
            for kind, arg in steps:
                if kind == "move":
                    src, dest = arg
                    if writer.move_dir(src, dest):
                        writer.sync(dest)
                    else:
                        writer.sync(src)
                        writer.sync(dest, tree=writer.dir_row(dest) is None)
                    continue
                trees: set[str] = set()
                for path in sorted((p for p, tree in arg.items() if tree), key=len):
                    if not _covered(path, trees):
                        writer.sync(path, tree=True)
                        trees.add(path)
                for path, tree in arg.items():
                    if not tree and not _covered(path, trees):
                        writer.sync(path)
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
        writer = _Writer(con, self.root)
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


def _create_shard(path: str) -> None:
    con = _connect_scratch(path)
    # a plain table: its rows are inserted once more, in order, when merged
    con.execute("CREATE TABLE files (dir_id, name, size, mtime, atime, ctime, is_link)")
    con.execute(_SCAN_DIRS_DDL.format(name="scan_dirs"))
    con.close()


def _remove_tree(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
