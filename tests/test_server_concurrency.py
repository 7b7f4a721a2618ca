"""Nothing lost under concurrency: processes recording runs at once, each run with 20 params, 100
metric points and 2 artifacts, through a tracking server on PostgreSQL (8 processes x 25 runs) and
on the embedded SQLite store (4 x 25); afterwards every run, param, point and artifact is counted
through MLflow's API."""

from __future__ import annotations

import json
import multiprocessing
import os
import textwrap
import threading
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import bedrot
from servers import running_server

RUNS = 25
METRICS, STEPS = 10, 10  # 100 points per run
DECLARED = 18  # with worker and index: 20 params per run

PLUGIN = f'''\
"""One experiment that records a run of the size the concurrency tests count."""

from bedrot_lab import experiment, hookimpl


@experiment("load", params={{"worker": 0, "index": 0, **{{f"p{{n:02d}}": n for n in range({DECLARED})}}}})
def load(ctx):
    """{METRICS} metrics at {STEPS} steps, and two small text files."""
    for step in range({STEPS}):
        ctx.log_metrics({{f"m{{k}}": step * 10 + k for k in range({METRICS})}}, step=step)
    ctx.log_text(artifact_text(ctx.params), "notes/run.txt")
    ctx.log_text("second\\n" * (ctx.params["index"] + 1), "notes/second.txt")


def artifact_text(params):
    return f"worker {{params['worker']}} run {{params['index']}}\\n"


@hookimpl
def register_experiments(register):
    register(load)
'''


def record_runs(lake: str, env: Mapping[str, str], worker: int, barrier: Any, outcomes: Any) -> None:
    """One client process: opens the lab once, waits for the others, then records RUNS runs."""
    from bedrot_lab.lab import Lab
    from bedrot_lab.testing import run_experiment

    os.environ.update(env)
    os.environ["BEDROT_USER"] = f"analyst{worker}"
    try:
        lab = Lab.open(lake)
        lab.store  # noqa: B018  (opened before the start, so that the runs overlap)
    finally:
        barrier.wait()
    for index in range(RUNS):
        try:
            result = run_experiment(lab, "load", worker=worker, index=index)
            outcomes.put((worker, index, result.status, result.error))
        except BaseException as exc:  # reported to the test, which fails with it
            outcomes.put((worker, index, "RAISED", f"{type(exc).__name__}: {exc}"))


def record_at_once(lake: Path, env: Mapping[str, str], processes: int) -> None:
    """``processes`` client processes recording RUNS runs each, all started together; fails
    unless every run says FINISHED."""
    (lake / "plugins" / "load.py").write_text(textwrap.dedent(PLUGIN))
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(processes, timeout=600), context.Queue()
    workers = [context.Process(target=record_runs, args=(str(lake), dict(env), n, barrier, outcomes))
               for n in range(processes)]
    for worker in workers:
        worker.start()
    try:
        results = [outcomes.get(timeout=900) for _ in range(processes * RUNS)]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            worker.kill()
    assert [r for r in results if r[2] != "FINISHED"] == []


