"""bedrot_lab.fsutil on real files: atomic replacement (also under SIGKILL), copy-and-hash,
folder fsync, and opens that follow no link and leave the atime alone."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from bedrot_lab import fsutil
from bedrot_lab.fsutil import (
    CHUNK,
    atomic_write,
    copy_and_hash,
    copy_and_hash_fd,
    file_sha256,
    fsync_folder,
    open_folder,
    open_nofollow,
    replacing,
    write_all,
)

PACKAGE = Path(fsutil.__file__).parent


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- atomic replacement -------------------------------------------------------------------


def test_atomic_write_creates_and_replaces(tmp_path: Path):
    target = tmp_path / "state.json"
    atomic_write(target, b"first")
    assert target.read_bytes() == b"first"
    inode = target.stat().st_ino
    atomic_write(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert target.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert leftovers(tmp_path) == []


def test_atomic_write_gives_the_mode_a_plain_write_gives(tmp_path: Path):
    atomic_write(tmp_path / "atomic", b"x")
    (tmp_path / "plain").write_bytes(b"x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_a_block_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "lineage.json"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), replacing(target) as temporary:
        temporary.write_bytes(b"half of the n")
        raise RuntimeError("killed by a bug")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_replacing_a_file_written_by_someone_else(tmp_path: Path):
    target = tmp_path / "table.csv"
    for durable in (True, False):
        with replacing(target, durable=durable) as temporary:
            assert temporary.parent == tmp_path and temporary.name.startswith(".table.csv.")
            assert not target.exists() or target.read_text() == "a,b\n"
            temporary.write_text("a,b\n")
        assert target.read_text() == "a,b\n"
    assert leftovers(tmp_path) == []


def test_two_threads_replacing_one_file_never_share_a_temporary(tmp_path: Path):
    target = tmp_path / "digests.json"
    errors: list[BaseException] = []

    def write(letter: bytes) -> None:
        try:
            for _ in range(50):
                atomic_write(target, letter * 1000)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(letter,)) for letter in (b"a", b"b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert target.read_bytes() in (b"a" * 1000, b"b" * 1000)


_WRITER = textwrap.dedent("""
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("fsutil", sys.argv[1])
    fsutil = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fsutil)
    target, size, mode = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "half":  # stop for good half way through the new bytes
        with fsutil.replacing(target) as temporary:
            with open(temporary, "wb") as handle:
                handle.write(b"n" * (size // 2))
                handle.flush()
                print("half", flush=True)
                time.sleep(60)
    else:  # replace it again and again until killed
        print("writing", flush=True)
        number = 0
        while True:
            fsutil.atomic_write(target, bytes([ord("a") + number % 26]) * size)
            number += 1
""")


def _writer(target: Path, size: int, mode: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(PACKAGE / "fsutil.py"), str(target), str(size), mode],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() in ("half", "writing")
    return child


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL


def test_a_writer_killed_half_way_leaves_the_old_file(tmp_path: Path):
    target = tmp_path / "journal.json"
    target.write_bytes(b"o" * 1000)
    _kill(_writer(target, 1000, "half"))
    assert target.read_bytes() == b"o" * 1000
    assert len(leftovers(tmp_path)) == 1  # the dead writer's temporary, beside it, never in its place


def test_a_writer_killed_at_any_moment_leaves_the_old_file_or_the_new_one(tmp_path: Path):
    size = 4 * CHUNK + 7
    target = tmp_path / "lineage.json"
    target.write_bytes(b"o" * size)
    for delay in (0.0, 0.003, 0.01, 0.02, 0.05, 0.1):
        child = _writer(target, size, "loop")
        time.sleep(delay)
        _kill(child)
        data = target.read_bytes()
        assert len(data) == size and data == data[:1] * size, f"a mixed file after {delay} s"
        for name in leftovers(tmp_path):
            (tmp_path / name).unlink()


# -- folders ------------------------------------------------------------------------------


def test_fsync_folder_takes_a_folder_and_nothing_else(tmp_path: Path):
    fsync_folder(tmp_path)
    fsync_folder(str(tmp_path))
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        fsync_folder(tmp_path / "file")
    with pytest.raises(FileNotFoundError):
        fsync_folder(tmp_path / "missing")


def test_open_folder_refuses_a_link_and_a_file(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_bytes(b"x")
    fd = open_folder(tmp_path)
    try:
        os.close(open_folder("real", dir_fd=fd))
        for name in ("link", "file"):
            with pytest.raises(OSError) as refused:
                open_folder(name, dir_fd=fd)
            assert refused.value.errno in (errno.ELOOP, errno.ENOTDIR)
    finally:
        os.close(fd)


# -- reading without following links or touching the atime ------------------------------------


def test_open_nofollow_reads_a_file_and_refuses_a_link(tmp_path: Path):
    (tmp_path / "data.csv").write_bytes(b"a,b\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "data.csv")
    fd = open_nofollow(tmp_path / "data.csv")
    try:
        assert os.read(fd, 100) == b"a,b\n"
    finally:
        os.close(fd)
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_nofollow("data.csv", dir_fd=folder)
        os.close(fd)
        with pytest.raises(OSError) as link:
            open_nofollow("link.csv", dir_fd=folder)
    finally:
        os.close(folder)
    assert link.value.errno == errno.ELOOP


def test_open_nofollow_does_not_hang_on_a_fifo(tmp_path: Path):
    os.mkfifo(tmp_path / "pipe")
    fd = open_nofollow(tmp_path / "pipe")  # no writer: a blocking open would wait forever
    try:
        assert not os.path.isfile(tmp_path / "pipe")
    finally:
        os.close(fd)


def test_open_nofollow_leaves_the_atime_alone(tmp_path: Path):
    path = tmp_path / "old.csv"
    path.write_bytes(b"x" * 100)
    long_ago = time.time_ns() - 200 * 86400 * 10**9
    os.utime(path, ns=(long_ago, long_ago))
    fd = open_nofollow(path)
    try:
        assert os.read(fd, 1000) == b"x" * 100
    finally:
        os.close(fd)
    assert path.stat().st_atime_ns == long_ago
    path.read_bytes()  # the control: a plain read does refresh an atime this old (relatime)
    if path.stat().st_atime_ns == long_ago:
        pytest.skip("this file system does not record reads in the atime, so the test proves nothing")


def test_open_nofollow_opens_files_of_other_owners_without_noatime(tmp_path: Path, monkeypatch):
    if not getattr(os, "O_NOATIME", 0):
        pytest.skip("no O_NOATIME here")
    path = tmp_path / "theirs.csv"
    path.write_bytes(b"x")
    real_open = os.open
    flags_seen = []

    def open_as_non_owner(name, flags, *args, **kwargs):
        flags_seen.append(flags)
        if flags & os.O_NOATIME:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_as_non_owner)
    os.close(open_nofollow(path))
    assert [bool(flags & os.O_NOATIME) for flags in flags_seen] == [True, False]
    assert all(flags & os.O_NOFOLLOW for flags in flags_seen)


# -- copy and hash ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 123])
def test_copy_and_hash_copies_and_hashes_in_one_pass(tmp_path: Path, size: int):
    data = os.urandom(size)
    source, copy = tmp_path / "source", tmp_path / "copy"
    source.write_bytes(data)
    copy.write_bytes(b"a longer file that was there before " * 100_000)
    expected = (hashlib.sha256(data).hexdigest(), size)
    assert copy_and_hash(source, copy) == expected
    assert copy.read_bytes() == data  # truncated, not overwritten in place
    assert copy_and_hash(source) == expected
    assert file_sha256(source) == expected[0]


def test_copy_and_hash_fd_reads_from_the_start_and_writes_every_byte(tmp_path: Path, monkeypatch):
    data = os.urandom(CHUNK + 5)
    (tmp_path / "source").write_bytes(data)
    source = os.open(tmp_path / "source", os.O_RDONLY)
    target = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, chunk: real_write(fd, chunk[:1000]))  # short writes
    try:
        os.lseek(source, 100, os.SEEK_SET)
        assert copy_and_hash_fd(source, target) == (hashlib.sha256(data).hexdigest(), len(data))
        assert copy_and_hash_fd(source) == (hashlib.sha256(data).hexdigest(), len(data))
    finally:
        os.close(source)
        os.close(target)
    assert (tmp_path / "target").read_bytes() == data


def test_write_all_writes_past_short_writes(tmp_path: Path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, chunk: real_write(fd, chunk[:3]))
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, b"0123456789")
    finally:
        os.close(fd)
    assert (tmp_path / "out").read_bytes() == b"0123456789"
