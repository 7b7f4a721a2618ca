"""Several ``bedrot-lab run`` processes starting together on a lake whose store does not exist yet."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bedrot_lab.config import default_tracking_uri
from bedrot_lab.testing import make_lake

WORKERS = 4

PLUGIN = '''\
"""One trivial experiment for the concurrency test."""

from bedrot_lab import experiment, hookimpl


@experiment("tally", params={"worker": 0})
def tally(ctx):
    """Logs one metric."""
    ctx.log_metric("worker_seen", ctx.params["worker"])


@hookimpl
def register_experiments(register):
    register(tally)
'''


def test_parallel_first_runs_share_one_new_store(tmp_path: Path, bedrot_env) -> None:
    lake = make_lake(tmp_path / "lake").resolve()
    (lake / "plugins" / "tally.py").write_text(textwrap.dedent(PLUGIN))
    database = lake / "mlruns" / "mlflow.db"
    assert not database.exists()
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester"}

    processes = [
        subprocess.Popen([sys.executable, "-m", "bedrot_lab", "run", "tally", "-P", f"worker={n}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
        for n in range(WORKERS)
    ]
    outcomes = []
    for process in processes:
        try:
            stdout, stderr = process.communicate(timeout=180)
        finally:
            process.kill()
        outcomes.append((process.returncode, stdout, stderr))

    report = "\n---\n".join(stderr for _, _, stderr in outcomes)
    assert [code for code, _, _ in outcomes] == [0] * WORKERS, report
    for _, _, stderr in outcomes:
        assert "database is locked" not in stderr.lower()
        assert "already exists" not in stderr.lower()

    from mlflow import MlflowClient

    client = MlflowClient(default_tracking_uri(lake))
    experiments = [e for e in client.search_experiments() if e.name == "tally"]
    assert len(experiments) == 1
    runs = client.search_runs([experiments[0].experiment_id])
    assert len(runs) == WORKERS
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert sorted(run.data.metrics["worker_seen"] for run in runs) == list(range(WORKERS))
    assert sorted(run.data.params["worker"] for run in runs) == [str(n) for n in range(WORKERS)]