def assert_all_recorded(tracking_uri: str, processes: int) -> None:
    """Every run, param, metric point and artifact of :func:`record_at_once`, counted through
    MLflow's client (through the server's REST API and artifact proxy when it is a server)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("load")
    runs = client.search_runs([experiment.experiment_id], max_results=5000)
    assert len(runs) == processes * RUNS
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    made = sorted((int(run.data.params["worker"]), int(run.data.params["index"])) for run in runs)
    assert made == [(w, i) for w in range(processes) for i in range(RUNS)]
    for run in runs:
        params = run.data.params
        assert params == {"worker": params["worker"], "index": params["index"],
                          **{f"p{n:02d}": str(n) for n in range(DECLARED)}}

    def recorded(run: Any) -> tuple[int, list[tuple[str, int]]]:
        points = 0
        for k in range(METRICS):
            history = client.get_metric_history(run.info.run_id, f"m{k}")
            assert sorted((m.step, m.value) for m in history) == [(s, float(s * 10 + k)) for s in range(STEPS)]
            points += len(history)
        files = [(f.path, f.file_size) for f in client.list_artifacts(run.info.run_id, "notes")]
        return points, files

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(recorded, runs))
    assert sum(points for points, _ in found) == processes * RUNS * METRICS * STEPS
    for run, (_, files) in zip(runs, found):
        worker, index = run.data.params["worker"], int(run.data.params["index"])
        assert sorted(files) == [("notes/run.txt", len(f"worker {worker} run {index}\n")),
                                 ("notes/second.txt", len("second\n") * (index + 1))]
    assert sum(len(files) for _, files in found) == processes * RUNS * 2


#: PostgreSQL's max_connections of the issue's small server, less its 3 superuser_reserved_connections
CONNECTIONS_ALLOWED = 50 - 3


@pytest.fixture
def limited_role(postgres: str, postgres_database: str) -> Iterator[tuple[str, str]]:
    """``postgres_database`` owned by a new role that may hold only :data:`CONNECTIONS_ALLOWED`
    connections, as a PostgreSQL with ``max_connections = 50`` would allow: (its URI, the role)."""
    import psycopg

    role, database = f"lab_{uuid.uuid4().hex[:10]}", postgres_database.rsplit("/", 1)[1]
    admin = postgres.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {CONNECTIONS_ALLOWED}')
        connection.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
    yield postgres_database.replace("://mlflow@", f"://{role}@"), role
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        connection.execute(f'DROP ROLE IF EXISTS "{role}"')


class ConnectionPeak:
    """The most connections ``role`` held at once, sampled every 50 ms while the block runs."""

    def __init__(self, admin_uri: str, role: str):
        self.admin_uri, self.role, self.peak = admin_uri.replace("+psycopg", ""), role, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_uri, autocommit=True) as connection:
            while not self.done.wait(0.05):
                (count,) = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                              (self.role,)).fetchone()
                self.peak = max(self.peak, count)

    def __enter__(self) -> ConnectionPeak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


@pytest.mark.server
def test_eight_clients_through_the_server_lose_nothing(bedrot_lake: Path, postgres: str,
                                                        limited_role: tuple[str, str]) -> None:
    """8 processes x 25 runs through ``bedrot-lab server start`` (its defaults) on a PostgreSQL
    that allows the server 47 connections, as one with ``max_connections = 50`` would; then
    ``bedrot-lab run --json`` through it prints JSON only."""
    uri, role = limited_role
    with running_server(bedrot_lake, uri, workers=2) as (url, env), ConnectionPeak(postgres, role) as connections:
        record_at_once(bedrot_lake, env, processes=8)
        assert_all_recorded(url, processes=8)

        done = bedrot("run", "load", "-P", "worker=9", "--json", env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == "FINISHED"  # no MLflow link amid it
    log = (bedrot_lake / ".bedrot-lab" / "server" / "server.log").read_text()
    assert "too many connections" not in log
    assert 0 < connections.peak <= CONNECTIONS_ALLOWED


def test_four_clients_on_the_embedded_store_lose_nothing(bedrot_lake: Path) -> None:
    """4 processes x 25 runs on the lake's own SQLite store, waiting for each other's writes."""
    env = {"BEDROT_LAKE": str(bedrot_lake)}
    record_at_once(bedrot_lake, env, processes=4)
    from bedrot_lab.config import default_tracking_uri

    assert_all_recorded(default_tracking_uri(bedrot_lake), processes=4)


def test_server_workers_send_without_waiting_for_acks() -> None:
    """A socket bound as uvicorn binds it for several workers (protocol 0) gets TCP_NODELAY on
    its accepted connections from the loop ``bedrot-lab server start`` gives the workers; asyncio's
    own loop leaves Nagle on there, and each reused connection waited 40 ms per call."""
    import asyncio
    import socket

    from bedrot_lab.server.nodelay import NoDelayLoop

    async def accepted_nodelay(loop: asyncio.AbstractEventLoop) -> int:
        listener = socket.socket(socket.AF_INET)  # proto 0, as uvicorn's Config.bind_socket
        listener.bind(("127.0.0.1", 0))
        accepted: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: Any) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await loop.create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        try:
            return await asyncio.wait_for(accepted, 30)
        finally:
            writer.close()
            server.close()

    loop = NoDelayLoop()
    try:
        assert loop.run_until_complete(accepted_nodelay(loop))
    finally:
        loop.close()
