"""Runs per second through a tracking server on PostgreSQL against the embedded SQLite store,
with 1, 4 and 8 client processes at once.

Each run is bedrot-lab's own: a plugin experiment in a lake's plugins/ folder, run through
``bedrot_lab.runner`` by a client process that opened its ``Lab`` once (as the daemon or a sweep
does), logging 20 params, 100 metric points (10 metrics x 10 steps) and 2 small text artifacts.

* server: ``bedrot-lab server start`` (MLflow's server, its default workers unless ``--workers``
  says otherwise) on a new PostgreSQL database, clients with ``MLFLOW_TRACKING_URI`` at it;
* sqlite: the lake's own SQLite store, the same clients.

Per case (store x clients) and round: runs/s (all runs / wall time from the common start to
the last run's end), p50 and p99 time per run, CPU seconds per run of the clients, of the
server's process tree and of its PostgreSQL backends (psutil), and the case's runs counted
afterwards (every one FINISHED with its 20 params, 10 metrics and 2 artifacts). Cases run in
a rotated order each round; figures are medians over the rounds (times per run pooled).

Then, with ``--latency``: one REST call's time on a new and on a reused connection (curl,
http.client, requests, MLflow's client), and the REST calls one run makes, read from the
server's access log.

Target: zero failed or lost runs; through the server, 4 clients >= 1.5 x the runs/s of one.

    BEDROT_TEST_POSTGRES=postgresql+psycopg://... .venv/bin/python benchmarks/bench_server.py \\
        [--clients 1,4,8] [--runs 20] [--repeat 3] [--workers default,4] [--latency] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import isolate_environment

TARGET = 1.5
EXPERIMENT = "bench-server"
DECLARED = 17  # with batch, worker and index: 20 params per run
METRICS, STEPS = 10, 10

PLUGIN = f'''\
"""The experiment bench_server runs: 20 params, 100 metric points, 2 artifacts."""

from bedrot_lab import experiment, hookimpl


@experiment("{EXPERIMENT}", params={{"batch": "", "worker": 0, "index": 0,
                                     **{{f"p{{n:02d}}": n for n in range({DECLARED})}}}})
def bench_server(ctx):
    """{METRICS} metrics at {STEPS} steps, and two small text files."""
    for step in range({STEPS}):
        ctx.log_metrics({{f"m{{k}}": step * 10 + k for k in range({METRICS})}}, step=step)
    ctx.log_text(f"worker {{ctx.params['worker']}} run {{ctx.params['index']}}\\n", "notes/run.txt")
    ctx.log_text("second\\n", "notes/second.txt")


@hookimpl
def register_experiments(register):
    register(bench_server)
'''


# -- the client processes --------------------------------------------------------------------

def client(lake: str, env: Mapping[str, str], case: str, worker: int, runs: int, barrier: Any, out: Any) -> None:
    """One client: opens the lab, waits for the others, runs ``runs`` runs, reports their times."""
    import resource

    os.environ.update(env)
    if "MLFLOW_TRACKING_URI" not in env:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    isolate_quiet()
    from bedrot_lab.lab import Lab
    from bedrot_lab.runner import prepare, run

    lab = Lab.open(lake)
    lab.store.experiment_id(EXPERIMENT, lab.experiment(EXPERIMENT))  # opened before the clock starts
    barrier.wait()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    started = time.time()
    times, failures = [], []
    for index in range(runs):
        begun = time.perf_counter()
        try:
            result = run(lab, prepare(lab, EXPERIMENT, {"batch": case, "worker": worker, "index": index}))
            if result.status != "FINISHED":
                failures.append(f"{result.status}: {result.error}")
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        times.append(time.perf_counter() - begun)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put({"times": times, "failures": failures, "started": started, "ended": time.time(),
             "cpu": usage.ru_utime + usage.ru_stime - cpu})


def isolate_quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for noisy in ("alembic", "mlflow", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


# -- the stores ------------------------------------------------------------------------------

def make_bench_lake(root: Path) -> Path:
    from bedrot_lab.testing import make_lake

    lake = make_lake(root)
    (lake / "plugins" / "bench_server.py").write_text(textwrap.dedent(PLUGIN))
    return lake


def bedrot(lake: Path, *args: str, env: Mapping[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bedrot_lab", "--lake", str(lake), *args], capture_output=True,
                          text=True, env=dict(env or os.environ), timeout=timeout, check=False)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Store:
    """Where a case's clients record: a lake, its environment, and the server's pid if any."""

    label: str
    lake: Path
    env: dict[str, str]
    uri: str
    server_pid: int | None = None
    database: str | None = None
    cases: dict[str, Any] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.lake / ".bedrot-lab" / "server" / "server.log"


@contextmanager
def postgres_database(admin_uri: str) -> Iterator[str]:
    """A new database in the cluster of ``admin_uri``, dropped afterwards: its URI."""
    import psycopg

    name = f"bench_server_{uuid.uuid4().hex[:10]}"
    plain = admin_uri.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_uri.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'DROP DATABASE IF EXISTS "{name}_auth" WITH (FORCE)')


@contextmanager
def server(folder: Path, admin_uri: str, workers: str) -> Iterator[Store]:
    """``bedrot-lab server start`` on a new database (``workers`` "default": no --workers flag),
    always stopped afterwards."""
    lake = make_bench_lake(folder / f"lake-server-{workers}")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with postgres_database(admin_uri) as database:
        port = free_port()
        flags = ["--port", str(port), "--backend-store-uri", database]
        if workers != "default":
            flags += ["--workers", workers]
        started = bedrot(lake, "server", "start", *flags, env=env)
        try:
            if started.returncode != 0:
                raise RuntimeError(f"server start failed:\n{started.stdout}\n{started.stderr}")
            record = json.loads((lake / ".bedrot-lab" / "server" / "server.json").read_text())
            url = f"http://127.0.0.1:{port}"
            label = f"server w={record.get('workers', workers)}" + (" (default)" if workers == "default" else "")
            yield Store(label, lake, {**env, "MLFLOW_TRACKING_URI": url}, url, record["pid"],
                        database.rsplit("/", 1)[1])
        finally:
            bedrot(lake, "server", "stop", "--timeout", "20", env=env, timeout=120)


def sqlite_store(folder: Path) -> Store:
    from bedrot_lab.config import default_tracking_uri, load_settings
    from bedrot_lab.tracking import open_store

    lake = make_bench_lake(folder / "lake-sqlite")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    open_store(load_settings(lake))  # created and migrated before any client starts
    return Store("sqlite", lake, env, default_tracking_uri(lake))


# -- CPU of the server's processes -------------------------------------------------------------

def tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds so far of process ``pid`` and its descendants, by pid."""
    import psutil

    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    return {p.pid: _cpu(p) for p in processes}


