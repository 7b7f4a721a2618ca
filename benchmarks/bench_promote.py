"""Promoting a 1 GiB run output into 4_curated/ against ``cp`` + ``sha256sum`` of the same file.

A temporary lake (``bedrot_lab.testing.make_lake``) gets a plugin whose experiment
writes an incompressible parquet output of ``--size-mib`` MiB (random int64 and
float64 columns, no compression, no dictionary, so bytes ~ size) straight into
the run's ``outputs/`` with the same JSON record ``ctx.log_output`` writes, and a
contract under ``4_curated/_contracts/``. Two runs (two seeds) are registered as
v1 and v2 of one curated data set with ``bedrot_lab.promotion.register``; v1 is
promoted once, unmeasured. Then, over ``--repeat`` interleaved rounds (the order
flips every round), each round times:

* the peer: ``cp SOURCE DEST`` and ``sha256sum DEST`` as subprocesses, DEST in the
  same folder as the curated file, SOURCE the artifact file of the version the
  round promotes; then ``sync DEST`` (the fsync ``cp`` never does), reported
  apart and not part of the target;
* bedrot-lab: ``promotion.promote`` of the version that is *not* current (v2, v1,
  v2, ...), so every round really writes the whole file, in a fresh child process;
  the clock runs around ``promote()`` only (the child's start-up is reported apart),
  the child's ``ru_maxrss`` is its peak memory, and its peak RSS is reset
  (``/proc/self/clear_refs``) just before promote() to read the growth during it;
  each round also times the CLI ``bedrot-lab promote`` of the version already
  current (it writes nothing): the command's fixed start-up cost.

Before every timed step, in the process that takes it (the parent for the peer,
the promoting child after its start-up): ``os.sync()`` (no dirty pages of the
previous step are written back on the next one's clock), then the source is
read once, so both sides start from a warm page cache (with ``--drop-caches``,
root only, the page cache is dropped instead, so both read the source cold),
then a ``--pause`` of 5 s, so that both sides start as long after the previous
step freed its 1 GiB: in a VM with free page reporting (virtio-balloon) freed
memory goes back to the host within seconds, and writing 1 GiB of page cache
into it again costs host page faults (measured here: a first copy in a fresh
process 2-4 s, the same copy right after 1.5 s).

Targets: ratio = median(promote) / median(cp + sha256sum) <= 1.0; the promoting
process's memory stays flat (peak growth during promote() <= 64 MB, whatever the size).

``--variants`` then times copies of ``promotion.copy_and_hash`` and changed
versions of it (chunk sizes, no fsync, posix_fadvise, a writer thread, a reader
thread with early writeback, ``os.copy_file_range`` with hashing in parallel) on
the same file under the same conditions, interleaved with the peer, to show what
each change would gain; ``--candidate NAME`` (repeatable) applies one of them
(``chunk-1mib``, ``two-threads-1mib``, ``copy-file-range``) to the promotion
module inside the promoting child and times the whole promote() with it as one
more side of every round. Nothing in bedrot_lab's files is changed.

    .venv/bin/python benchmarks/bench_promote.py [--size-mib 1024] [--repeat 3] [--json]
                                                 [--drop-caches] [--pause 5] [--variants] [--candidate NAME]
                                                 [--keep] [--dir DIR]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import hashlib
import json
import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import isolate_environment

TARGET = 1.0
MEMORY_TARGET_MB = 64
EXPERIMENT = "bench-big-output"
OUTPUT = "big_output"
CURATED_PATH = "bench/big_output.parquet"
MODEL = "bench.big_output"
BYTES_PER_ROW = 32  # four 8-byte columns, plain encoded, uncompressed

PLUGIN = '''\
"""The experiment bench_promote.py runs: one large, incompressible parquet output."""

import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

from bedrot_lab import Param, experiment, hookimpl

NAME = {output!r}
ROWS_PER_GROUP = 1 << 20  # 32 MiB row groups


@experiment(
    {name!r},
    params={{
        "size_mib": Param(int, 1024, "size of the output in MiB", min=1),
        "seed": Param(int, 1, "random seed; another seed, other bytes"),
    }},
)
def big_output(ctx):
    """Write ~size_mib MiB of random int64/float64 columns as outputs/<NAME>.parquet.

    Written in row groups straight into the run's (local) artifact folder, so the
    data is never whole in memory and never copied; the record is the one
    ctx.log_output writes (outputs/<NAME>.json, output.<NAME>.* tags).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    uri = urlparse(ctx.recorder.client.get_run(ctx.run_id).info.artifact_uri)
    if uri.scheme not in ("", "file"):
        raise RuntimeError(f"the benchmark needs a local artifact store, not {{uri.scheme}}")
    folder = Path(unquote(uri.path)) / "outputs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{{NAME}}.parquet"
    rows = max(1, (ctx.params["size_mib"] << 20) // {bytes_per_row})
    rng = np.random.default_rng(ctx.params["seed"])
    schema = pa.schema([("id", pa.int64()), ("value", pa.int64()), ("x", pa.float64()), ("y", pa.float64())])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False, write_statistics=True) as writer:
        for start in range(0, rows, ROWS_PER_GROUP):
            n = min(ROWS_PER_GROUP, rows - start)
            writer.write_table(pa.table({{
                "id": np.arange(start, start + n, dtype=np.int64),
                "value": rng.integers(-(1 << 62), 1 << 62, n, dtype=np.int64),
                "x": rng.random(n),
                "y": rng.standard_normal(n),
            }}, schema=schema), row_group_size=n)
    digest, buffer = hashlib.sha256(), bytearray(8 << 20)
    with open(path, "rb", buffering=0) as reader:
        while count := reader.readinto(buffer):
            digest.update(memoryview(buffer)[:count])
    record = {{
        "name": NAME,
        "file": f"outputs/{{NAME}}.parquet",
        "format": "parquet",
        "rows": rows,
        "schema": {{"id": "int64", "value": "int64", "x": "float64", "y": "float64"}},
        "sha256": digest.hexdigest(),
        "bytes": path.stat().st_size,
    }}
    ctx.recorder.log_dict(record, f"outputs/{{NAME}}.json")
    ctx.recorder.set_tags({{f"output.{{NAME}}.file": record["file"], f"output.{{NAME}}.rows": str(rows),
                           f"output.{{NAME}}.sha256": record["sha256"]}})
    ctx.outputs[NAME] = record


