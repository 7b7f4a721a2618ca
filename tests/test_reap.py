"""The daemon's reap and gc jobs on real processes and a real MLflow store: what every run
records about its process, a SIGKILLed run ended KILLED, a reused pid told apart from the
run's process, runs of other hosts judged by their heartbeat, and mlflow gc purging only
runs deleted long enough ago."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import bedrot

from bedrot_lab import JobContext, tracking
from bedrot_lab.config import ConfigError
from bedrot_lab.daemon.reap import REAPED_TAG, GcRefused, gc, process_alive
from bedrot_lab.daemon.settings import DaemonSettings
from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment
from bedrot_lab.tracking import proc_stat

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")

PLUGIN = '''\
"""A slow experiment: it writes its run id to a marker file, then sleeps in a loop."""

import time
from pathlib import Path

from bedrot_lab import experiment, hookimpl


@experiment("slow", params={"marker": "", "seconds": 60.0})
def slow(ctx):
    """Writes its run id to ``marker``, then sleeps for ``seconds``."""
    if ctx.params["marker"]:
        Path(ctx.params["marker"]).write_text(ctx.run_id)
    deadline = time.monotonic() + ctx.params["seconds"]
    while time.monotonic() < deadline:
        time.sleep(0.05)


@hookimpl
def register_experiments(register):
    register(slow)
'''
DAY_MS = 86_400_000
HOST = socket.gethostname()


def run_job(lab, name: str, stop: threading.Event | None = None, **options) -> str:
    """Run housekeeping job ``name`` of ``lab`` once, with its default options and ``options``."""
    job = lab.jobs[name]
    return job.run(JobContext(lab, stop or threading.Event(), {**job.options, **options}))


def internal(**tags: object) -> dict[str, object]:
    """Process tags by their short names (``pid``, ``host`` ...), as runs record them."""
    return {tracking.INTERNAL + name: value for name, value in tags.items()}


def start_ticks(pid: int) -> int:
    stat = proc_stat(pid)
    assert stat is not None
    return stat[1]


@pytest.fixture
def sleeper():
    """A live process that is not a run's (a pid for a run to claim)."""
    process = subprocess.Popen(["sleep", "120"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited and been waited for."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.fixture
def lab(bedrot_lake, write_plugin) -> Lab:
    """A lab on a temporary lake whose plugins/ folder holds the slow experiment."""
    write_plugin("slowplug", PLUGIN)
    return Lab.open(bedrot_lake)


@pytest.fixture
def make_run(lab):
    """A RUNNING run created by hand in experiment ``manual``, with the tags given."""
    client = lab.store.client
    experiment = lab.store.experiment_id("manual")

    def make(tags: dict[str, object], start_time: int | None = None) -> str:
        run = client.create_run(experiment, start_time=start_time, tags={k: str(v) for k, v in tags.items()})
        return run.info.run_id

    return make


def status(lab, run_id: str) -> str:
    return lab.store.client.get_run(run_id).info.status


# -- what a run records ------------------------------------------------------------------------


def test_every_run_records_its_process_and_a_heartbeat_that_advances(lab, monkeypatch):
    monkeypatch.setattr(tracking, "HEARTBEAT_SECONDS", 0.2)
    result = run_experiment(lab, "slow", seconds=2.5)
    run = read_run(result.run_id, lab)
    tags = run.data.tags
    assert tags[tracking.PID_TAG] == str(os.getpid()) and tags[tracking.HOST_TAG] == HOST
    assert tags[tracking.PROC_START_TAG] == str(start_ticks(os.getpid()))
    assert tags[tracking.PID_SCOPE_TAG] == tracking.pid_scope() and tags[tracking.PID_SCOPE_TAG].count("/") == 1
    started = run.info.start_time / 1000
    assert int(tags[tracking.HEARTBEAT_TAG]) >= int(started) + 2  # beaten while the run lasted
    time.sleep(0.6)
    assert read_run(result.run_id, lab).data.tags[tracking.HEARTBEAT_TAG] == tags[tracking.HEARTBEAT_TAG]  # not after


def test_a_short_run_writes_no_heartbeat_after_the_one_it_is_created_with(lab):
    result = run_experiment(lab, "slow", seconds=0.0)
    run = read_run(result.run_id, lab)
    assert int(run.data.tags[tracking.HEARTBEAT_TAG]) == pytest.approx(run.info.start_time / 1000, abs=1)


def test_the_start_time_is_read_past_a_command_name_with_spaces_and_parentheses(tmp_path: Path):
    psutil = pytest.importorskip("psutil")
    odd = tmp_path / "a) b (c"  # the kernel keeps the name as it is, parentheses and all
    shutil.copy(shutil.which("sleep"), odd)
    process = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 10
        while (Path(f"/proc/{process.pid}/comm").read_text().strip() != odd.name
               and time.monotonic() < deadline):
            time.sleep(0.01)  # between fork and exec the child still has the parent's name
        state, ticks = proc_stat(process.pid)
        assert state in ("R", "S")
        created = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
        assert created == pytest.approx(psutil.Process(process.pid).create_time(), abs=0.05)
    finally:
        process.kill()
        process.wait()
    assert proc_stat(process.pid) is None


# -- reap ----------------------------------------------------------------------------------


def test_a_sigkilled_run_is_reaped_killed_with_a_tag_saying_why(bedrot_lake, lab, cli_env,
                                                                tmp_path: Path):
    marker = tmp_path / "started"
    process = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "run", "slow", "-P", f"marker={marker}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the run never started: {process.communicate()[1]}")
            time.sleep(0.05)
        run_id = marker.read_text()
        run = read_run(run_id, lab)
        assert run.info.status == "RUNNING" and run.data.tags[tracking.PID_TAG] == str(process.pid)
        # alive, it is left alone
        assert "0 reaped" in run_job(lab, "reap")
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        process.kill()
        process.wait()
    assert read_run(run_id, lab).info.status == "RUNNING"  # what MLflow leaves after a SIGKILL

    result = bedrot("daemon", "run-job", "reap", env=cli_env)  # one round of the job, as the daemon runs it
    assert result.returncode == 0, result.stderr
    assert "reap: 1 RUNNING, 1 reaped" in result.stdout
    run = read_run(run_id, lab)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    reason = run.data.tags[REAPED_TAG]
    assert reason.startswith(f"process {process.pid} on {HOST} gone; reaped at ")
    assert reason.endswith(" by the housekeeping daemon")


def test_a_reused_pid_is_told_apart_from_the_runs_process(lab, make_run, sleeper, dead_pid):
    ticks = start_ticks(sleeper.pid)
    scope = tracking.pid_scope()
    live = make_run(internal(pid=sleeper.pid, host=HOST, proc_start=ticks, pid_scope=scope))
    # the run's process was another, earlier one
    reused = make_run(internal(pid=sleeper.pid, host=HOST, proc_start=ticks - 100, pid_scope=scope))
    gone = make_run(internal(pid=dead_pid, host=HOST, proc_start=ticks, pid_scope=scope))
    assert run_job(lab, "reap") == "3 RUNNING, 2 reaped"
    assert status(lab, live) == "RUNNING" and REAPED_TAG not in read_run(live, lab).data.tags
    assert status(lab, reused) == status(lab, gone) == "KILLED"
    assert read_run(reused, lab).data.tags[REAPED_TAG].startswith(f"process {sleeper.pid} on {HOST} gone")


def test_a_zombie_is_gone_and_a_process_without_a_recorded_start_is_judged_by_its_pid(sleeper, dead_pid):
    zombie = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while (proc_stat(zombie.pid) or ("?",))[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process_alive(zombie.pid, start_ticks(zombie.pid))
    finally:
        zombie.wait()
    assert process_alive(sleeper.pid, None) and not process_alive(dead_pid, None)


def test_runs_of_other_hosts_are_judged_by_their_heartbeat(lab, make_run, dead_pid):
    now = time.time()
    # pid 1 lives here: a run of another host must not be judged by it
    fresh = make_run(internal(pid=1, host="elsewhere.example", heartbeat=int(now - 60)))
    stale = make_run(internal(pid=1, host="elsewhere.example", heartbeat=int(now - 7200)))
    # this host's name, but another boot or pid namespace (a container sharing the name): not our pids either
    container = make_run(internal(pid=dead_pid, host=HOST, pid_scope="another-boot/4026531836",
                                  heartbeat=int(now - 60)))
    assert run_job(lab, "reap") == "3 RUNNING, 1 reaped"
    assert status(lab, fresh) == status(lab, container) == "RUNNING"
    assert status(lab, stale) == "KILLED"
    reason = read_run(stale, lab).data.tags[REAPED_TAG]
    assert reason.startswith("no heartbeat from process 1 on elsewhere.example since ")
    assert "(heartbeat_ttl 1h); reaped at " in reason
    assert run_job(lab, "reap", heartbeat_ttl="10m") == "2 RUNNING, 0 reaped"


def test_runs_recorded_before_the_internal_prefix_are_judged_by_their_old_tags(lab, make_run, sleeper,
                                                                             dead_pid):
    now = time.time()
    old = {"bedrot.host": HOST, "bedrot.proc_start": start_ticks(sleeper.pid), "bedrot.pid_scope": tracking.pid_scope()}
    live = make_run({**old, "bedrot.pid": sleeper.pid})
    gone = make_run({**old, "bedrot.pid": dead_pid})
    fresh = make_run({"bedrot.pid": 1, "bedrot.host": "elsewhere.example", "bedrot.heartbeat": int(now - 60)})
    stale = make_run({"bedrot.pid": 1, "bedrot.host": "elsewhere.example", "bedrot.heartbeat": int(now - 7200)})
    assert run_job(lab, "reap") == "4 RUNNING, 2 reaped"
    assert status(lab, live) == status(lab, fresh) == "RUNNING"
    assert status(lab, gone) == status(lab, stale) == "KILLED"
    assert read_run(gone, lab).data.tags[REAPED_TAG].startswith(f"process {dead_pid} on {HOST} gone")


def test_runs_without_a_heartbeat_are_left_alone_unless_untracked_ttl_says(lab, make_run):
    two_days_ago = int((time.time() - 2 * 86400) * 1000)
    other_tool = make_run({"mlflow.user": "someone"}, start_time=two_days_ago)
    recent = make_run({"mlflow.user": "someone"})
    assert run_job(lab, "reap") == "2 RUNNING, 0 reaped"
    assert run_job(lab, "reap", untracked_ttl="1d") == "2 RUNNING, 1 reaped"
    assert status(lab, other_tool) == "KILLED" and status(lab, recent) == "RUNNING"
    assert read_run(other_tool, lab).data.tags[REAPED_TAG].startswith("no heartbeat, started ")


def test_reap_stops_between_runs_and_names_a_bad_option(lab, make_run, dead_pid):
    gone = make_run(internal(pid=dead_pid, host=HOST))
    stop = threading.Event()
    stop.set()
    assert run_job(lab, "reap", stop) == "1 RUNNING, 0 reaped; stopped before the end"
    assert status(lab, gone) == "RUNNING"
    for value, message in (("soon", "not a duration"), ("1m", "longer than two heartbeats")):
        with pytest.raises(ConfigError, match=message) as caught:
            run_job(lab, "reap", heartbeat_ttl=value)
        assert caught.value.key == "daemon.jobs.reap.heartbeat_ttl"


def test_the_jobs_are_the_daemons_with_gc_off_by_default(lab):
    assert {"reap", "gc"} <= set(lab.jobs) and lab.job_plugins["reap"] == lab.job_plugins["gc"] == "daemon"
    settings = DaemonSettings.from_table({})
    reap_schedule, gc_schedule = settings.schedule(lab.jobs["reap"]), settings.schedule(lab.jobs["gc"])
    assert (reap_schedule.every, reap_schedule.enabled, dict(reap_schedule.options)) == (
        900.0, True, {"heartbeat_ttl": "1h", "untracked_ttl": ""})
    assert (gc_schedule.enabled, dict(gc_schedule.options)) == (False, {"older_than_days": 30.0})
    with pytest.raises(ConfigError, match="expected float"):
        DaemonSettings.from_table({"jobs": {"gc": {"older_than_days": "30d"}}}).schedule(lab.jobs["gc"])


# -- workdirs of finished runs, for the clean job ---------------------------------------------


def test_the_clean_job_archives_a_finished_runs_old_workdir_and_leaves_a_running_ones(lab, make_run,
                                                                                      monkeypatch):
    from bedrot_lab.sandbox import clean as clean_module

    client = lab.store.client
    running, finished = make_run({}), make_run({})
    client.set_terminated(finished, status="KILLED")
    sandbox = lab.settings.zone("sandbox")
    files = {}
    for run_id in (running, finished):
        path = sandbox / "users" / "tester" / "manual" / "runs" / run_id / "out.bin"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x" * 10)
        files[run_id] = path
    later = time.time() + 40 * 86400  # when the files are 40 days old: past workdir's 30, short of default's 90
    for path in files.values():
        os.utime(path, (later - 40 * 86400, later - 40 * 86400))
    monkeypatch.setattr(clean_module, "time", SimpleNamespace(time=lambda: later))
    summary = run_job(lab, "clean", apply=True)
    assert "archived 1," in summary, summary
    assert files[running].exists() and not files[finished].exists()
    archived = list((lab.settings.zone("archive") / "sandbox").rglob("out.bin"))
    assert [p.parent.name for p in archived] == [finished]


# -- gc -----------------------------------------------------------------------------------------


def backdate(lake: Path, table: str, column: str, key: str, value: str, days: float) -> None:
    """Move ``column`` (milliseconds) of one row back by ``days``: what MLflow wrote then, as it
    would have written it that long ago (its API cannot set when a run was deleted)."""
    with sqlite3.connect(lake / "mlruns" / "mlflow.db") as con:
        changed = con.execute(f"UPDATE {table} SET {column} = {column} - ? WHERE {key} = ?",
                              (int(days * DAY_MS), value)).rowcount
    assert changed == 1


def test_gc_purges_only_runs_deleted_more_than_n_days_ago(bedrot_lake, lab, make_run):
    client = lab.store.client
    old, fresh, active = make_run({}), make_run({}), make_run({})
    client.log_text(old, "gone soon", "notes.txt")
    old_artifacts = Path(client.get_run(old).info.artifact_uri.removeprefix("file://"))
    assert old_artifacts.is_dir()
    for run_id in (old, fresh, active):
        client.set_terminated(run_id)
    client.delete_run(old)
    client.delete_run(fresh)
    backdate(bedrot_lake, "runs", "deleted_time", "run_uuid", old, 40)

    summary = run_job(lab, "gc")
    assert summary == "purged 1 runs, 0 experiments and 0 logged models deleted more than 30 days ago"
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="not found"):
        client.get_run(old)
    assert not old_artifacts.exists()
    assert client.get_run(fresh).info.lifecycle_stage == "deleted"
    assert client.get_run(active).info.lifecycle_stage == "active"


def test_gc_does_not_purge_a_deleted_experiment_holding_a_run_that_is_not_deleted(bedrot_lake, lab):
    client = lab.store.client
    experiment = lab.store.experiment_id("abandoned")
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id)
    client.delete_experiment(experiment)  # marks its runs deleted too
    client.restore_run(run_id)  # MLflow allows it; purging the experiment would purge the run
    backdate(bedrot_lake, "experiments", "last_update_time", "experiment_id", experiment, 40)
    with pytest.raises(GcRefused, match=f"holds run {run_id}, which is not deleted"):
        run_job(lab, "gc")
    assert client.get_run(run_id).info.lifecycle_stage == "active"


def test_gc_needs_the_stores_database():
    lab = SimpleNamespace(settings=SimpleNamespace(tracking_uri="http://mlflow.example:5000", config_file=None,
                                                   tracking_uri_shown="http://mlflow.example:5000"))
    with pytest.raises(ConfigError, match="leave gc off here") as caught:
        gc(JobContext(lab, threading.Event(), {"older_than_days": 30.0}))  # type: ignore[arg-type]
    assert caught.value.key == "daemon.jobs.gc.enabled"
