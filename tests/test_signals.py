"""How a run ends when its process is interrupted or its experiment raises: always closed in MLflow."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import bedrot

from bedrot_lab.config import default_tracking_uri

PLUGIN = '''\
"""A slow experiment and a failing one."""

import time
from pathlib import Path

from bedrot_lab import experiment, hookimpl


@experiment("slow", params={"marker": ""})
def slow(ctx):
    """Writes its run id to a marker file, then sleeps for a minute."""
    Path(ctx.params["marker"]).write_text(ctx.run_id)
    time.sleep(60)


@experiment("boom")
def boom(ctx):
    """Fails."""
    ctx.log_metric("before_failing", 1)
    raise ValueError("boom")


@hookimpl
def register_experiments(register):
    register(slow)
    register(boom)
'''


def store(lake: Path):
    from mlflow import MlflowClient

    return MlflowClient(default_tracking_uri(lake.resolve()))


def _default_sigint() -> None:
    # A child inherits an ignored SIGINT (e.g. pytest started as a background job), and
    # Python then installs no KeyboardInterrupt handler; give the child the usual one.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(("signum", "exit_code", "name"), [
    (signal.SIGINT, 130, "SIGINT"),
    (signal.SIGTERM, 143, "SIGTERM"),
], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_is_recorded_killed(bedrot_lake: Path, write_plugin, cli_env, tmp_path: Path,
                                            signum: int, exit_code: int, name: str) -> None:
    write_plugin("slowplug", PLUGIN)
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-m", "bedrot_lab", "run", "slow", "-P", f"marker={marker}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env, preexec_fn=_default_sigint,
    )
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the run never started: {process.communicate()[1]}")
            time.sleep(0.05)
        process.send_signal(signum)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == exit_code, stderr
    run_id = marker.read_text()
    assert re.search(rf"KILLED: slow run {run_id} in [\d.]+s: interrupted by {name}\n", stderr), stderr
    run = store(bedrot_lake).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None and run.info.end_time >= run.info.start_time
    assert run.data.tags["error"] == f"interrupted by {name}"
    assert run.data.params["marker"] == str(marker)


def test_failing_experiment_is_recorded_failed(bedrot_lake: Path, write_plugin, cli_env) -> None:
    write_plugin("slowplug", PLUGIN)
    result = bedrot("run", "boom", env=cli_env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr

    client = store(bedrot_lake)
    experiment = client.get_experiment_by_name("boom")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    lines = [line for line in result.stderr.splitlines() if "ValueError: boom" in line]
    assert len(lines) == 1, result.stderr
    assert run.info.run_id in lines[0]

    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    assert run.data.tags["error"] == "ValueError: boom"
    assert run.data.metrics["before_failing"] == 1
    artifacts = [item.path for item in client.list_artifacts(run.info.run_id, "error")]
    assert artifacts == ["error/traceback.txt"]
    from mlflow.artifacts import load_text

    text = load_text(f"{run.info.artifact_uri}/error/traceback.txt")
    assert "Traceback" in text
    assert 'raise ValueError("boom")' in text
    assert text.rstrip().endswith("ValueError: boom")