@hookimpl
def register_experiments(register):
    register(big_output)


@hookimpl
def validate_promotion(name, version, curated_path, path, tags):
    """A plugin's check, as a real one would do it: the footer's row count is the tagged one."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(path).metadata.num_rows
    return [] if str(rows) == tags.get("rows") else [f"{{rows}} rows, the version says {{tags.get('rows')}}"]
'''

CONTRACT = """\
columns = { id = "int", value = "int", x = "float", y = "float" }
not_null = ["id", "x"]
ranges = { x = [0, 1], id = [0, ""] }
min_rows = 1000
"""




def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field: str) -> float | None:
    """VmRSS or VmHWM of this process from /proc/self/status, in MB (None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux: clear_refs 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5\n")
        return True
    except OSError:
        return False


# -- the promoting child ----------------------------------------------------------------


def child_promote(lake: Path, version: str, settle: Callable[[], None], candidate: str | None = None) -> dict[str, Any]:
    """Open the lake, settle, then promote ``version`` of MODEL with every step of promote()
    timed; ``candidate`` names a change of CANDIDATES applied to the promotion module first."""
    started = time.perf_counter()
    isolate_environment()
    from bedrot_lab import promotion
    from bedrot_lab.lab import Lab

    if candidate:
        CANDIDATES[candidate](promotion)

    lab = Lab.open(lake)
    _ = lab.store  # open the store before the clock, as every command does before its work
    steps: dict[str, list[float]] = {}

    def timed(label: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                steps.setdefault(label, []).append(time.perf_counter() - begun)
        return wrapper

    for name in ("_version", "_recover", "_file_state", "_source_file", "copy_and_hash", "_validate",
                 "_lineage_entry", "_archive", "_write_journal", "_finish"):
        setattr(promotion, name, timed(name, getattr(promotion, name)))
    os.fsync = timed("os.fsync", os.fsync)  # the data file's, the folders', the journal's and lineage's
    startup = time.perf_counter() - started
    settling = time.perf_counter()
    settle()
    settling = time.perf_counter() - settling
    before = maxrss_mb()
    rss_before = _status_mb("VmRSS")
    peak_was_reset = reset_peak()
    begun = time.perf_counter()
    result = promotion.promote(lab, MODEL, version=version, wait=0)
    seconds = time.perf_counter() - begun
    # the growth of the peak RSS during promote() alone: VmHWM since the reset, or ru_maxrss
    if peak_was_reset and rss_before is not None and (high := _status_mb("VmHWM")) is not None:
        growth = high - rss_before
    else:
        growth = maxrss_mb() - before
    fsyncs = sorted(steps.get("os.fsync", []), reverse=True)
    breakdown = {label: sum(values) for label, values in steps.items() if label != "os.fsync"}
    breakdown["fsync of the data file (in copy_and_hash)"] = fsyncs[0] if fsyncs else 0.0
    breakdown[f"other fsyncs ({max(0, len(fsyncs) - 1)}: folders, journal, lineage)"] = sum(fsyncs[1:])
    return {"seconds": seconds, "startup_seconds": startup, "settle_seconds": settling, "status": result.status, "sha256": result.sha256,
            "version": result.version, "maxrss_before_mb": before, "maxrss_mb": maxrss_mb(),
            "growth_mb": growth, "rss_before_mb": rss_before, "steps": breakdown}


def promote_in_child(lake: Path, version: str, source: Path, drop_caches: bool, pause: float,
                     candidate: str | None = None) -> dict[str, Any]:
    """Run :func:`child_promote` in a fresh interpreter, which settles (see :func:`make_settle`)
    after its start-up and before the clock; adds the child's wall time without the settling."""
    started = time.perf_counter()
    command = [sys.executable, __file__, "--child-promote", version, "--lake", str(lake), "--source", str(source),
               "--pause", str(pause), *(["--drop-caches"] if drop_caches else []),
               *(["--candidate-patch", candidate] if candidate else [])]
    process = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"promote v{version} failed:\n{process.stderr}")
    figures = json.loads(process.stdout.strip().splitlines()[-1])
    figures["wall_seconds"] = wall - figures["settle_seconds"]
    if figures["status"] != "promote":
        raise RuntimeError(f"promote v{version} did not write the file: {figures['status']}")
    return figures


def cli_noop(lake: Path, version: str) -> float:
    """Wall time of ``bedrot-lab promote MODEL --version V`` for the current version: the
    command's fixed cost (start-up, store, registry look-ups) without a byte written."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "promote", MODEL,
                              "--version", version], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if process.returncode or "already current" not in process.stdout:
        raise RuntimeError(f"bedrot-lab promote of the current version: {process.stdout}{process.stderr}")
    return seconds


# -- the peer ---------------------------------------------------------------------------


def run_timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - started, output


def peer(source: Path, destination: Path, settle: Callable[[], None]) -> dict[str, Any]:
    """``cp SOURCE DEST && sha256sum DEST``, then ``sync DEST`` (reported apart)."""
    destination.unlink(missing_ok=True)
    settle()
    copy, _ = run_timed(["cp", str(source), str(destination)])
    digest, output = run_timed(["sha256sum", str(destination)])
    flush, _ = run_timed(["sync", str(destination)])
    destination.unlink()
    return {"cp": copy, "sha256sum": digest, "sync": flush, "sha256": output.split()[0]}


# -- cache state ------------------------------------------------------------------------


def make_settle(source: Path, drop_caches: bool, pause: float) -> Callable[[], None]:
    """What runs just before every timed step, in the process that does it: flush dirty
    pages, warm the source (or drop the page cache), then wait ``pause`` seconds.

    The pause matters in a VM with free page reporting (virtio-balloon): memory freed
    by deleting the previous 1 GiB file goes back to the host within seconds, and the
    next 1 GiB of page cache then costs host page faults. Without the pause, a step
    that starts right after a deletion (cp) writes faster than one that starts seconds
    later (a fresh process), which would favour one side."""
    def settle() -> None:
        os.sync()
        if drop_caches:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        else:
            buffer = bytearray(8 << 20)
            with open(source, "rb", buffering=0) as reader:
                while reader.readinto(buffer):
                    pass
        time.sleep(pause)
    return settle


# -- setup ------------------------------------------------------------------------------


def setup_lake(root: Path, size_mib: int) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A lake with the plugin and contract, two runs of the experiment, both registered."""
    from bedrot_lab import promotion
    from bedrot_lab.lab import Lab
    from bedrot_lab.runner import prepare, run
    from bedrot_lab.testing import make_lake

    lake = make_lake(root / "lake")
    (lake / "plugins" / "bench_big_output.py").write_text(
        PLUGIN.format(output=OUTPUT, name=EXPERIMENT, bytes_per_row=BYTES_PER_ROW))
    contract = lake / "4_curated" / "_contracts" / f"{CURATED_PATH}.toml"
    contract.parent.mkdir(parents=True)
    contract.write_text(CONTRACT)
    lab = Lab.open(lake)
    versions = {}
    for seed in (1, 2):
        result = run(lab, prepare(lab, EXPERIMENT, {"size_mib": size_mib, "seed": seed}))
        if result.status != "FINISHED":
            raise RuntimeError(f"the benchmark experiment ended {result.status}: {result.error}")
        registered = promotion.register(lab, result.run_id, OUTPUT, CURATED_PATH, name=MODEL)
        registered["path"] = promotion._source_file(lab, lab.store.client.get_model_version(
            MODEL, registered["version"]))
        versions[registered["version"]] = registered
    return lake, versions


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


# -- variants of copy_and_hash ---------------------------------------------------------
# Copies of bedrot_lab.promotion.copy_and_hash and changed versions of it, timed
# on the same file in the same conditions; nothing in bedrot_lab is changed.

CHUNK = 8 << 20
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WAIT_BEFORE, SYNC_FILE_RANGE_WRITE = 1, 2


def current(source: Path, destination: Path, chunk: int = CHUNK, fsync: bool = True,
            fadvise: tuple[int, ...] = ()) -> tuple[str, int]:
    """bedrot_lab.promotion.copy_and_hash as it is (optionally another chunk size, no fsync, fadvise)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    with open(source, "rb", buffering=0) as reader, open(destination, "wb", buffering=0) as writer:
        for advice in fadvise:
            os.posix_fadvise(reader.fileno(), 0, 0, advice)
        while count := reader.readinto(buffer):
            part = view[:count]
            digest.update(part)
            writer.write(part)
            size += count
        if fsync:
            os.fsync(writer.fileno())
    return digest.hexdigest(), size


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def threaded(source: Path, destination: Path, chunk: int = CHUNK, early_writeback: bool = False,
             read_thread: bool = False, buffers: int = 4) -> tuple[str, int]:
    """Hash in this thread and write in another (hashlib and os.write release the GIL),
    with ``buffers`` chunks in flight; ``read_thread`` reads in a third thread too, so a
    cold read overlaps the hashing. ``early_writeback`` starts the disk write of every
    chunk at once (sync_file_range WRITE) and waits for the chunk before (WAIT_BEFORE),
    so dirty pages stay bounded and the final fsync has little left to write."""
    digest = hashlib.sha256()
    size = 0
    pool = [bytearray(chunk) for _ in range(buffers)]
    free: queue.Queue[int] = queue.Queue()
    read: queue.Queue[tuple[int, int] | None] = queue.Queue()
    full: queue.Queue[tuple[int, int] | None] = queue.Queue()
    for index in range(buffers):
        free.put(index)
    failure: list[BaseException] = []
    reader = os.open(source, os.O_RDONLY)
    writer = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stop = threading.Event()

    def read_one() -> tuple[int, int] | None:
        index = free.get()
        count = os.readv(reader, [pool[index]])
        if not count:
            free.put(index)
            return None
        return index, count

    def read_loop() -> None:
        try:
            while not stop.is_set() and (item := read_one()) is not None:
                read.put(item)
        except BaseException as exc:
            failure.append(exc)
        finally:
            read.put(None)

    def write_loop() -> None:
        offset = 0
        try:
            while (item := full.get()) is not None:
                index, count = item
                _write_all(writer, memoryview(pool[index])[:count])
                if early_writeback and _sync_file_range is not None:
                    _sync_file_range(writer, offset, count, SYNC_FILE_RANGE_WRITE)
                    if offset >= chunk:
                        _sync_file_range(writer, offset - chunk, chunk, SYNC_FILE_RANGE_WAIT_BEFORE)
                free.put(index)
                offset += count
        except BaseException as exc:
            failure.append(exc)
            stop.set()
            while full.get() is not None:
                pass

    threads = [threading.Thread(target=write_loop)] + ([threading.Thread(target=read_loop)] if read_thread else [])
    for thread in threads:
        thread.start()
    try:
        while (item := read.get() if read_thread else read_one()) is not None and not failure:
            index, count = item
            digest.update(memoryview(pool[index])[:count])
            size += count
            full.put((index, count))
    finally:
        stop.set()
        full.put(None)
        if read_thread:
            free.put(0)  # wake the reader if it waits for a buffer
        for thread in threads:
            thread.join()
        os.close(reader)
    try:
        if failure:
            raise failure[0]
        os.fsync(writer)
    finally:
        os.close(writer)
    return digest.hexdigest(), size


def kernel_copy(source: Path, destination: Path, chunk: int = 64 << 20, hash_chunk: int = CHUNK) -> tuple[str, int]:
    """The copy done by the kernel (os.copy_file_range, no bytes through user space) in
    one thread while this one hashes the source; then fsync. The digest is of the
    source's bytes, not of the bytes written (as with cp)."""
    size = source.stat().st_size
    failure: list[BaseException] = []

    def copy_loop() -> None:
        try:
            with open(source, "rb", buffering=0) as reader, open(destination, "wb", buffering=0) as writer:
                offset = 0
                while offset < size:
                    copied = os.copy_file_range(reader.fileno(), writer.fileno(), min(chunk, size - offset))
                    if not copied:
                        break
                    offset += copied
                os.fsync(writer.fileno())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=copy_loop)
    thread.start()
    digest = hashlib.sha256()
    buffer = bytearray(hash_chunk)
    view = memoryview(buffer)
    with open(source, "rb", buffering=0) as reader:
        while count := reader.readinto(buffer):
            digest.update(view[:count])
    thread.join()
    if failure:
        raise failure[0]
    return digest.hexdigest(), size


