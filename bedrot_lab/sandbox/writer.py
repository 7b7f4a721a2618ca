"""Writing to the usage index: one transaction's changes to its files, folders and totals, read from the disk."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat as stat_module
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..fsutil import open_folder
from ..statedb import db_text, from_db_text
from .records import CHANGE_KINDS, owner_key

if TYPE_CHECKING:
    from pathlib import Path

    from .records import Change

log = logging.getLogger(__name__)


class IndexWriter:
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
        key = tuple(db_text(part) for part in owner_key(rel))
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

    # changes
    def apply(self, steps: list[tuple[str, Any]]) -> None:
        """Carry out the steps :func:`plan` made of a batch of changes (totals not flushed)."""
        for kind, arg in steps:
            if kind == "move":
                src, dest = arg
                if self.move_dir(src, dest):
                    self.sync(dest)
                else:
                    self.sync(src)
                    self.sync(dest, tree=self.dir_row(dest) is None)
                continue
            trees: set[str] = set()
            for path in sorted((p for p, tree in arg.items() if tree), key=len):
                if not _covered(path, trees):
                    self.sync(path, tree=True)
                    trees.add(path)
            for path, tree in arg.items():
                if not tree and not _covered(path, trees):
                    self.sync(path)


def plan(changes: Iterable[Change]) -> list[tuple[str, Any]]:
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
