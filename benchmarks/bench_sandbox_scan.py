"""The sandbox usage index: a full scan against ``du -sb``, its peak memory, and steady-state latency.

A tree shaped like a sandbox is generated once and reused: ``--files`` small files
(0-4 KiB of data each) in ``--folders`` folders, personal workspaces
``users/<user>/<project>/runs/<run id>/...`` (80 %) and shared areas (20 %), files
spread over the folders with a heavy tail (a few folders hold thousands), a few
symbolic links. It lives under ``--dir`` (default: the temp folder) with a marker
file, ``tree.json``; free disk space and inodes are checked before generating
(1,000,000 files take about 4.3 GB and a couple of minutes to write).

Full scan, ``--repeat`` interleaved rounds (the order flips every round), after one
unmeasured warm-up of each side so both read a warm inode cache:

* the peer: ``du -sb TREE`` as a subprocess, wall time;
* bedrot-lab: ``UsageIndex.full_scan()`` into a fresh database, in a fresh child
  process (this script with ``--child-scan``); the clock runs around
  ``full_scan()`` only (the child's start-up is reported apart). The child's
  ``ru_maxrss`` is the scan process's peak memory; its helper process (the scan
  shares the walk with ``workers`` helpers) is reported apart.

Target: ratio = median(full_scan) / median(du -sb) <= 2.0; peak RSS of the scan
process <= 150 MB.

Steady state: the index is built, a ``SandboxWatcher`` (inotify) runs in a child
process (``--child-watch``, like ``bedrot-lab sandbox watch``), and this process
makes ``--changes`` file changes in waves of ``--wave`` (creates, appends,
deletes, file moves across users and projects, and folder moves) inside
``users/zz-bench-*`` and polls the index as a separate reader would
(``bedrot-lab sandbox usage``): a change counts as reflected when ``total()`` and
``usage("project")`` equal what this script expects and every path the wave
touched reads back right through ``get()``. Its latency is from just after the
change to that moment. Target: p99 <= 1 s, and no full rescan or reconcile
during the run (the database's counters and the watcher's mode are checked).
The bench folders are removed at the end, so the tree stays reusable.

    .venv/bin/python benchmarks/bench_sandbox_scan.py [--files 1000000] [--folders 50000]
        [--repeat 3] [--changes 10000] [--wave 50] [--workers N] [--skip-steady] [--json] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RATIO_TARGET = 2.0
MEMORY_TARGET_MB = 150
LATENCY_TARGET_S = 1.0
TREE_VERSION = 1
EXTENSIONS = ("bin", "json", "csv", "parquet", "ckpt", "log", "tmp", "txt", "npy", "png")
BENCH_AREA = "zz-bench"


# -- the tree ------------------------------------------------------------------------------


def plan_folders(folders: int, rng: random.Random) -> list[str]:
    """Folder paths shaped like a sandbox: users' projects with runs, and shared areas."""
    users = max(2, min(200, folders // 1000))
    out, projects, runs_dirs, runs, generic = ["users"], [], [], [], []
    shared = ["shared", "scratch", "datasets", "tmp"]
    for u in range(users):
        out.append(f"users/user{u:03d}")
        for p in range(rng.randint(1, 6)):
            project = f"users/user{u:03d}/project{p}"
            out += [project, f"{project}/runs"]
            projects.append(project)
            runs_dirs.append(f"{project}/runs")
    out += shared
    n = 0
    while len(out) < folders:
        n += 1
        roll = rng.random()
        if roll < 0.45:
            path = f"{rng.choice(runs_dirs)}/{rng.getrandbits(128):032x}"
            runs.append(path)
        elif roll < 0.70 and runs:
            parent = rng.choice(runs + generic) if generic else rng.choice(runs)
            path = f"{parent}/{rng.choice(('checkpoints', 'artifacts', 'logs', 'epoch'))}{n}"
            generic.append(path)
        elif roll < 0.80:
            path = f"{rng.choice(projects)}/{rng.choice(('data', 'notebooks', 'cache', 'tmp'))}{n}"
            generic.append(path)
        else:
            path = f"{rng.choice(shared)}/d{n}"
            shared.append(path)
        out.append(path)
    return out[:folders]


def generate_tree(root: Path, files: int, folders: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    started = time.perf_counter()
    all_dirs = ["", *plan_folders(folders - 1, rng)]
    for folder in all_dirs[1:]:
        (root / folder).mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    weights = [rng.paretovariate(1.3) for _ in all_dirs]
    counts = [0] * len(all_dirs)
    for i in rng.choices(range(len(all_dirs)), weights=weights, k=files):
        counts[i] += 1
    payload = os.urandom(4096)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    made = links = total = 0
    for folder, count in zip(all_dirs, counts):
        base = os.path.join(root, folder)
        for i in range(count):
            name = f"part-{i:05d}.{EXTENSIONS[i % len(EXTENSIONS)]}"
            if made % 5000 == 4999:  # one in 5,000 is a link
                os.symlink(f"../{name}", os.path.join(base, name))
                total += len(f"../{name}")
                links += 1
            else:
                size = rng.randrange(0, 4097)
                fd = os.open(os.path.join(base, name), flags, 0o644)
                if size:
                    os.write(fd, payload[:size])
                os.close(fd)
                total += size
            made += 1
            if made % 100_000 == 0:
                print(f"  generated {made:,} of {files:,} files", file=sys.stderr, flush=True)
    return {"version": TREE_VERSION, "files": files, "folders": folders, "seed": seed, "bytes": total,
            "links": links, "largest_folder": max(counts), "seconds": round(time.perf_counter() - started, 1)}


def ensure_tree(base: Path, files: int, folders: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The tree for these parameters, generated unless a complete one is there."""
    home = base / f"tree-{files}-{folders}-s{seed}"
    marker = home / "tree.json"
    root = home / "sandbox"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("version") == TREE_VERSION:
            shutil.rmtree(root / "users" / BENCH_AREA, ignore_errors=True)  # an interrupted run's
            for leftover in (root / "users").glob(f"{BENCH_AREA}-*"):
                shutil.rmtree(leftover, ignore_errors=True)
            return root, {**info, "reused": True}
    shutil.rmtree(home, ignore_errors=True)
    base.mkdir(parents=True, exist_ok=True)
    need = files * 4300 + folders * 4096
    usage = shutil.disk_usage(base)
    inodes = os.statvfs(base).f_favail
    if usage.free < need * 1.2 + (1 << 30) or inodes < (files + folders) * 1.1:
        raise SystemExit(f"not enough room in {base}: the tree needs ~{need / 1e9:.1f} GB and "
                         f"{files + folders:,} inodes; {usage.free / 1e9:.1f} GB and {inodes:,} inodes are free")
    print(f"generating {files:,} files in {folders:,} folders under {root} ...", file=sys.stderr, flush=True)
    info = generate_tree(root, files, folders, seed)
    marker.write_text(json.dumps(info))
    return root, {**info, "reused": False}


# -- children -------------------------------------------------------------------------------


def child_scan(root: str, db_dir: str, workers: str) -> None:
    """Run one full scan in this fresh process and print its figures as JSON."""
    from bedrot_lab.sandbox.index import UsageIndex

    index = UsageIndex(Path(db_dir) / "sandbox.db", Path(root), workers=None if workers == "auto" else int(workers))
    started = time.perf_counter()
    stats = index.full_scan()
    seconds = time.perf_counter() - started
    index.close()
    print(json.dumps({
        "seconds": seconds, "files": stats.files, "dirs": stats.dirs, "bytes": stats.bytes,
        "errors": stats.errors, "workers": stats.workers,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "helper_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }))


def child_watch(root: str, db: str) -> None:
    """Run a watcher on an index that is current until stdin says stop; print its figures."""
    from bedrot_lab.sandbox.index import UsageIndex
    from bedrot_lab.sandbox.watcher import SandboxWatcher

    index = UsageIndex(Path(db), Path(root))
    warnings: list[str] = []
    watcher = SandboxWatcher(index, Path(root), catch_up=False, on_warning=warnings.append)
    started = time.perf_counter()
    watcher.start()
    start_seconds = time.perf_counter() - started
    held, folders = watcher.watch_health()
    print(json.dumps({"ready": True, "mode": watcher.mode, "reason": watcher.reason, "watches": held,
                      "folders": folders, "start_seconds": start_seconds}), flush=True)
    sys.stdin.readline()
    watcher.wait_idle(timeout=30)
    report = {"mode": watcher.mode, "reason": watcher.reason, "applied": watcher.applied,
              "batches": watcher.batches, "warnings": warnings,
              "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    watcher.stop()
    index.close()
    print(json.dumps(report), flush=True)


# -- full scan rounds ---------------------------------------------------------------------------


def time_du(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    result = subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True, check=True)
    return time.perf_counter() - started, int(result.stdout.split()[0])


def time_scan(root: Path, workers: str) -> dict[str, Any]:
    db_dir = tempfile.mkdtemp(prefix="bench-sandbox-db-", dir=root.parent)
    try:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--child-scan", str(root), db_dir, workers],
                                capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"the scan child failed:\n{result.stderr}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        figures["process_seconds"] = wall
        return figures
    finally:
        shutil.rmtree(db_dir, ignore_errors=True)


def scan_rounds(root: Path, repeat: int, workers: str) -> dict[str, Any]:
    time_du(root)  # warm-up: inodes and dentries in memory for both sides
    time_scan(root, workers)
    dus, scans = [], []
    for number in range(repeat):
        sides = ("du", "scan") if number % 2 == 0 else ("scan", "du")
        for side in sides:
            if side == "du":
                seconds, du_bytes = time_du(root)
                dus.append(seconds)
            else:
                scans.append(time_scan(root, workers))
        print(f"  round {number + 1}: du -sb {dus[-1]:.3f} s, full_scan {scans[-1]['seconds']:.3f} s "
              f"({scans[-1]['seconds'] / dus[-1]:.2f} x), scan RSS {scans[-1]['maxrss_mb']:.0f} MB, "
              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    du_median = statistics.median(dus)
    scan_median = statistics.median(s["seconds"] for s in scans)
    return {
        "du_seconds": dus, "scan_seconds": [s["seconds"] for s in scans],
        "du_median": du_median, "scan_median": scan_median, "ratio": scan_median / du_median,
        "ratio_target": RATIO_TARGET, "paired_ratios": [s["seconds"] / d for s, d in zip(scans, dus)],
        "scan_process_seconds_median": statistics.median(s["process_seconds"] for s in scans),
        "scan_maxrss_mb": max(s["maxrss_mb"] for s in scans),
        "helper_maxrss_mb": max(s["helper_maxrss_mb"] for s in scans),
        "memory_target_mb": MEMORY_TARGET_MB, "workers": scans[-1]["workers"],
        "files": scans[-1]["files"], "dirs": scans[-1]["dirs"], "bytes": scans[-1]["bytes"],
        "du_bytes": du_bytes,
    }


# -- steady state -------------------------------------------------------------------------------


class Changes:
    """Random file changes in the bench area, with the accounts they should leave."""

    def __init__(self, root: Path, rng: random.Random, users: int = 4, projects: int = 3):
        self.root, self.rng = root, rng
        self.dirs: list[str] = []
        for u in range(users):
            for p in range(projects):
                project = f"users/{BENCH_AREA}-{u}/p{p}"
                for folder in (project, f"{project}/runs/{rng.getrandbits(128):032x}", f"{project}/data"):
                    self.dirs.append(folder)
        self.files: dict[str, int] = {}
        self.counter = 0

    def make_folders(self) -> None:
        for folder in self.dirs:
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def project(path: str) -> tuple[str, str]:
        parts = path.split("/")
        return parts[1], parts[2]

    def one(self, expected: dict[tuple[str, str], list[int]], total: list[int]) -> tuple[str, list[tuple[str, int | None]]]:
        """Make one change; update the expected accounts; return (kind, [(path, size or None)])."""
        rng, root = self.rng, self.root

        def count(path: str, nbytes: int, nfiles: int) -> None:
            row = expected.setdefault(self.project(path), [0, 0])
            row[0] += nbytes
            row[1] += nfiles
            total[0] += nbytes
            total[1] += nfiles

        roll = rng.random()
        if roll < 0.35 or len(self.files) < 50:
            self.counter += 1
            path = f"{rng.choice(self.dirs)}/c{self.counter:06d}.{rng.choice(EXTENSIONS)}"
            size = rng.randrange(0, 4097)
            with open(root / path, "wb") as handle:
                handle.write(os.urandom(size))
            self.files[path] = size
            count(path, size, 1)
            return "create", [(path, size)]
        path = rng.choice(list(self.files))
        if roll < 0.60:
            extra = rng.randrange(1, 1025)
            with open(root / path, "ab") as handle:
                handle.write(os.urandom(extra))
            self.files[path] += extra
            count(path, extra, 0)
            return "append", [(path, self.files[path])]
        if roll < 0.75:
            os.unlink(root / path)
            size = self.files.pop(path)
            count(path, -size, -1)
            return "delete", [(path, None)]
        if roll < 0.95:
            self.counter += 1
            dest = f"{rng.choice(self.dirs)}/m{self.counter:06d}.bin"
            os.rename(root / path, root / dest)
            size = self.files.pop(path)
            self.files[dest] = size
            count(path, -size, -1)
            count(dest, size, 1)
            return "move", [(path, None), (dest, size)]
        # a folder with its files moves to another user's project
        folder = rng.choice([d for d in self.dirs if d.count("/") >= 3])  # data/, a run, a moved one
        inside = {p: s for p, s in self.files.items() if p.startswith(folder + "/")}
        self.counter += 1
        dest = f"{rng.choice([d for d in self.dirs if d.count('/') == 2])}/moved{self.counter:06d}"
        os.rename(root / folder, root / dest)
        touched = []
        self.dirs[self.dirs.index(folder)] = dest
        for p, s in inside.items():
            moved = dest + p[len(folder):]
            del self.files[p]
            self.files[moved] = s
            count(p, -s, -1)
            count(moved, s, 1)
            touched += [(p, None), (moved, s)]
        return "move_dir", touched


def steady_state(root: Path, changes: int, wave: int, seed: int) -> dict[str, Any]:
    from bedrot_lab.sandbox.index import UsageIndex

    rng = random.Random(seed)
    work = Changes(root, rng)
    work.make_folders()
    db_dir = Path(tempfile.mkdtemp(prefix="bench-sandbox-steady-", dir=root.parent))
    reader = UsageIndex(db_dir / "sandbox.db", root)
    scan = reader.full_scan()
    watcher = subprocess.Popen([sys.executable, __file__, "--child-watch", str(root), str(reader.db_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert watcher.stdin is not None and watcher.stdout is not None
    try:
        ready = json.loads(watcher.stdout.readline())
        if ready.get("mode") != "inotify":
            raise SystemExit(f"the watcher is not on inotify: {ready}")
        before = reader.info()
        total = list(reader.total())
        expected = {(row["user"], row["project"]): [row["bytes"], row["files"]]
                    for row in reader.usage("project") if row["user"].startswith(BENCH_AREA)}
        query_times = []
        latencies: list[float] = []
        kinds: dict[str, int] = {}
        timeouts = 0
        started = time.perf_counter()
        while len(latencies) + timeouts < changes:
            made = []
            for _ in range(min(wave, changes - len(latencies) - timeouts)):
                kind, touched = work.one(expected, total)
                made.append((time.perf_counter(), touched))
                kinds[kind] = kinds.get(kind, 0) + 1
            want = {key: value for key, value in expected.items() if value[1] or value[0]}
            paths = {path: size for _, touched in made for path, size in touched}
            deadline = time.perf_counter() + 30
            while True:
                t0 = time.perf_counter()
                ok = list(reader.total()) == total
                if ok:
                    got = {(r["user"], r["project"]): [r["bytes"], r["files"]]
                           for r in reader.usage("project") if r["user"].startswith(BENCH_AREA)}
                    ok = got == want
                if ok:
                    for path, size in paths.items():
                        record = reader.get(path)
                        if (record.size if record else None) != size:
                            ok = False
                            break
                now = time.perf_counter()
                query_times.append(now - t0)
                if ok:
                    latencies += [now - t for t, _ in made]
                    break
                if now > deadline:
                    timeouts += len(made)
                    print("  a wave was not reflected within 30 s", file=sys.stderr)
                    break
                time.sleep(0.002)
            if len(latencies) % 2000 < wave:
                print(f"  {len(latencies):,} changes reflected", file=sys.stderr, flush=True)
        elapsed = time.perf_counter() - started
        after = reader.info()
        usage_seconds = {}
        for by in ("user", "project", "area", "run"):
            t0 = time.perf_counter()
            rows = reader.usage(by)
            usage_seconds[by] = {"seconds": time.perf_counter() - t0, "rows": len(rows)}
        watcher.stdin.write("stop\n")
        watcher.stdin.flush()
        report = json.loads(watcher.stdout.readline())
        watcher.wait()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        verify = None
        try:
            fresh = UsageIndex(db_dir / "fresh.db", root)
            fresh.full_scan()
            verify = {"total_equal": fresh.total() == reader.total(),
                      "usage_equal": all(fresh.usage(by) == reader.usage(by) for by in ("user", "project", "run"))}
            fresh.close()
        finally:
            reader.close()
            for user in (root / "users").glob(f"{BENCH_AREA}-*"):
                shutil.rmtree(user, ignore_errors=True)
            shutil.rmtree(db_dir, ignore_errors=True)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")

    rescans = {key: after.get(key, 0) - before.get(key, 0) for key in ("full_scans", "reconciles")}
    return {
        "changes": len(latencies) + timeouts, "kinds": kinds, "timeouts": timeouts, "wave": wave,
        "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": latencies[-1] if latencies else None,
        "latency_target": LATENCY_TARGET_S, "seconds": elapsed, "changes_per_second": len(latencies) / elapsed,
        "poll_query_ms_median": statistics.median(query_times) * 1000,
        "usage_query": usage_seconds, "rescans": rescans, "watcher": report, "watcher_start": ready,
        "index_files": scan.files, "verified_against_full_scan": verify,
    }


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="files in the tree (default 1,000,000)")
    parser.add_argument("--folders", type=int, default=50_000, help="folders in the tree (default 50,000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved full-scan rounds (default 3)")
    parser.add_argument("--changes", type=int, default=10_000, help="steady-state changes (default 10,000)")
    parser.add_argument("--wave", type=int, default=50, help="changes made between two checks (default 50)")
    parser.add_argument("--workers", default="auto", help="helper processes of the scan (default: auto)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the tree and the changes")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "bedrot-bench-sandbox",
                        help="where the tree is kept between runs")
    parser.add_argument("--skip-steady", action="store_true", help="only the full-scan rounds")
    parser.add_argument("--skip-scan", action="store_true", help="only the steady state")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child-scan", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--child-watch", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_scan:
        child_scan(*args.child_scan)
        return 0
    if args.child_watch:
        child_watch(*args.child_watch)
        return 0

    root, tree = ensure_tree(args.dir, args.files, args.folders, args.seed)
    figures: dict[str, Any] = {"tree": {**tree, "root": str(root)}, "cpus": os.cpu_count(),
                               "load_before": os.getloadavg()[0]}
    if not args.skip_scan:
        print(f"full scan vs du -sb, {args.repeat} rounds:", file=sys.stderr, flush=True)
        figures["scan"] = scan_rounds(root, args.repeat, args.workers)
    if not args.skip_steady:
        print(f"steady state: {args.changes:,} changes in waves of {args.wave}:", file=sys.stderr, flush=True)
        figures["steady"] = steady_state(root, args.changes, args.wave, args.seed)
    figures["load_after"] = os.getloadavg()[0]

    checks = {}
    if "scan" in figures:
        scan = figures["scan"]
        checks["ratio"] = scan["ratio"] <= RATIO_TARGET
        checks["memory"] = scan["scan_maxrss_mb"] <= MEMORY_TARGET_MB
        checks["counts"] = (scan["files"], scan["dirs"], scan["bytes"]) == (tree["files"], tree["folders"],
                                                                            tree["bytes"])
    if "steady" in figures:
        steady = figures["steady"]
        checks["latency"] = steady["p99"] <= LATENCY_TARGET_S and not steady["timeouts"]
        checks["no_rescan"] = not any(steady["rescans"].values()) and steady["watcher"]["mode"] == "inotify"
        checks["exact"] = bool(steady["verified_against_full_scan"]) and all(
            steady["verified_against_full_scan"].values())
    figures["checks"] = checks
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_report(figures)
    return 0 if all(checks.values()) else 1


def print_report(f: dict[str, Any]) -> None:
    tree = f["tree"]
    origin = "reused" if tree["reused"] else f"generated in {tree['seconds']:.0f} s"
    print(f"tree: {tree['files']:,} files ({tree['links']} links) in {tree['folders']:,} folders, "
          f"{tree['bytes'] / 1e9:.2f} GB, largest folder {tree['largest_folder']:,} files ({origin}); "
          f"{f['cpus']} CPUs, load {f['load_before']:.1f} -> {f['load_after']:.1f}")
    if "scan" in f:
        print_scan(f["scan"])
    if "steady" in f:
        print_steady(f["steady"])
    print("checks: " + ", ".join(f"{name} {'ok' if ok else 'FAILED'}" for name, ok in f["checks"].items()))


def print_scan(scan: dict[str, Any]) -> None:
    paired = ", ".join(f"{ratio:.2f}" for ratio in scan["paired_ratios"])
    print(f"full scan: du -sb median {scan['du_median']:.3f} s, full_scan median {scan['scan_median']:.3f} s "
          f"(with {scan['workers']} helper), ratio {scan['ratio']:.2f} (target <= {RATIO_TARGET}); "
          f"paired ratios {paired}")
    print(f"           scan process incl. start-up {scan['scan_process_seconds_median']:.3f} s; peak RSS "
          f"{scan['scan_maxrss_mb']:.0f} MB (target <= {MEMORY_TARGET_MB}), helper {scan['helper_maxrss_mb']:.0f} MB")
    print(f"           indexed {scan['files']:,} files, {scan['dirs']:,} folders, {scan['bytes']:,} bytes "
          f"(du -sb {scan['du_bytes']:,} counts folders too)")


def print_steady(s: dict[str, Any]) -> None:
    w, started = s["watcher"], s["watcher_start"]
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(s["kinds"].items()))
    usage = ", ".join(f"{by} {q['seconds'] * 1000:.1f} ms" for by, q in s["usage_query"].items())
    print(f"steady state: {s['changes']:,} changes ({kinds}) in {s['seconds']:.1f} s; latency p50 "
          f"{s['p50'] * 1000:.0f} ms, p90 {s['p90'] * 1000:.0f} ms, p99 {s['p99'] * 1000:.0f} ms, "
          f"max {s['max'] * 1000:.0f} ms (target p99 <= {LATENCY_TARGET_S} s)")
    print(f"              watcher: {w['mode']} ({started['watches']:,} watches for {started['folders']:,} folders, "
          f"started in {started['start_seconds']:.1f} s), {w['applied']:,} events in {w['batches']} batches, "
          f"RSS {w['maxrss_mb']:.0f} MB; rescans {s['rescans']}; warnings {len(w['warnings'])}")
    print(f"              reader: one poll {s['poll_query_ms_median']:.1f} ms; usage(by) {usage}")
    print(f"              after the run, index == fresh full scan: {s['verified_against_full_scan']}")


if __name__ == "__main__":
    sys.exit(main())