VARIANTS: dict[str, Callable[[Path, Path], tuple[str, int]]] = {
    "as is (8 MiB, one thread, fsync)": current,
    "as is without the fsync": lambda s, d: current(s, d, fsync=False),
    "256 KiB chunks": lambda s, d: current(s, d, chunk=256 << 10),
    "1 MiB chunks": lambda s, d: current(s, d, chunk=1 << 20),
    "2 MiB chunks": lambda s, d: current(s, d, chunk=2 << 20),
    "32 MiB chunks": lambda s, d: current(s, d, chunk=32 << 20),
    "posix_fadvise SEQUENTIAL": lambda s, d: current(s, d, fadvise=(os.POSIX_FADV_SEQUENTIAL,)),
    "two threads (hash | write)": threaded,
    "two threads, 1 MiB chunks": lambda s, d: threaded(s, d, chunk=1 << 20, buffers=8),
    "three threads + early writeback": lambda s, d: threaded(s, d, read_thread=True, early_writeback=True),
    "copy_file_range + hash thread": kernel_copy,
    "copy_file_range + hash thread, 1 MiB": lambda s, d: kernel_copy(s, d, hash_chunk=1 << 20),
}


def _patched_copy(replacement: Callable[[Path, Path], tuple[str, int]]) -> Callable[[Any], None]:
    """A change of promotion.copy_and_hash: ``replacement`` when there is a destination."""
    def patch(promotion: Any) -> None:
        original = promotion.copy_and_hash

        def copy_and_hash(source: Path, destination: Path | None) -> tuple[str, int]:
            if destination is None:
                return original(source, None)
            return replacement(Path(source), Path(destination))
        promotion.copy_and_hash = copy_and_hash
    return patch


