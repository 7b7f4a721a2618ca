"""Files moved between the sandbox and the archive: no link followed, a verified copy across file systems."""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat as stat_module
from collections.abc import Sequence
from contextlib import suppress

from ..fsutil import copy_and_hash_fd, open_folder, open_nofollow

log = logging.getLogger(__name__)

LINK = "a link; links are never followed or moved"


class Refused(Exception):
    """One file left alone; the message is the :class:`~.archive.Skipped` reason."""

    def __init__(self, reason: str, failed: bool = True):
        super().__init__(reason)
        self.failed = failed


# -- paths and descriptors -----------------------------------------------------------------


def path_parts(path: str) -> list[str] | None:
    """The names in relative ``"/"``-separated ``path``; None for one that could leave its
    root (absolute, ``..``, ``.`` or empty names, NUL)."""
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def reach_folder(root: str, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of folder ``root/parts...``, reached one name at a time without
    following links (``root`` itself is resolved). ``create`` makes missing folders.
    Raises Refused when a link or a file is on the way."""
    if create:
        os.makedirs(root, exist_ok=True)
    fd = open_folder(root)
    try:
        for depth, part in enumerate(parts):
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                child = open_folder(part, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = "/".join(parts[:depth + 1])
                if stat_module.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise Refused(f"reached through the link {where}; links are never followed") from None
                raise Refused(f"{where} is not a folder") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(folder: int, name: str) -> tuple[int, os.stat_result]:
    """Open regular file ``name`` in ``folder`` to read, without following a link and, where
    the owner allows it, without touching its atime (which the stale rules read)."""
    st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if stat_module.S_ISLNK(st.st_mode):
        raise Refused(LINK)
    if not stat_module.S_ISREG(st.st_mode):  # never open a device or a FIFO
        raise Refused("not a regular file")
    try:
        fd = open_nofollow(name, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(LINK) from None
        raise
    st = os.fstat(fd)
    if not stat_module.S_ISREG(st.st_mode):
        os.close(fd)
        raise Refused("not a regular file")
    return fd, st


def lexists(name: str, folder: int | None = None) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def changed(now: os.stat_result, before: os.stat_result) -> bool:
    """True unless ``now`` is the same file as ``before``, with the same size and mtime."""
    return (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) != (
        before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns)


# -- moving files -----------------------------------------------------------------------


def move_file(source: int, name: str, fd: int, before: os.stat_result, target: int, target_name: str, *,
              expect: str | None = None, times: tuple[int, int] | None = None,
              mode: int | None = None) -> tuple[str, os.stat_result]:
    """Move file ``name`` in folder ``source`` (open as ``fd``, stat'ed as ``before``) to
    ``target_name`` in folder ``target``; its sha256 and the stat of what arrived.

    On one file system: hash, rename, then confirm the file that arrived is the one
    hashed (else hash what arrived). Across file systems: a verified copy, then the
    source is removed only if it is unchanged. ``expect``: the sha256 the bytes
    must have, or nothing moves. ``times`` (atime, mtime in ns) and ``mode`` are set
    on the moved file (default: the source's).
    """
    times = times or (before.st_atime_ns, before.st_mtime_ns)
    mode = stat_module.S_IMODE(before.st_mode) if mode is None else mode
    if not _cross_device(before.st_dev, target):
        digest = copy_and_hash_fd(fd)[0]
        if changed(os.fstat(fd), before):
            raise Refused("changed while being read; left in place")
        if expect is not None and digest != expect:
            raise Refused("changed after it was checked (sha256); left in place")
        try:
            _move_name(name, target_name, source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            log.debug("%s: another file system after all; copying", name)
        else:
            os.fsync(target)
            os.fsync(source)
            arrived = os.stat(target_name, dir_fd=target, follow_symlinks=False)
            if not changed(arrived, before):
                if (arrived.st_atime_ns, arrived.st_mtime_ns) != times:
                    os.utime(fd, ns=times)
                if stat_module.S_IMODE(arrived.st_mode) != mode:
                    os.fchmod(fd, mode)
                return digest, os.fstat(fd)
            # another file took the name between the hash and the rename: record what moved
            other, arrived = open_regular(target, target_name)
            try:
                digest = copy_and_hash_fd(other)[0]
            finally:
                os.close(other)
            if expect is not None and digest != expect:
                _move_name(target_name, name, target, source)
                raise Refused("changed during the move (sha256); put back")
            return digest, arrived
    digest = _copy_into(fd, target, target_name, times, mode, expect)
    try:
        now = os.stat(name, dir_fd=source, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if now is None or changed(now, before) or changed(os.fstat(fd), before):
        os.unlink(target_name, dir_fd=target)
        os.fsync(target)
        raise Refused("changed while being copied; left in place")
    os.unlink(name, dir_fd=source)
    os.fsync(source)
    return digest, os.stat(target_name, dir_fd=target, follow_symlinks=False)


def _copy_into(fd: int, target: int, name: str, times: tuple[int, int], mode: int, expect: str | None) -> str:
    """Copy open file ``fd`` to ``name`` in folder ``target`` through a temporary file beside
    it: written, fsynced, read back and compared by sha256, mode and times set, then
    renamed into place (never over an existing file). Returns the sha256."""
    temporary = f".bedrot-clean-{secrets.token_hex(6)}.tmp"
    out = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                  dir_fd=target)
    placed = False
    try:
        try:
            digest = copy_and_hash_fd(fd, out)[0]
            if expect is not None and digest != expect:
                raise Refused("changed after it was checked (sha256); left in place")
            if copy_and_hash_fd(out)[0] != digest:
                raise Refused("the copy does not match the original (sha256); original kept")
            os.fchmod(out, mode)
            os.utime(out, ns=times)
            os.fsync(out)
        finally:
            os.close(out)
        _move_name(temporary, name, target, target)
        placed = True
        os.fsync(target)
    finally:
        if not placed:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=target)
    return digest


def _move_name(name: str, new_name: str, folder: int, new_folder: int) -> None:
    """Rename ``name`` in ``folder`` to ``new_name`` in ``new_folder``, never replacing a file
    there. Raises FileExistsError, and OSError EXDEV across file systems."""
    # link + unlink, unlike rename, fails when the new name is taken
    try:
        os.link(name, new_name, src_dir_fd=folder, dst_dir_fd=new_folder, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EEXIST):
            raise
        if lexists(new_name, new_folder):  # hard links not allowed here: check, then rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new_name) from None
        os.rename(name, new_name, src_dir_fd=folder, dst_dir_fd=new_folder)
        return
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        os.unlink(new_name, dir_fd=new_folder)
        raise


def _cross_device(device: int, folder: int) -> bool:
    """True when open folder ``folder`` is on another file system than ``device``."""
    return os.fstat(folder).st_dev != device
