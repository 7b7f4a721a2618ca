"""The housekeeping daemon for real: a subprocess against a temporary lake, short intervals."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import bedrot

from bedrot_lab.daemon.history import JobHistory
from bedrot_lab.daemon.runtime import current_holder

JOBS_PLUGIN = """
    import time
    from bedrot_lab import HousekeepingJob, hookimpl

    def tick(ctx):
        return "tick"

    def boom(ctx):
        raise RuntimeError("boom, as planned")

    def patient(ctx):
        '''Long, but checks the stop event between units of work.'''
        for _ in range(600):
            if ctx.stopping:
                return "stopped early"
            time.sleep(0.1)
        return "finished"

    def stubborn(ctx):
        '''Ignores the stop event.'''
        time.sleep(60)
        return "finished"

    def lonely(ctx):
        '''In a process of its own; checks the stop event.'''
        import os
        ctx.log.info("lonely in pid %d", os.getpid())
        for _ in range(600):
            ctx.check_stop()
            time.sleep(0.1)
        return "finished"

    def doomed(ctx):
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)

    def leaky(ctx):
        import os
        raise RuntimeError("login refused for key " + os.environ["FAKE_KEY"])

    @hookimpl
    def housekeeping_jobs(register):
        register(HousekeepingJob("tick", tick, every="1s"))
        register(HousekeepingJob("boom", boom, every="1s", enabled=False))
        register(HousekeepingJob("patient", patient, every="1h", enabled=False))
        register(HousekeepingJob("stubborn", stubborn, every="1h", enabled=False))
        register(HousekeepingJob("lonely", lonely, every="1h", own_process=True, enabled=False))
        register(HousekeepingJob("doomed", doomed, every="1h", own_process=True, enabled=False))
        register(HousekeepingJob("leaky", leaky, every="1h", enabled=False))
        register(HousekeepingJob("leaky-child", leaky, every="1h", own_process=True, enabled=False))