#: changes tried end to end in the promoting child (``--candidate``), bedrot_lab untouched
CANDIDATES: dict[str, Callable[[Any], None]] = {
    "chunk-1mib": lambda promotion: setattr(sys.modules["bedrot_lab.fsutil"], "CHUNK", 1 << 20),
    "two-threads-1mib": _patched_copy(lambda s, d: threaded(s, d, chunk=1 << 20, buffers=8)),
    "copy-file-range": _patched_copy(kernel_copy),
}


def measure_variants(source: Path, expected: str, folder: Path, repeat: int,
                     settle: Callable[[], None]) -> dict[str, Any]:
    """Each variant and the peer, interleaved over ``repeat`` rounds (order flips)."""
    destination = folder / ".bench-variant.tmp"
    names = list(VARIANTS)
    times: dict[str, list[float]] = {name: [] for name in names}
    peers: list[dict[str, Any]] = []
    for round_number in range(repeat):
        order = names if round_number % 2 == 0 else names[::-1]
        peers.append(peer(source, folder / ".bench-peer-copy.tmp", settle))
        for name in order:
            destination.unlink(missing_ok=True)
            settle()
            started = time.perf_counter()
            digest, _ = VARIANTS[name](source, destination)
            times[name].append(time.perf_counter() - started)
            if digest != expected or destination.stat().st_size != source.stat().st_size:
                raise RuntimeError(f"variant {name!r} copied or hashed wrong")
            destination.unlink()
    base = statistics.median(p["cp"] + p["sha256sum"] for p in peers)
    return {"peer_seconds": round(base, 3),
            "seconds": {name: round(statistics.median(values), 3) for name, values in times.items()},
            "ratio": {name: round(statistics.median(values) / base, 3) for name, values in times.items()}}


