"""The full scan's walk of the sandbox, shared out between this process and helper processes."""

# This module imports only the standard library and the package's stdlib-only modules at
# top level: the helper is an interpreter started with -I -S, which loads it without the
# package's __init__ (see _HELPER_BOOT).

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..fsutil import open_folder
from ..statedb import db_text
from .records import owner_key

log = logging.getLogger(__name__)

_BATCH = 16384  # rows per executemany: big enough to amortise, small enough to keep memory flat
_ID_STRIDE = 1 << 40  # the scan helper numbers its folders from here, clear of the main process's

#: the folders a walk found, with their owner keys and the bytes and files directly in each
_SCAN_DIRS_DDL = """CREATE TABLE {name} (
    id INTEGER PRIMARY KEY, parent_id INTEGER, path TEXT NOT NULL, area TEXT NOT NULL,
    user TEXT NOT NULL, project TEXT NOT NULL, run_id TEXT NOT NULL,
    bytes INTEGER NOT NULL, files INTEGER NOT NULL)"""

#: a folder still to walk: (relative path, parent id, depth, owner key)
_Pending = tuple[str, "int | None", int, tuple[str, str, str, str]]


class ScanWalk:
    """The walk of one full scan: ``root`` listed into SQLite by this process and
    ``workers`` helper processes together.

    :meth:`attach` creates the helpers' scratch databases in ``scratch`` (an empty
    folder of the walk's own) and attaches them to ``con``, outside a transaction.
    :meth:`run`, inside the caller's write transaction, lists the top levels, shares
    the folders found there out as work units that each process claims in turn, walks
    a failed helper's units here, and leaves the files in table ``files_table`` (the
    index's ``files`` columns) and the folders in ``temp.scan_dirs`` (their owner keys
    and the bytes and files directly in each). Its counts are then in :attr:`files`,
    :attr:`dirs`, :attr:`bytes`, :attr:`errors` (entries it could not read) and
    :attr:`helpers` (the helpers that finished well). :meth:`close`, once the
    transaction is over, stops any helper still running, detaches the scratch
    databases and removes ``scratch``.
    """

    def __init__(self, con: sqlite3.Connection, root: str, files_table: str, scratch: str, workers: int,
                 progress: Callable[[int], None] | None = None):
        self.con = con
        self.root = root
        self.files_table = files_table
        self.scratch = scratch
        self.progress = progress
        self.shards = [os.path.join(scratch, f"helper{k}.db") for k in range(workers)]
        self.running: list[tuple[int, subprocess.Popen[str]]] = []
        self.files = self.dirs = self.bytes = self.errors = self.helpers = 0

    def attach(self) -> None:
        """Create the helpers' scratch databases and attach them as ``shard<k>``."""
        for k, shard in enumerate(self.shards):
            _create_shard(shard)
            self.con.execute(f"ATTACH DATABASE ? AS shard{k}", (shard,))

    def run(self) -> None:
        """Walk the whole tree into ``files_table`` and ``temp.scan_dirs``. ``progress`` is
        called with the number of files this process has listed so far, about every
        16,000 files."""
        con = self.con
        con.execute("DROP TABLE IF EXISTS temp.scan_dirs")
        con.execute(_SCAN_DIRS_DDL.format(name="temp.scan_dirs"))
        walker = _Walker(con, self.root, self.files_table, "temp.scan_dirs", 1, self.progress)
        units = _top_levels(walker, len(self.shards))
        done: set[int] = set()
        if units:
            self.running = [(k, helper) for k, shard in enumerate(self.shards)
                            if (helper := _start_helper(self.root, shard, self.scratch, units, k)) is not None]
            for number, unit in enumerate(units):
                if _claim(self.scratch, number):
                    walker.walk(unit)
                    done.add(number)
        merged, extra = [], {"files": 0, "bytes": 0, "dirs": 0, "errors": 0}
        for k, helper in self.running:
            report = _finish_helper(helper)
            if report is not None:
                merged.append(k)
                done.update(report["units"])
                for key in extra:
                    extra[key] += report[key]
        self.running = []
        for number, unit in enumerate(units):  # what a failed helper had claimed
            if number not in done:
                walker.walk(unit)
        walker.flush()
        for k in merged:
            con.execute(f"INSERT INTO {self.files_table} SELECT * FROM shard{k}.files")
            con.execute(f"INSERT INTO temp.scan_dirs SELECT * FROM shard{k}.scan_dirs")
        self.files, self.bytes = walker.files + extra["files"], walker.bytes + extra["bytes"]
        self.dirs, self.errors = walker.dirs + extra["dirs"], walker.errors + extra["errors"]
        self.helpers = len(merged)

    def close(self) -> None:
        """Stop the helpers still running, detach their databases and remove ``scratch``."""
        import shutil  # here, not at the top: the helper process never needs it

        for _, helper in self.running:
            helper.kill()
            helper.wait()
        for k in range(len(self.shards)):
            try:
                self.con.execute(f"DETACH DATABASE shard{k}")
            except sqlite3.OperationalError:
                pass
        shutil.rmtree(self.scratch, ignore_errors=True)


# -- text that SQLite can store -------------------------------------------------------------


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


# -- the walker -----------------------------------------------------------------------------


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
                                children.append((child, did, depth + 1, okey if depth >= 5 else owner_key(child)))
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


def _top_levels(walker: _Walker, workers: int) -> list[list[_Pending]]:
    """List the top levels breadth first until there are enough folders to share out
    between this process and ``workers`` helpers; returns them as work units ([] when the
    tree was small enough to finish here)."""
    frontier: list[_Pending] = [("", None, 0, ("", "", "", ""))]
    if workers <= 0:
        walker.walk(frontier)
        return []
    while frontier and len(frontier) < 16 * (workers + 1):
        children: list[_Pending] = []
        for pending in frontier:
            walker.list_dir(pending, children)
        frontier = children
    if not frontier:
        return []
    count = min(len(frontier), 64 * (workers + 1))
    return [frontier[i::count] for i in range(count)]


def _claim(claims: str, unit: int) -> bool:
    """Take work unit ``unit`` for this process; False when another process has it."""
    try:
        os.close(os.open(os.path.join(claims, str(unit)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False


# -- helper processes -----------------------------------------------------------------------


def _connect_scratch(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    return con


def _create_shard(path: str) -> None:
    con = _connect_scratch(path)
    # a plain table: its rows are inserted once more, in order, when merged
    con.execute("CREATE TABLE files (dir_id, name, size, mtime, atime, ctime, is_link)")
    con.execute(_SCAN_DIRS_DDL.format(name="scan_dirs"))
    con.close()


def _start_helper(root: str, shard: str, claims: str, units: list[list[_Pending]],
                  number: int) -> subprocess.Popen[str] | None:
    """Start helper ``number`` of a full scan of ``root``, walking into ``shard``."""
    listing = os.path.join(claims, "units.json")
    if not os.path.exists(listing):
        with open(listing, "w") as handle:
            json.dump(units, handle)
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HELPER_BOOT, str(Path(__file__).parents[1]), root,
             shard, claims, str((number + 1) * _ID_STRIDE), str(number)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        log.warning("full scan: cannot start a helper process (%s); walking without it", exc)
        return None


def _finish_helper(helper: subprocess.Popen[str]) -> dict[str, Any] | None:
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


def _scan_worker(argv: list[str]) -> None:
    """Entry point of the helper process of a full scan (see :func:`_start_helper`).

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
importlib.import_module("bedrot_lab.sandbox.walk")._scan_worker(sys.argv[2:])
"""
