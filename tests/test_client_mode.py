"""The lab as a client of a shared tracking server: what a user sees when the server is
missing, refuses a login, or denies a permission."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest
from conftest import bedrot, run
from servers import running_server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.server
def test_every_command_works_the_same_through_a_server_on_postgresql(
        tmp_path: Path, postgres_database: str, installed_plugins: None) -> None:
    """The tour of a lake whose [tracking] uri is a server: run, runs, register, promote,
    the sandbox's accounts of runs, the daemon's report and reap, with artifacts proxied."""
    lake = tmp_path / "lake"
    env = {**os.environ, "BEDROT_USER": "ana"}
    run(sys.executable, "-m", "bedrot_lab", "init", lake, "--sample", env=env)
    artifacts = tmp_path / "artifact-store"
    with running_server(lake, postgres_database, env=env, args=("--artifacts-destination", str(artifacts))) as (
            url, client):

        def cli(*args: str) -> str:
            return run(sys.executable, "-m", "bedrot_lab", *args, env=client).stdout

        first = json.loads(cli("run", "revenue-per-stream", "--json"))
        etl = json.loads(cli("run", "distrokid-staging2curated", "--json"))
        assert first["status"] == etl["status"] == "FINISHED"
        listed = json.loads(cli("runs", "list", "--json"))
        assert {first["run_id"], etl["run_id"]} <= {r["run_id"] for r in listed}
        assert "revenue-per-stream" in cli("runs", "show", first["run_id"][:8])

        from mlflow import MlflowClient

        store = MlflowClient(url)
        recorded = store.get_run(etl["run_id"])
        assert recorded.info.artifact_uri.startswith("mlflow-artifacts:"), recorded.info.artifact_uri
        assert any(artifacts.rglob("dk_bank_details.csv")), "the output is in the server's artifact store"
        assert not any((lake / "mlruns").rglob("dk_bank_details.csv")), "the client wrote no artifact itself"

        cli("register", etl["run_id"][:8], "dk_bank_details", "--as", "dk_bank_details.csv")
        cli("promote", "curated.dk_bank_details")
        curated = lake / "4_curated" / "dk_bank_details.csv"
        (output,) = artifacts.rglob("outputs/dk_bank_details.csv")
        assert curated.read_bytes() == output.read_bytes()
        promoted = json.loads(cli("promotions", "list", "--json"))
        assert [p["model"] for p in promoted] == ["curated.dk_bank_details"], promoted

        assert "total:" in cli("sandbox", "usage", "--by", "run")
        for job in ("report", "reap"):
            cli("daemon", "run-job", job)
        housekeeping = store.get_experiment_by_name("housekeeping")
        (report,) = store.search_runs([housekeeping.experiment_id])
        assert report.info.run_name.startswith("usage report") and report.info.status == "FINISHED"
        everything = [e.experiment_id for e in store.search_experiments()]
        assert len(store.search_runs(everything)) == 3
        assert not store.search_runs(everything, filter_string="attributes.status = 'RUNNING'")


def test_a_server_that_does_not_answer_is_one_line_at_once(cli_env: dict[str, str], write_plugin) -> None:
    # MLflow's own client retries a refused connection for about four minutes
    write_plugin("hello", """
        from bedrot_lab import experiment, hookimpl

        @experiment("hello")
        def hello(ctx):
            ctx.log_metric("answer", 42)

        @hookimpl
        def register_experiments(register):
            register(hello)
    """)
    uri = f"http://127.0.0.1:{free_port()}"
    for command in (("runs", "list"), ("run", "hello")):
        done = bedrot(*command, env={**cli_env, "MLFLOW_TRACKING_URI": uri}, timeout=60)
        assert done.returncode == 1, done
        assert f"cannot reach the tracking server {uri} (connection refused)" in done.stderr
        assert "Traceback" not in done.stderr