# -- the benchmark ----------------------------------------------------------------------


def _tail(path: Path, size: int = 1 << 16) -> tuple[int, bytes]:
    """Size and last bytes of a file: a cheap check that the right file landed."""
    with open(path, "rb") as handle:
        length = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, length - size))
        return length, handle.read()


def measure(lake: Path, versions: dict[str, dict[str, Any]], repeat: int, drop_caches: bool,
            pause: float, candidates: list[str]) -> dict[str, Any]:
    curated = lake / "4_curated" / CURATED_PATH
    archive = lake / "5_archive" / "curated" / CURATED_PATH
    peer_destination = curated.parent / ".bench-peer-copy.tmp"
    first, second = sorted(versions, key=int)
    # the first promotion has nothing to archive; not measured
    warmup = promote_in_child(lake, first, versions[first]["path"], drop_caches, pause)
    shutil.rmtree(archive, ignore_errors=True)
    current = first
    peers, promotes, noops = [], [], []
    tried: dict[str, list[dict[str, Any]]] = {name: [] for name in candidates}
    for round_number in range(repeat):
        sides = ["peer", "promote", *candidates]
        for side in sides if round_number % 2 == 0 else sides[::-1]:
            version = second if current == first else first  # never the current one: the file is written
            source = versions[version]["path"]
            if side == "peer":
                figures = peer(source, peer_destination, make_settle(source, drop_caches, pause))
                if figures["sha256"] != versions[version]["sha256"]:
                    raise RuntimeError("cp + sha256sum disagree with the registered digest")
                peers.append(figures)
                continue
            candidate = None if side == "promote" else side
            figures = promote_in_child(lake, version, source, drop_caches, pause, candidate)
            if figures["sha256"] != versions[version]["sha256"] or _tail(curated) != _tail(source):
                raise RuntimeError(f"v{version} was not promoted byte for byte")
            (tried[side] if candidate else promotes).append(figures)
            current = version
            shutil.rmtree(archive, ignore_errors=True)  # the replaced file's hard link: keep the disk flat
        noops.append(cli_noop(lake, current))
    return {"warmup": warmup, "peers": peers, "promotes": promotes, "noops": noops, "candidates": tried}


