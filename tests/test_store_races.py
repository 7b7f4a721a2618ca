"""Many ``bedrot-lab run`` processes writing to one embedded store at the same moment."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from bedrot_lab.cli import user_error
from bedrot_lab.config import default_tracking_uri
from bedrot_lab.fsutil import file_sha256
from bedrot_lab.lab import Lab
from bedrot_lab.testing import run_experiment
from bedrot_lab.tracking import StoreBusy, retry_store

WORKERS = 8
ROUNDS = 5

PLUGIN = '''\
"""One experiment reading one small data set, for the race tests."""

from bedrot_lab import experiment, hookimpl
from bedrot_lab.lake import Dataset


@experiment("count-rows", datasets=["tiny"], params={"worker": 0})
def count_rows(ctx):
    """Counts the rows of the tiny data set."""
    ctx.log_metric("rows", len(ctx.load("tiny")))


@hookimpl
def register_datasets(register):
    register(Dataset("tiny", "tiny.csv", zone="curated", columns={"n": "int"}))


@hookimpl
def register_experiments(register):
    register(count_rows)
'''


def race(lake: str, worker: int, barrier: Any, outcomes: Any) -> None:
    """One of the racing processes: at each round, waits until every process is ready, then runs."""
    os.environ["BEDROT_USER"] = f"analyst{worker}"
    for round_number in range(ROUNDS):
        barrier.wait()
        try:
            result = run_experiment(Lab.open(lake), "count-rows", worker=worker)
            outcomes.put((round_number, worker, result.status, result.error))
        except BaseException as exc:  # reported to the test, which fails with it
            outcomes.put((round_number, worker, "RAISED", f"{type(exc).__name__}: {exc}"))
        barrier.wait()


def test_parallel_runs_on_a_changed_input_all_finish_with_their_inputs(bedrot_lake: Path) -> None:
    """8 processes x 5 rounds; before each round the input changes, so every round all 8
    register the same new data set digest at the same moment."""
    (bedrot_lake / "plugins" / "count_rows.py").write_text(textwrap.dedent(PLUGIN))
    data = bedrot_lake / "4_curated" / "tiny.csv"
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(WORKERS + 1, timeout=300), context.Queue()
    workers = [context.Process(target=race, args=(str(bedrot_lake), n, barrier, outcomes)) for n in range(WORKERS)]
    for worker in workers:
        worker.start()
    digests = []
    try:
        for round_number in range(ROUNDS):
            data.write_text("n\n" + "".join(f"{i}\n" for i in range(round_number + 1)))
            digests.append(file_sha256(data))
            barrier.wait()  # go
            barrier.wait()  # every worker is done with this round
    finally:
        for worker in workers:
            worker.join(timeout=60)
            worker.kill()
    results = [outcomes.get(timeout=10) for _ in range(WORKERS * ROUNDS)]
    assert [r for r in results if r[2] != "FINISHED"] == []

    client = MlflowClient(default_tracking_uri(bedrot_lake))
    experiment = client.get_experiment_by_name("count-rows")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == WORKERS * ROUNDS
    assert {run.info.status for run in runs} == {"FINISHED"}
    recorded = sorted(
        next(tag.value for tag in run.inputs.dataset_inputs[0].tags if tag.key == "sha256") for run in runs)
    assert recorded == sorted(digest for digest in digests for _ in range(WORKERS))
    assert sorted(run.data.metrics["rows"] for run in runs) == sorted(
        float(r + 1) for r in range(ROUNDS) for _ in range(WORKERS))


MAKER = '''\
"""One experiment with an output, for the registry race test."""

import pandas as pd
from bedrot_lab import experiment, hookimpl


@experiment("maker", params={"n": 1})
def maker(ctx):
    """Writes an output of n rows."""
    ctx.log_output(pd.DataFrame({"id": range(ctx.params["n"])}), "table")


@hookimpl
def register_experiments(register):
    register(maker)
'''
REGISTRARS = 4
REGISTER_ROUNDS = 3


def register_race(lake: str, run_ids: list[str], barrier: Any, outcomes: Any) -> None:
    """One of the registering processes: each round, all register into one model at once."""
    from bedrot_lab.promotion import register

    lab = Lab.open(lake)
    for run_id in run_ids:
        barrier.wait()
        try:
            outcomes.put(register(lab, run_id, "table", "race/table.parquet")["version"])
        except BaseException as exc:  # reported to the test, which fails with it
            outcomes.put(f"{type(exc).__name__}: {exc}")


def test_parallel_registrations_of_one_model_all_get_a_version(bedrot_lake: Path) -> None:
    """Creating the registered model, its versions, their tags and the candidate alias
    from several processes at once: every registration gets its own version."""
    (bedrot_lake / "plugins" / "maker.py").write_text(textwrap.dedent(MAKER))
    lab = Lab.open(bedrot_lake)
    run_ids = [run_experiment(lab, "maker", n=n + 1).run_id for n in range(REGISTRARS * REGISTER_ROUNDS)]
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(REGISTRARS, timeout=300), context.Queue()
    workers = [context.Process(target=register_race,
                               args=(str(bedrot_lake), run_ids[n::REGISTRARS], barrier, outcomes))
               for n in range(REGISTRARS)]
    for worker in workers:
        worker.start()
    results = [outcomes.get(timeout=300) for _ in run_ids]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(results, key=lambda r: (len(r), r)) == [str(v) for v in range(1, len(run_ids) + 1)]
    client = MlflowClient(lab.settings.tracking_uri)
    candidate = client.get_model_version_by_alias("curated.race.table", "candidate")
    assert str(candidate.version) in results and candidate.tags["curated_path"] == "race/table.parquet"


def test_a_store_locked_by_another_process_is_waited_for(bedrot_lake: Path) -> None:
    """A writer holding the SQLite store's lock for a few seconds delays a run; it does not fail it."""
    (bedrot_lake / "plugins" / "count_rows.py").write_text(textwrap.dedent(PLUGIN))
    (bedrot_lake / "4_curated" / "tiny.csv").write_text("n\n1\n2\n")
    lab = Lab.open(bedrot_lake)
    lab.store.experiment_id("count-rows")  # created before the lock is taken
    holder = sqlite3.connect(bedrot_lake / "mlruns" / "mlflow.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(21.0, holder.execute, args=("COMMIT",))  # longer than MLflow's own 20 s wait
    release.start()
    try:
        result = run_experiment(lab, "count-rows")
    finally:
        release.join()
        holder.close()
    assert result.status == "FINISHED", result.error
    assert client_run(lab, result.run_id).data.metrics["rows"] == 2


def test_a_store_that_stays_locked_is_one_clear_error(tmp_path: Path) -> None:
    database = tmp_path / "store.db"
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    attempts = []

    def write() -> None:
        attempts.append(1)
        with sqlite3.connect(database, timeout=0) as connection:
            connection.execute("INSERT INTO t VALUES (1)")

    try:
        with pytest.raises(StoreBusy, match=r"stayed busy for 0.5 s \(database is locked\).*store_wait"):
            retry_store(write, wait=0.5)
    finally:
        holder.close()
    assert len(attempts) > 2
    assert user_error(StoreBusy("x")).exit_code == 1


def client_run(lab: Lab, run_id: str):
    return MlflowClient(lab.settings.tracking_uri).get_run(run_id)