"""


def configure(lake: Path, text: str) -> None:
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + "\n" + text)


def wait_for(condition, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {condition}")


def foreground(cli_env: dict) -> subprocess.Popen[str]:
    """``bedrot-lab daemon start --foreground`` as a child of the test (its stderr piped)."""
    return subprocess.Popen([sys.executable, "-m", "bedrot_lab", "daemon", "start", "--foreground"],
                            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def runs(lake: Path, job: str) -> list[dict]:
    with JobHistory.for_state(lake / ".bedrot-lab") as history:
        return history.runs(job)


@pytest.fixture
def lake(bedrot_lake: Path, write_plugin) -> Path:
    write_plugin("house_jobs", JOBS_PLUGIN)
    configure(bedrot_lake, '[daemon]\nstop_timeout = 2\n[daemon.jobs.check]\nevery = "1s"\n'
                           '[daemon.jobs.reconcile]\nevery = "1h"\n')
    return bedrot_lake


@pytest.fixture
def daemon(lake: Path, cli_env: dict):
    """A started daemon (``bedrot-lab daemon start``), stopped after the test whatever happened."""
    started = bedrot("daemon", "start", env=cli_env)
    assert started.returncode == 0, started.stderr
    holder = current_holder(lake / ".bedrot-lab")
    yield holder
    if current_holder(lake / ".bedrot-lab") is not None:
        bedrot("daemon", "stop", "--timeout", "10", env=cli_env)


def test_one_daemon_per_lake_status_and_stop(lake, cli_env, daemon):
    assert daemon is not None and daemon.pid > 0
    second = bedrot("daemon", "start", env=cli_env)
    assert second.returncode == 1
    assert f"pid {daemon.pid}" in second.stderr and "already runs" in second.stderr
    foreground = bedrot("daemon", "start", "--foreground", env=cli_env)
    assert foreground.returncode == 1 and f"pid {daemon.pid}" in foreground.stderr
    wait_for(lambda: len(runs(lake, "tick")) >= 2)
    status = json.loads(bedrot("daemon", "status", "--json", env=cli_env).stdout)
    assert status["running"] and status["pid"] == daemon.pid
    jobs = {job["name"]: job for job in status["jobs"]}
    assert jobs["tick"]["ok"] is True and jobs["tick"]["next_run"] and jobs["boom"]["enabled"] is False
    wait_for(lambda: json.loads(bedrot("daemon", "status", "--json", env=cli_env).stdout)["watcher"]["mode"]
             in ("inotify", "polling"))
    stopped = bedrot("daemon", "stop", env=cli_env)
    assert stopped.returncode == 0 and "daemon stopped" in stopped.stdout
    assert current_holder(lake / ".bedrot-lab") is None
    assert not json.loads(bedrot("daemon", "status", "--json", env=cli_env).stdout)["running"]
    log = (lake / ".bedrot-lab" / "daemon.log").read_text()
    assert " failed: " not in log and "Logging error" not in log, log  # watch and reconcile built the index once
    assert "daemon stopped" in log.splitlines()[-1]


def test_a_started_daemon_logs_its_usage_report_to_mlflow(lake, cli_env):
    from mlflow import MlflowClient

    from bedrot_lab.lab import Lab
    from bedrot_lab.sandbox.report import EXPERIMENT

    configure(lake, '[sandbox.quotas]\nuser = { soft = "1KiB", hard = "1MiB" }\n')
    (lake / "sandbox" / "users" / "ana").mkdir(parents=True, exist_ok=True)
    (lake / "sandbox" / "users" / "ana" / "data.bin").write_bytes(b"x" * 3000)
    assert bedrot("daemon", "start", env=cli_env).returncode == 0
    try:
        report = wait_for(lambda: [r for r in runs(lake, "report") if r["ok"]], timeout=60)[0]  # due at start: never ran
    finally:
        bedrot("daemon", "stop", env=cli_env)
    assert "2.9 KiB in 1 file, 1 over quota" in report["result"]
    run_id = report["result"].split()[1].rstrip(":")
    client = MlflowClient(Lab.open(lake).settings.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    run = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id.startswith(run_id))
    assert run.info.status == "FINISHED" and "usage.total.bytes" in run.data.metrics
    assert run.data.metrics["usage.user.ana.bytes"] == 3000
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "figures")}
    assert logged == {"figures/usage_vs_limits.png", "figures/total_usage.png"}
    assert {f.path for f in client.list_artifacts(run.info.run_id, "tables")} >= {"tables/usage.json"}


def test_violations_reach_the_alert_sink_once(lake, cli_env, daemon):
    jsonl = lake / ".bedrot-lab" / "violations.jsonl"
    folder = lake / "sandbox" / "users" / "ana" / "p"
    folder.mkdir(parents=True)
    (folder / "secret.env").write_text("API_KEY=" + "Zq9" * 8 + "\n")
    lines = wait_for(lambda: jsonl.exists() and jsonl.read_text().splitlines(), timeout=60)
    time.sleep(3)  # three more checks: the violation is not alerted again
    alerts = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(a["event"], a["rule"]) for a in alerts] == [("new", "secrets")], alerts
    assert "Zq9Zq9" not in jsonl.read_text() and len(lines) == 1


def test_sigterm_stops_it_within_5s_while_a_job_runs(lake, cli_env):
    configure(lake, '[daemon.jobs.patient]\nenabled = true\n')
    process = foreground(cli_env)
    try:
        wait_for(lambda: runs(lake, "patient"))
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)  # the job would take 60 s more
        assert process.returncode == 0
        assert runs(lake, "patient")[-1]["result"] == "stopped early"
    finally:
        process.kill()


def test_a_job_that_ignores_the_stop_does_not_hold_the_daemon(lake, cli_env):
    configure(lake, '[daemon.jobs.stubborn]\nenabled = true\n')
    process = foreground(cli_env)
    try:
        wait_for(lambda: runs(lake, "stubborn"))
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # stop_timeout = 2; the job would sleep 60 s
        assert "stubborn still running at the deadline" in stderr
        assert current_holder(lake / ".bedrot-lab") is None
    finally:
        process.kill()


def test_a_job_of_its_own_process_logs_through_the_daemon_and_is_stopped_by_it(lake, cli_env):
    configure(lake, '[daemon.jobs.lonely]\nenabled = true\n[daemon.jobs.doomed]\nenabled = true\n')
    process = foreground(cli_env)
    try:
        doomed = wait_for(lambda: [r for r in runs(lake, "doomed") if r["ended"]])[0]
        assert doomed["ok"] is False and doomed["result"] == "its process ended (signal 9) before the job did"
        lonely = wait_for(lambda: runs(lake, "lonely"))[0]
        assert lonely["pid"] not in (process.pid, None)
        wait_for(lambda: f"lonely in pid {lonely['pid']}" in (lake / ".bedrot-lab" / "daemon.log").read_text())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0
    finally:
        process.kill()
    assert f"INFO bedrot_lab.daemon.lonely: lonely in pid {lonely['pid']}" in stderr  # in the foreground too
    assert runs(lake, "lonely")[-1]["result"] == "stopped half way: the daemon was stopping"
    assert not Path(f"/proc/{lonely['pid']}").exists()


def test_a_credential_in_a_jobs_error_reaches_neither_the_history_nor_the_log(lake, cli_env):
    key = "AKIA" + "".join(random.choice("ABCDEFGHJKLMNPQRSTUVWXYZ234567") for _ in range(16))  # fake, made here
    configure(lake, '[daemon.jobs.leaky]\nenabled = true\n[daemon.jobs.leaky-child]\nenabled = true\n')
    process = foreground({**cli_env, "FAKE_KEY": key})
    try:
        wait_for(lambda: all(any(r["ended"] for r in runs(lake, job)) for job in ("leaky", "leaky-child")))
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert all(runs(lake, job)[0]["result"] == "RuntimeError: login refused for key ****"
               for job in ("leaky", "leaky-child"))
    state = lake / ".bedrot-lab"
    assert "login refused for key ****" in (state / "daemon.log").read_text()
    for path in [*state.glob("daemon.*"), *state.glob("daemon.db*")]:
        assert key.encode() not in path.read_bytes(), path
    assert key not in stderr
    once = bedrot("daemon", "run-job", "leaky", env={**cli_env, "FAKE_KEY": key})  # the command line's own handler
    assert once.returncode == 1 and "login refused for key ****" in once.stdout and "Traceback" in once.stderr
    assert key not in once.stdout + once.stderr


def test_a_failing_job_does_not_stop_the_others(lake, cli_env):
    configure(lake, '[daemon.jobs.boom]\nenabled = true\n')
    started = bedrot("daemon", "start", env=cli_env)
    assert started.returncode == 0, started.stderr
    try:
        _failing_job_does_not_stop_the_others(lake, cli_env)
    finally:
        bedrot("daemon", "stop", env=cli_env)


def _failing_job_does_not_stop_the_others(lake, cli_env):
    wait_for(lambda: sum(r["ok"] is False for r in runs(lake, "boom")) >= 3)
    ticks = len(runs(lake, "tick"))
    wait_for(lambda: len(runs(lake, "tick")) >= ticks + 2)
    status = json.loads(bedrot("daemon", "status", "--json", env=cli_env).stdout)
    boom = next(job for job in status["jobs"] if job["name"] == "boom")
    assert boom["consecutive_failures"] >= 3 and "RuntimeError: boom, as planned" in boom["result"]
    log = (lake / ".bedrot-lab" / "daemon.log").read_text()
    assert "boom failed: RuntimeError: boom, as planned" in log and "Traceback" in log


def test_a_daemon_killed_runs_what_became_due_once_when_restarted(lake, cli_env):
    configure(lake, '[daemon.jobs.tick]\nevery = "3s"\n')
    first = foreground(cli_env)
    try:
        wait_for(lambda: runs(lake, "tick"))
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    killed_at = time.time()
    assert current_holder(lake / ".bedrot-lab") is None  # the kernel released the lock: nothing stuck
    time.sleep(7)  # two intervals pass while it is down
    before = len(runs(lake, "tick"))
    assert bedrot("daemon", "start", env=cli_env).returncode == 0
    try:
        wait_for(lambda: len(runs(lake, "tick")) > before, timeout=10)
        time.sleep(1.5)  # less than an interval: the missed runs are not replayed
        caught_up = [r for r in runs(lake, "tick") if r["started"] > killed_at]
        assert len(caught_up) == 1, caught_up
    finally:
        bedrot("daemon", "stop", env=cli_env)


def test_run_job_works_without_a_daemon(lake, cli_env):
    done = bedrot("daemon", "run-job", "tick", env=cli_env)
    assert done.returncode == 0 and done.stdout.strip() == "tick: tick"
    failed = bedrot("daemon", "run-job", "boom", env=cli_env)
    assert failed.returncode == 1 and "boom: RuntimeError: boom, as planned" in failed.stdout
    unknown = bedrot("daemon", "run-job", "tik", env=cli_env)
    assert unknown.returncode == 2 and "no housekeeping job is called 'tik'" in unknown.stderr
    check = bedrot("daemon", "run-job", "check", env=cli_env)
    assert check.returncode == 0 and "open" in check.stdout
    assert [r["ok"] for r in runs(lake, "tick")] == [True] and [r["ok"] for r in runs(lake, "boom")] == [False]


def test_a_bad_schedule_is_named_before_anything_starts(lake, cli_env):
    configure(lake, '[daemon.jobs.clean]\ncron = "0 3 * *"\n')
    result = bedrot("daemon", "start", env=cli_env)
    assert result.returncode == 2
    assert "daemon.jobs.clean.cron" in result.stderr and "Traceback" not in result.stderr
    assert current_holder(lake / ".bedrot-lab") is None