def summarise(samples: dict[str, Any], size: int, args: argparse.Namespace) -> dict[str, Any]:
    peers, promotes = samples["peers"], samples["promotes"]

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    cp = med([p["cp"] for p in peers])
    digest = med([p["sha256sum"] for p in peers])
    both = med([p["cp"] + p["sha256sum"] for p in peers])
    durable = med([p["cp"] + p["sha256sum"] + p["sync"] for p in peers])
    promote = med([p["seconds"] for p in promotes])
    steps = sorted({label for p in promotes for label in p["steps"]})
    breakdown = {label: med([p["steps"].get(label, 0.0) for p in promotes]) for label in steps}
    breakdown = dict(sorted(breakdown.items(), key=lambda kv: -kv[1]))
    peak = max(p["maxrss_mb"] for p in [*promotes, samples["warmup"]])
    growth = max(p["growth_mb"] for p in [*promotes, samples["warmup"]])
    return {
        "size_mib": round(size / 2**20, 1),
        "bytes": size,
        "repeat": len(promotes),
        "cache": ("page cache dropped" if args.drop_caches else "source warm")
                 + f", dirty pages synced, {args.pause:g} s pause, before every step",
        "rounds_write": "alternating v2, v1, ... (never the current version), replaced file's archive link removed after each",
        "seconds": {
            "cp": cp,
            "sha256sum": digest,
            "cp_plus_sha256sum": both,
            "sync_dest": med([p["sync"] for p in peers]),
            "cp_plus_sha256sum_plus_sync": durable,
            "promote": promote,
            "promote_child_wall": med([p["wall_seconds"] for p in promotes]),
            "promote_child_startup": med([p["startup_seconds"] for p in promotes]),
            "cli_promote_already_current": med(samples["noops"]),
        },
        "promote_steps_seconds": breakdown,
        "per_round": [{"cp": round(a["cp"], 3), "sha256sum": round(a["sha256sum"], 3), "sync": round(a["sync"], 3),
                       "promote": round(b["seconds"], 3), "version": b["version"]}
                      for a, b in zip(peers, promotes)],
        "ratio": round(promote / both, 3),
        "ratio_with_sync": round(promote / durable, 3),
        "target": TARGET,
        "peak_mb": round(peak, 1),
        "peak_growth_during_promote_mb": round(growth, 1),
        "memory_target_mb": MEMORY_TARGET_MB,
        "candidates": {name: {"promote": med([p["seconds"] for p in values]),
                              "copy_and_hash": med([p["steps"]["copy_and_hash"] for p in values]),
                              "ratio": round(statistics.median(p["seconds"] for p in values) / both, 3),
                              "peak_growth_during_promote_mb": round(max(p["growth_mb"] for p in values), 1)}
                       for name, values in samples["candidates"].items()},
    }