def backends_cpu(admin_uri: str, database: str | None) -> dict[int, float]:
    """CPU seconds so far of the PostgreSQL backends connected to ``database``, by pid."""
    import psutil
    import psycopg

    if database is None:
        return {}
    with psycopg.connect(admin_uri.replace("+psycopg", ""), autocommit=True) as connection:
        pids = [row[0] for row in connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))]
    found = {}
    for pid in pids:
        try:
            found[pid] = _cpu(psutil.Process(pid))
        except psutil.Error:
            continue
    return found


def _cpu(process: Any) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except Exception:
        return 0.0


def used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds used between two samples (a process new in ``after`` counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


# -- one case ----------------------------------------------------------------------------------

def run_case(store: Store, clients: int, runs: int, case: str, admin_uri: str) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(clients + 1, timeout=600), context.Queue()
    processes = [context.Process(target=client, args=(str(store.lake), store.env, case, n, runs, barrier, out))
                 for n in range(clients)]
    for process in processes:
        process.start()
    try:
        barrier.wait()  # every client has its lab open
        server_before, pg_before = tree_cpu(store.server_pid), backends_cpu(admin_uri, store.database)
        reports = [out.get(timeout=1800) for _ in processes]
        server_after, pg_after = tree_cpu(store.server_pid), backends_cpu(admin_uri, store.database)
    finally:
        for process in processes:
            process.join(timeout=60)
            process.kill()
    total = clients * runs
    wall = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    failures = [f for r in reports for f in r["failures"]]
    lost = count_missing(store.uri, case, clients, runs)
    return {
        "runs_per_s": total / wall,
        "times": [t for r in reports for t in r["times"]],
        "client_cpu_per_run": sum(r["cpu"] for r in reports) / total,
        "server_cpu_per_run": used(server_before, server_after) / total,
        "postgres_cpu_per_run": used(pg_before, pg_after) / total,
        "failed": len(failures), "lost": lost, "failures": failures[:3],
    }


def count_missing(uri: str, case: str, clients: int, runs: int) -> int:
    """The runs of ``case`` that are not all there: missing, not FINISHED, or short of a param,
    a metric or an artifact."""
    from mlflow import MlflowClient

    mlflow = MlflowClient(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    found = mlflow.search_runs([experiment.experiment_id], f"params.batch = '{case}'", max_results=5000)
    complete = 0
    for run in found:
        metrics = [k for k in run.data.metrics if re.fullmatch(r"m\d+", k)]
        if (run.info.status == "FINISHED" and len(run.data.params) == DECLARED + 3 and len(metrics) == METRICS
                and len(mlflow.list_artifacts(run.info.run_id, "notes")) == 2):
            complete += 1
    return clients * runs - complete


# -- where a call's time goes ------------------------------------------------------------------

def latency(store: Store) -> dict[str, Any]:
    """One REST call's median ms on a new and a reused connection, by client; and the REST
    calls of one run, counted in the server's access log."""
    import http.client

    import requests
    from mlflow import MlflowClient

    mlflow = MlflowClient(store.uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    run_id = mlflow.search_runs([experiment.experiment_id], max_results=1)[0].info.run_id
    host, port = store.uri.removeprefix("http://").split(":")
    path = f"/api/2.0/mlflow/runs/get?run_id={run_id}"

    def median_ms(call: Any, n: int = 30) -> float:
        call()
        times = []
        for _ in range(n):
            begun = time.perf_counter()
            call()
            times.append((time.perf_counter() - begun) * 1000)
        return round(statistics.median(times), 1)

    def with_http_client(url_path: str, reuse: bool) -> Any:
        kept = http.client.HTTPConnection(host, int(port))

        def call() -> None:
            connection = kept if reuse else http.client.HTTPConnection(host, int(port))
            connection.request("GET", url_path)
            connection.getresponse().read()
            if not reuse:
                connection.close()
        return call

    session = requests.Session()
    figures: dict[str, Any] = {}
    for name, url_path in (("/health", "/health"), ("runs/get", path)):
        figures[f"http.client new connection, {name}"] = median_ms(with_http_client(url_path, False))
        figures[f"http.client reused connection, {name}"] = median_ms(with_http_client(url_path, True))
        figures[f"requests.Session, {name}"] = median_ms(lambda u=url_path: session.get(store.uri + u).content)
    if shutil.which("curl"):
        curl = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{time_total}\\n",
                               store.uri + path, store.uri + path], capture_output=True, text=True, check=False)
        first, second = (float(x) * 1000 for x in curl.stdout.split())
        figures["curl new connection, runs/get"] = round(first, 1)
        figures["curl reused connection, runs/get"] = round(second, 1)
    figures["MlflowClient.get_run"] = median_ms(lambda: mlflow.get_run(run_id))

    before = store.log.read_text(errors="replace").count("HTTP/1.1\"")
    case = f"latency-{uuid.uuid4().hex[:6]}"
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(1, timeout=600), context.Queue()
    process = context.Process(target=client, args=(str(store.lake), store.env, case, 0, 10, barrier, out))
    process.start()
    report = out.get(timeout=600)
    process.join(timeout=60)
    time.sleep(1)  # the access log is written after the response
    calls = [line for line in store.log.read_text(errors="replace").splitlines()[-400:] if "HTTP/1.1\"" in line]
    after = store.log.read_text(errors="replace").count("HTTP/1.1\"")
    # the client's start (opening the store, the experiment) is not a run's: subtract a 0-run client's calls
    process = context.Process(target=client, args=(str(store.lake), store.env, case, 0, 0, barrier, out))
    process.start()
    out.get(timeout=600)
    process.join(timeout=60)
    time.sleep(1)
    opening = store.log.read_text(errors="replace").count("HTTP/1.1\"") - after
    figures["REST calls per run"] = round((after - before - opening) / 10, 1)
    figures["the last 6 calls"] = [re.sub(r".*\"(\w+) (/[^ ?]*).*", r"\1 \2", line).replace("/api/2.0/", "")
                                  for line in calls[-6:]]
    figures["ms per run, one client"] = round(statistics.median(report["times"]) * 1000, 1)
    return figures


# -- the report --------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    times = [t for r in results for t in r["times"]]
    return {
        "runs_per_s": round(statistics.median(r["runs_per_s"] for r in results), 2),
        "runs_per_s_each_round": [round(r["runs_per_s"], 2) for r in results],
        "p50_ms": round(percentile(times, 0.50) * 1000, 1),
        "p99_ms": round(percentile(times, 0.99) * 1000, 1),
        "client_cpu_ms_per_run": round(statistics.median(r["client_cpu_per_run"] for r in results) * 1000, 1),
        "server_cpu_ms_per_run": round(statistics.median(r["server_cpu_per_run"] for r in results) * 1000, 1),
        "postgres_cpu_ms_per_run": round(statistics.median(r["postgres_cpu_per_run"] for r in results) * 1000, 1),
        "failed": sum(r["failed"] for r in results),
        "lost": sum(r["lost"] for r in results),
        "failures": [f for r in results for f in r["failures"]][:3],
    }


def print_table(stores: list[Store], clients: list[int]) -> None:
    header = (f"{'store':<22} {'clients':>7} {'runs/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'client CPU':>10} "
              f"{'server CPU':>10} {'pg CPU':>7} {'failed':>6} {'lost':>5}")
    print(header + "\n" + "-" * len(header))
    for store in stores:
        for n in clients:
            s = store.cases[n]
            print(f"{store.label:<22} {n:>7} {s['runs_per_s']:>7.2f} {s['p50_ms']:>7.0f} {s['p99_ms']:>7.0f} "
                  f"{s['client_cpu_ms_per_run']:>8.0f}ms {s['server_cpu_ms_per_run']:>8.0f}ms "
                  f"{s['postgres_cpu_ms_per_run']:>5.0f}ms {s['failed']:>6} {s['lost']:>5}")
    print("(CPU: milliseconds per run, medians over the rounds; runs/s: median over the rounds)")


def ratios(stores: list[Store], clients: list[int]) -> dict[str, float]:
    found = {}
    for store in stores:
        one = store.cases.get(1)
        for n in clients:
            if one and n != 1:
                found[f"{store.label}: {n} clients / 1"] = round(store.cases[n]["runs_per_s"] / one["runs_per_s"], 2)
    sqlite = next((s for s in stores if s.label == "sqlite"), None)
    for store in stores:
        if sqlite is not None and store is not sqlite:
            for n in clients:
                found[f"{store.label} / sqlite, {n} clients"] = round(
                    store.cases[n]["runs_per_s"] / sqlite.cases[n]["runs_per_s"], 2)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,8", help="client processes per case (default 1,4,8)")
    parser.add_argument("--runs", type=int, default=20, help="runs per client per case (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every case (default 3)")
    parser.add_argument("--workers", default="default",
                        help="server workers to compare, e.g. default,1,4 ('default': server start's own)")
    parser.add_argument("--no-sqlite", action="store_true", help="leave out the embedded store")
    parser.add_argument("--latency", action="store_true", help="also time single calls and count calls per run")
    parser.add_argument("--postgres", default=os.environ.get("BEDROT_TEST_POSTGRES"),
                        help="a PostgreSQL URI of a user who may create databases (default $BEDROT_TEST_POSTGRES)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if not args.postgres:
        parser.error("needs PostgreSQL: --postgres URI or BEDROT_TEST_POSTGRES (`source .ci/postgres.sh && "
                     "start_postgres` starts a throw-away cluster)")
    isolate_environment()
    os.environ["BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    clients = [int(n) for n in args.clients.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-server-"))
    try:
        with _servers(folder, args.postgres, args.workers.split(",")) as stores:
            if not args.no_sqlite:
                stores.append(sqlite_store(folder))
            cases = [(store, n) for store in stores for n in clients]
            results: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for warm in stores:  # one unmeasured run per store: experiment, caches, pools
                run_case(warm, 1, 1, "warm-up", args.postgres)
            for round_number in range(args.repeat):
                shift = round_number % len(cases)
                for store, n in cases[shift:] + cases[:shift]:
                    case = f"r{round_number}-c{n}"
                    result = run_case(store, n, args.runs, case, args.postgres)
                    results.setdefault((store.label, n), []).append(result)
                    print(f"round {round_number + 1}/{args.repeat}  {store.label:<22} {n} clients: "
                          f"{result['runs_per_s']:.2f} runs/s, {result['failed']} failed, {result['lost']} lost",
                          file=sys.stderr)
            for store in stores:
                store.cases = {n: summarize(results[(store.label, n)]) for n in clients}
            found_ratios = ratios(stores, clients)
            call_figures = latency(stores[0]) if args.latency and stores[0].server_pid else None
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    problems = sum(s.cases[n]["failed"] + s.cases[n]["lost"] for s in stores for n in clients)
    if args.json:
        print(json.dumps({"runs_per_client": args.runs, "repeat": args.repeat, "target": TARGET,
                          "cases": {s.label: s.cases for s in stores}, "ratios": found_ratios,
                          "latency": call_figures}, indent=2))
    else:
        print(f"\n{args.runs} runs per client per case, {args.repeat} rounds; each run 20 params, "
              f"{METRICS * STEPS} metric points, 2 artifacts\n")
        print_table(stores, clients)
        print("\nratios of runs/s:")
        for name, value in found_ratios.items():
            print(f"  {name:<40} {value:.2f}")
        for store in stores:
            if store.server_pid and 1 in store.cases and 4 in store.cases:
                ratio = found_ratios[f"{store.label}: 4 clients / 1"]
                print(f"  {store.label}: 4 clients vs 1 {ratio:.2f} x (target >= {TARGET}): "
                      f"{'met' if ratio >= TARGET else 'NOT met'}")
        if call_figures:
            print(f"\nwhere a call's time goes ({stores[0].label}), median ms:")
            for name, value in call_figures.items():
                print(f"  {name:<40} {value}")
        print(f"\nfailed or lost runs: {problems}")
    return 1 if problems else 0


@contextmanager
def _servers(folder: Path, admin_uri: str, workers: list[str]) -> Iterator[list[Store]]:
    """Every server asked for, started in turn and all stopped at the end."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield [stack.enter_context(server(folder, admin_uri, w)) for w in workers]


if __name__ == "__main__":
    sys.exit(main())
