"""The lake's own SQLite files: schema versions and their migrations, and text any file name can be stored as."""

# The standard library and bedrot_lab.errors only: the usage index's scan helper (an
# interpreter started with -I -S) imports this module without the rest of the package.

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import overload

from .errors import BedrotLabError

#: one step of a schema: takes a database from version n to n + 1, inside the caller's transaction
Migration = Callable[[sqlite3.Connection], None]


class StateTooNew(BedrotLabError):
    """A state database written by a newer bedrot-lab than this one; the message names the file."""


def schema_version(con: sqlite3.Connection) -> int:
    """The schema version of the database open on ``con`` (SQLite's ``user_version``; 0 when none was set)."""
    return int(con.execute("PRAGMA user_version").fetchone()[0])


def migrate(con: sqlite3.Connection, path: str | os.PathLike[str], migrations: Sequence[Migration]) -> int:
    """Bring the database open on ``con`` (autocommit: ``isolation_level=None``) to version
    ``len(migrations)``; returns the version it had.

    ``migrations[n]`` takes the database from version ``n`` to ``n + 1``. Version 0
    is a new database or one written before it had a version, so the first
    migration must keep tables that already exist as they are (``CREATE TABLE IF
    NOT EXISTS``): an upgrade never drops what an older bedrot-lab recorded. The
    pending migrations and the new version number are one write transaction: a
    migration that raises leaves the database as it was, and two processes opening
    it at once migrate it once. A database of a later version than the migrations
    know is refused with :class:`StateTooNew`, naming ``path``, and left untouched.
    """
    known = len(migrations)
    found = schema_version(con)
    if found == known:
        return found
    _refuse_newer(found, known, path)
    con.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(con)  # another process may have migrated it while we waited
        _refuse_newer(found, known, path)
        for step in migrations[found:]:
            step(con)
        con.execute(f"PRAGMA user_version = {known}")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
    return found


def _refuse_newer(found: int, known: int, path: str | os.PathLike[str]) -> None:
    if found > known:
        raise StateTooNew(f"{os.fspath(path)} was written by a newer bedrot-lab (schema version {found}; "
                          f"this one knows up to {known}): upgrade bedrot-lab to use it")


# -- text that SQLite can store -------------------------------------------------------------
# Names that are not valid UTF-8 reach Python as lone surrogates (U+DC80..U+DCFF), which
# SQLite's UTF-8 text cannot hold. They are stored shifted into the last private-use code
# points (U+10FF80..U+10FFFF) and shifted back when read.

_SHIFT = 0x10FF80 - 0xDC80


@overload
def db_text(text: str) -> str: ...
@overload
def db_text(text: None) -> None: ...
def db_text(text: str | None) -> str | None:
    """``text`` (a path, or text that holds one) as the lake's SQLite files store it:
    bytes that were not UTF-8 shifted into private code points; None stays None."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join(chr(ord(c) + _SHIFT) if "\udc80" <= c <= "\udcff" else c for c in text)


@overload
def from_db_text(text: str) -> str: ...
@overload
def from_db_text(text: None) -> None: ...
def from_db_text(text: str | None) -> str | None:
    """The text that :func:`db_text` stored as ``text``."""
    if text is None or text.isascii() or max(text) < "\U0010ff80":
        return text
    return "".join(chr(ord(c) - _SHIFT) if c >= "\U0010ff80" else c for c in text)