def report(result: dict[str, Any]) -> None:
    s = result["seconds"]
    print(f"promote of a {result['size_mib']:,.0f} MiB parquet output; median of {result['repeat']} interleaved "
          f"rounds ({result['cache']}); every round writes the file ({result['rounds_write']})")
    print(f"{'':44} {'seconds':>9}")
    rows = [("cp SOURCE DEST", s["cp"]), ("sha256sum DEST", s["sha256sum"]),
            ("cp + sha256sum", s["cp_plus_sha256sum"]),
            ("  + sync DEST (the fsync cp does not do)", s["cp_plus_sha256sum_plus_sync"]),
            ("bedrot-lab promote() (fresh process)", s["promote"]),
            ("  whole child process (start-up + promote)", s["promote_child_wall"]),
            ("bedrot-lab promote CLI, already current", s["cli_promote_already_current"])]
    for label, value in rows:
        print(f"{label:44} {value:9.3f}")
    print("where promote() spends its time (median s; copy_and_hash includes the data file's fsync):")
    for label, value in result["promote_steps_seconds"].items():
        print(f"  {value:8.3f}  {label}")
    print(f"ratio = promote / (cp + sha256sum) = {result['ratio']:.2f} (target <= {result['target']:.1f}); "
          f"against cp + sha256sum + sync: {result['ratio_with_sync']:.2f}")
    print(f"peak memory of the promoting process = {result['peak_mb']:.0f} MB, of which "
          f"{result['peak_growth_during_promote_mb']:.1f} MB during promote() "
          f"(target <= {result['memory_target_mb']} MB, file {result['size_mib']:,.0f} MiB)")
    if result["candidates"]:
        print("\npromote() with a change applied in the promoting child (bedrot_lab untouched), same rounds:")
        print(f"{'':36} {'seconds':>9} {'copy+hash':>10} {'ratio':>7} {'growth MB':>10}")
        for name, row in result["candidates"].items():
            print(f"{name:36} {row['promote']:9.3f} {row['copy_and_hash']:10.3f} {row['ratio']:7.2f} "
                  f"{row['peak_growth_during_promote_mb']:10.1f}")
    if "variants" in result:
        v = result["variants"]
        print(f"\ncopies of copy_and_hash, same file and conditions, interleaved with the peer "
              f"(cp + sha256sum median {v['peer_seconds']:.3f} s):")
        print(f"{'':36} {'seconds':>9} {'ratio':>7}")
        for name, seconds in v["seconds"].items():
            print(f"{name:36} {seconds:9.3f} {v['ratio'][name]:7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the promoted output (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--drop-caches", action="store_true",
                        help="drop the page cache before every timed step (root), instead of warming the source")
    parser.add_argument("--variants", action="store_true",
                        help="then time changed copies of copy_and_hash against the peer")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake and print where it is")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the temporary lake goes (default: the temp folder)")
    parser.add_argument("--pause", type=float, default=5.0,
                        help="seconds to wait after settling, before every timed step (default 5; see make_settle)")
    parser.add_argument("--candidate", action="append", default=[], choices=list(CANDIDATES),
                        help="also promote with this change applied in the child, as another side of every round "
                             "(repeatable): chunk-1mib, two-threads-1mib, copy-file-range")
    parser.add_argument("--child-promote", help=argparse.SUPPRESS)
    parser.add_argument("--candidate-patch", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_promote:
        settle = make_settle(args.source, args.drop_caches, args.pause)
        print(json.dumps(child_promote(args.lake, args.child_promote, settle, args.candidate_patch)))
        return 0
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")
    if args.drop_caches and os.geteuid() != 0:
        parser.error("--drop-caches needs root (it writes /proc/sys/vm/drop_caches)")
    size = args.size_mib << 20
    # two sources + the curated file + promote's temporary file + the archived link or the peer's copy
    needed = 5 * size + (256 << 20)
    args.dir.mkdir(parents=True, exist_ok=True)
    if free_bytes(args.dir) < needed:
        print(f"{args.dir} has {free_bytes(args.dir) / 2**30:.1f} GiB free; the benchmark needs "
              f"{needed / 2**30:.1f} GiB (use --dir or a smaller --size-mib)", file=sys.stderr)
        return 2

    isolate_environment()
    folder = Path(tempfile.mkdtemp(prefix="bedrot-bench-promote-", dir=args.dir))
    try:
        print(f"writing two {args.size_mib} MiB outputs in {folder} ...", file=sys.stderr)
        lake, versions = setup_lake(folder, args.size_mib)
        actual = versions["1"]["path"].stat().st_size

        samples = measure(lake, versions, args.repeat, args.drop_caches, args.pause, args.candidate)
        result = summarise(samples, actual, args)
        if args.variants:
            source = versions["1"]["path"]
            result["variants"] = measure_variants(source, versions["1"]["sha256"],
                                                  (lake / "4_curated" / CURATED_PATH).parent, args.repeat,
                                                  make_settle(source, args.drop_caches, args.pause))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            report(result)
        failed = result["ratio"] > TARGET or result["peak_growth_during_promote_mb"] > MEMORY_TARGET_MB
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"kept the lake in {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.exit(main())
