"""Safe file operations: atomic replacement, copy-and-hash, folder fsync and opens that follow no link."""

# Standard library only: the usage index's scan helper (an interpreter started with -I -S)
# imports this module without the rest of the package.

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

StrPath: TypeAlias = str | os.PathLike[str]

#: read, hash and write 1 MiB at a time, while the chunk is still in the CPU cache
CHUNK = 1 << 20

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # NONBLOCK: a FIFO must not hang us
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)


# -- opening ------------------------------------------------------------------------------


def open_nofollow(path: StrPath, *, dir_fd: int | None = None) -> int:
    """A descriptor to read ``path`` (relative to open folder ``dir_fd`` when given).

    A link at the end of ``path`` is not followed (``OSError`` ``ELOOP``), a FIFO
    does not block the open, and the file's atime is left as it was where the
    file's owner allows it (``O_NOATIME``): reading a file must not make it look
    used to the stale rules. The caller checks the file type with ``os.fstat``.
    """
    try:
        return os.open(path, _READ_FLAGS | _NOATIME, dir_fd=dir_fd)
    except PermissionError:  # O_NOATIME needs the file's owner
        if not _NOATIME:
            raise
        return os.open(path, _READ_FLAGS, dir_fd=dir_fd)


def open_folder(path: StrPath, *, dir_fd: int | None = None) -> int:
    """A descriptor of folder ``path`` (relative to open folder ``dir_fd`` when given),
    refusing a link at its end and anything that is not a folder (``OSError``, errno
    ``ELOOP`` or ``ENOTDIR``)."""
    return os.open(path, _FOLDER_FLAGS, dir_fd=dir_fd)


# -- durability ---------------------------------------------------------------------------


def fsync_folder(folder: StrPath) -> None:
    """Make the names in ``folder`` durable: a file created, renamed or removed there
    survives a crash only once its folder has been fsynced."""
    _fsync(folder, os.O_DIRECTORY)


def _fsync(path: StrPath, flags: int = 0) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write every byte of ``data`` to open file ``fd`` (``os.write`` may write fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextmanager
def replacing(path: StrPath, *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; when the block ends it
    is renamed over ``path``, or removed if the block raised.

    A reader sees the old file or the new one, never a part of either; with
    ``durable`` (the default) the new file and then its folder are fsynced, so a
    crash at any moment leaves one or the other on disk too. ``durable=False``
    suits files that are cheap to make again.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        fsync_folder(path.parent)


def atomic_write(path: StrPath, data: bytes) -> None:
    """Replace ``path`` with ``data`` through :func:`replacing`: old bytes or new ones, never
    a mix, even when the process is killed or the machine stops half way."""
    with replacing(path) as temporary:
        temporary.write_bytes(data)


# -- hashing ------------------------------------------------------------------------------


def copy_and_hash_fd(source: int, target: int | None = None) -> tuple[str, int]:
    """sha256 and size of open file ``source``, read from its start, and written to open
    file ``target`` too when one is given (not fsynced: the caller may set its mode
    and times first)."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    os.lseek(source, 0, os.SEEK_SET)
    while count := os.readv(source, [buffer]):
        chunk = view[:count]
        digest.update(chunk)
        if target is not None:
            write_all(target, chunk)
        size += count
    return digest.hexdigest(), size


def copy_and_hash(source: StrPath, destination: StrPath | None = None) -> tuple[str, int]:
    """sha256 and size of file ``source``, copied in the same pass to ``destination``
    (created or truncated, then fsynced) when one is given."""
    reader = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if destination is None:
            return copy_and_hash_fd(reader)
        writer = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            result = copy_and_hash_fd(reader, writer)
            os.fsync(writer)
        finally:
            os.close(writer)
        return result
    finally:
        os.close(reader)


def file_sha256(path: StrPath) -> str:
    """sha256 of the bytes of file ``path``."""
    return copy_and_hash(path)[0]


def folder_bytes(folder: StrPath) -> int:
    """The bytes of the files under ``folder``: their sizes, a link counted as itself and never
    followed; 0 when the folder does not exist. A file removed meanwhile is left out."""
    total = 0
    pending = [os.fspath(folder)]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total
