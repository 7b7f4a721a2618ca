"""Compute limits per run ([compute.limits]): each limit exceeded by a small deliberate experiment in
a real lake, run by the real ``bedrot-lab run`` (a forked process, see conftest.bedrot_forked), and
read back from MLflow; overrides per user and per experiment; config mistakes; the daemon's report."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import bedrot_forked
from mlflow import MlflowClient

from bedrot_lab import JobContext
from bedrot_lab.config import ConfigError, default_tracking_uri, load_settings, settings_from
from bedrot_lab.fsutil import folder_bytes
from bedrot_lab.lab import Lab
from bedrot_lab.limits import LIMIT_TAG, LIMIT_VALUE_TAG, LIMITS_TAG, RunLimits, limits_for

MIB = 1024 * 1024

PLUGIN = '''\
"""Experiments that go past a limit on purpose, and hooks that count how runs end."""

import os
import signal
import time
from pathlib import Path

from bedrot_lab import experiment, hookimpl


def _ends(ctx):
    return ctx.settings.root / "ends.log"


@experiment("hog", params={"mib": 1500})
def hog(ctx):
    """Holds ever more memory, 16 MiB at a time."""
    ctx.log_metric("before", 1)
    time.sleep(1)  # a limited run sends its metrics every half second
    held = []
    for _ in range(ctx.params["mib"] // 16):
        held.append(b"x" * (16 << 20))  # written, so resident
        time.sleep(0.01)
    time.sleep(30)


@experiment("spin")
def spin(ctx):
    """Keeps a CPU busy for up to 30 s."""
    ctx.log_metric("before", 1)
    time.sleep(1)  # a limited run sends its metrics every half second
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pass


@experiment("sleepy", params={"seconds": 30.0, "marker": ""})
def sleepy(ctx):
    """Sleeps (after writing its run id and pid to the marker file, if given)."""
    ctx.log_metric("before", 1)
    if ctx.params["marker"]:
        Path(ctx.params["marker"]).write_text(f"{ctx.run_id} {os.getpid()}")
    time.sleep(ctx.params["seconds"])
    ctx.log_metric("after", 2)


@experiment("writer")
def writer(ctx):
    """Writes 64 KiB at a time under its workdir, up to 8 MiB, then waits."""
    ctx.log_metric("before", 1)
    time.sleep(1)  # a limited run sends its metrics every half second
    with open(ctx.workdir / "out.bin", "wb") as out:
        for _ in range(128):
            out.write(b"x" * (64 << 10))
            out.flush()
            time.sleep(0.01)
    time.sleep(30)


@experiment("quick")
def quick(ctx):
    """Logs a metric, a table and its process's pid."""
    import pandas as pd

    ctx.log_metric("answer", 42)
    ctx.log_table(pd.DataFrame({"pid": [os.getpid()]}), "pid")


@experiment("dies", params={"how": "kill"})
def dies(ctx):
    """Logs a metric, then its process ends without a word: killed -9, or os._exit(3)."""
    ctx.log_metric("before", 1)
    time.sleep(1)  # a limited run sends its metrics every half second
    if ctx.params["how"] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


@experiment("spawner", params={"pidfile": ""})
def spawner(ctx):
    """Starts a Python process in a session of its own (as a notebook's kernel is) that holds
    ever more memory, and waits for it."""
    import subprocess
    import sys

    ctx.log_metric("before", 1)
    time.sleep(1)
    hog = ("import time; held = [b'x' * (16 << 20) for _ in range(100) if time.sleep(0.01) is None]; "
           "time.sleep(30)")
    process = subprocess.Popen([sys.executable, "-c", hog], start_new_session=True)
    Path(ctx.params["pidfile"]).write_text(str(process.pid))
    process.wait()


@hookimpl
def register_experiments(register):
    for found in (hog, spin, sleepy, writer, quick, dies, spawner):
        register(found)


@hookimpl
def on_run_failure(ctx, error):
    with _ends(ctx).open("a") as log:
        log.write(f"failure {ctx.run_id} {type(error).__name__}\\n")


@hookimpl
def on_run_end(ctx, status):
    with _ends(ctx).open("a") as log:
        log.write(f"end {ctx.run_id} {status}\\n")
'''


@pytest.fixture
def limited_lake(bedrot_lake: Path, write_plugin) -> Path:
    write_plugin("limplug", PLUGIN)
    return bedrot_lake


def configure(lake: Path, text: str) -> None:
    with (lake / "bedrot-lab.toml").open("a") as handle:
        handle.write("\n" + text + "\n")


def run_cli(lake: Path, *args: str, user: str = "tester"):
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": user}
    return bedrot_forked("run", *args, env=env, cwd=lake, timeout=120)


def only_run(lake: Path, experiment: str):
    client = MlflowClient(default_tracking_uri(lake))
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def ends(lake: Path, run_id: str) -> list[str]:
    log = lake / "ends.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.rsplit(" ", 1)[-1] for line in lines if run_id in line]


LIMITS = {
    # the forked lab process holds about 250 MiB before the experiment allocates anything
    "memory": ('memory = "600MiB"', "hog", "FAILED", r"the run's processes held \d+\.\d MiB"),
    "cpu_seconds": ("cpu_seconds = 1", "spin", "FAILED", r"the run's processes used \d+\.\d CPU seconds"),
    "wall_seconds": ("wall_seconds = 2", "sleepy", "KILLED", r"the run was still going after \d+\.\d s"),
    "workdir": ('workdir = "1MiB"', "writer", "FAILED", r"the run's workdir held \d+\.\d MiB"),
}


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_a_run_past_a_limit_is_stopped_and_recorded(limited_lake: Path, key: str):
    setting, experiment, status, used = LIMITS[key]
    configure(limited_lake, f"[compute.limits]\n{setting}")
    value = setting.split(" = ")[1].strip('"')

    done = run_cli(limited_lake, experiment)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    line = f"stopped by [compute.limits] {key} = {value}: "
    assert re.search(rf"^WARNING .*compute limits apply to this run: {key}={re.escape(value)};", done.stderr, re.M)
    [shown] = [text for text in done.stderr.splitlines() if line in text]
    assert shown.startswith(f"{status}: {experiment} run ")
    run = only_run(limited_lake, experiment)
    assert run.info.run_id in shown
    assert run.info.status == status and run.info.end_time is not None
    tags = run.data.tags
    assert (tags[LIMIT_TAG], tags[LIMIT_VALUE_TAG], tags[LIMITS_TAG]) == (key, value, f"{key}={value}")
    assert re.fullmatch(re.escape(line) + used, tags["error"]), tags["error"]
    assert shown.endswith(tags["error"])
    metrics = run.data.metrics
    assert metrics["before"] == 1  # logged by the child before the limit
    assert {"run.wall_seconds", "run.cpu_seconds", "run.peak_rss_mb"} <= set(metrics)
    if key == "memory":
        assert metrics["run.peak_rss_mb"] > 600
    if key == "cpu_seconds":
        assert metrics["run.cpu_seconds"] >= 1
    # the ending is recorded once: by the child itself (wall time: SIGTERM), else by the parent
    assert ends(limited_lake, run.info.run_id) == ["RunTerminated" if key == "wall_seconds" else "ChildStopped",
                                                   status]


def test_a_run_within_its_limits_finishes_with_what_its_child_logged(limited_lake: Path):
    configure(limited_lake, '[compute.limits]\nmemory = "4GB"\ncpu_seconds = 600\nwall_seconds = 600\n'
                            'workdir = "1GB"')
    done = run_cli(limited_lake, "quick")
    assert done.returncode == 0, done.stderr
    run = only_run(limited_lake, "quick")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["answer"] == 42
    assert run.data.tags[LIMITS_TAG] == "memory=4GB cpu_seconds=600 wall_seconds=600 workdir=1GB"
    assert LIMIT_TAG not in run.data.tags and "error" not in run.data.tags
    client = MlflowClient(default_tracking_uri(limited_lake))
    table = Path(client.download_artifacts(run.info.run_id, "tables/pid.parquet", str(limited_lake / "dl")))
    import pandas as pd

    child_pid = int(pd.read_parquet(table)["pid"][0])
    assert str(child_pid) != run.data.tags["bedrot.internal.pid"]  # the body ran in a process of its own
    assert ends(limited_lake, run.info.run_id) == ["FINISHED"]


def test_without_limits_the_body_runs_in_the_lab_process(limited_lake: Path):
    done = run_cli(limited_lake, "quick")
    assert done.returncode == 0, done.stderr
    assert "compute limits" not in done.stderr
    run = only_run(limited_lake, "quick")
    assert LIMITS_TAG not in run.data.tags
    client = MlflowClient(default_tracking_uri(limited_lake))
    table = Path(client.download_artifacts(run.info.run_id, "tables/pid.parquet", str(limited_lake / "dl")))
    import pandas as pd

    assert str(int(pd.read_parquet(table)["pid"][0])) == run.data.tags["bedrot.internal.pid"]


def test_the_memory_of_a_runs_grandchildren_counts_and_they_are_stopped_with_it(limited_lake: Path,
                                                                                tmp_path: Path):
    import psutil

    configure(limited_lake, '[compute.limits]\nmemory = "600MiB"')
    pidfile = tmp_path / "grandchild.pid"
    done = run_cli(limited_lake, "spawner", "-P", f"pidfile={pidfile}")
    assert done.returncode == 1, done.stderr
    run = only_run(limited_lake, "spawner")
    assert run.info.status == "FAILED" and run.data.tags[LIMIT_TAG] == "memory"
    held = float(re.search(r"held (\d+\.\d) MiB", run.data.tags["error"]).group(1))
    assert held > 600 and run.data.metrics["run.peak_rss_mb"] < 600  # most of it in the grandchild
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 30
    while psutil.pid_exists(grandchild) and psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the run's grandchild outlived it"
        time.sleep(0.1)


@pytest.mark.parametrize(("how", "said"), [
    ("kill", "the run's process was killed by SIGKILL before it could record its end"),
    ("exit", "the run's process exited with code 3 before it could record its end"),
], ids=["kill-9", "os-exit"])
def test_a_child_that_dies_of_something_else_ends_failed(limited_lake: Path, how: str, said: str):
    configure(limited_lake, "[compute.limits]\nwall_seconds = 600")
    done = run_cli(limited_lake, "dies", "-P", f"how={how}")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    run = only_run(limited_lake, "dies")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == said
    assert said in done.stderr
    assert LIMIT_TAG not in run.data.tags
    assert run.data.metrics["before"] == 1 and "run.cpu_seconds" in run.data.metrics
    assert run.data.params["how"] == how
    assert ends(limited_lake, run.info.run_id) == ["ChildStopped", "FAILED"]


def test_a_users_limit_overrides_the_default_and_an_experiments_overrides_both(limited_lake: Path):
    configure(limited_lake, "[compute.limits]\nwall_seconds = 600\n"
                            "[compute.limits.users.ana]\nwall_seconds = 1\n"
                            "[compute.limits.experiments.quick]\nwall_seconds = 0")
    done = run_cli(limited_lake, "sleepy", user="ana")
    assert done.returncode == 1, done.stderr
    run = only_run(limited_lake, "sleepy")
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith("stopped by [compute.limits.users.ana] wall_seconds = 1: ")
    assert run.data.tags["bedrot.user"] == "ana"

    done = run_cli(limited_lake, "quick", user="ana")  # no limit at all for this experiment
    assert done.returncode == 0, done.stderr
    assert LIMITS_TAG not in only_run(limited_lake, "quick").data.tags


def test_limits_for_merges_default_user_and_experiment(tmp_path: Path):
    settings = settings_from(tmp_path, {"compute": {"limits": {
        "memory": "4GB", "cpu_seconds": 3600, "wall_seconds": 7200,
        "users": {"ana": {"memory": "8GB", "wall_seconds": 100}},
        "experiments": {"artist-clustering": {"wall_seconds": 600, "cpu_seconds": 0}}}}}, None, env={})
    assert limits_for(settings, "bob", "etl") == RunLimits(memory="4GB", cpu_seconds=3600, wall_seconds=7200)
    assert limits_for(settings, "ana", "etl") == RunLimits(memory="8GB", cpu_seconds=3600, wall_seconds=100)
    found = limits_for(settings, "ana", "artist-clustering")
    assert found == RunLimits(memory="8GB", wall_seconds=600)
    assert found.origin == {"memory": "[compute.limits.users.ana]",
                            "wall_seconds": "[compute.limits.experiments.artist-clustering]"}
    assert found.describe() == "memory=8GB wall_seconds=600"
    assert not limits_for(settings_from(tmp_path, {}, None, env={}), "ana", "etl")


@pytest.mark.parametrize(("text", "key", "message"), [
    ("[compute.limits]\nmemroy = \"4GB\"", "compute.limits.memroy", "unknown key; [compute.limits] takes memory"),
    ("[compute.limits]\nmemory = 4", "compute.limits.memory", 'expected a size such as "4GB"'),
    ("[compute.limits]\nmemory = \"lots\"", "compute.limits.memory", "got 'lots'"),
    ("[compute.limits]\nworkdir = \"10%\"", "compute.limits.workdir", 'expected a size such as "4GB", "512MiB", or'),
    ("[compute.limits]\ncpu_seconds = -1", "compute.limits.cpu_seconds", "expected seconds"),
    ("[compute.limits]\nwall_seconds = \"1h\"", "compute.limits.wall_seconds", "expected seconds"),
    ("[compute.limits]\nwall_seconds = true", "compute.limits.wall_seconds", "expected seconds"),
    ("[compute.limits.users]\nana = 5", "compute.limits.users.ana", "expected a table of limits"),
    ("[compute.limits.experiments.etl]\nthreads = 2", "compute.limits.experiments.etl.threads", "unknown key"),
    ("[compute]\nlimits = 3", "compute.limits", "expected a table, got 3"),
], ids=["unknown-key", "size-number", "size-text", "workdir-percent", "negative", "seconds-text", "seconds-bool",
        "user-not-table", "experiment-unknown-key", "not-a-table"])
def test_config_mistakes_name_the_file_and_the_key(tmp_path: Path, text: str, key: str, message: str):
    (tmp_path / "bedrot-lab.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(tmp_path, env={})
    assert str(raised.value).startswith(f"{tmp_path / 'bedrot-lab.toml'}: {key}: ")
    assert message in str(raised.value)


def test_a_config_mistake_is_one_line_from_the_cli(limited_lake: Path):
    configure(limited_lake, "[compute.limits]\nmemory = \"much\"")
    done = run_cli(limited_lake, "quick")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"{limited_lake / 'bedrot-lab.toml'}: compute.limits.memory: expected a size" in done.stderr


def test_folder_bytes_counts_files_under_a_folder(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 10)
    (tmp_path / "a" / "b" / "two").write_bytes(b"x" * 5)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "one")  # counted as itself, never followed
    assert folder_bytes(tmp_path / "a") == 15 + (tmp_path / "a" / "link").lstat().st_size
    assert folder_bytes(tmp_path / "missing") == 0


def test_the_daemons_report_lists_runs_stopped_by_limits(limited_lake: Path, tmp_path: Path):
    configure(limited_lake, '[compute.limits]\nmemory = "1MiB"')  # past it at the first look
    done = run_cli(limited_lake, "sleepy")
    assert done.returncode == 1, done.stderr
    stopped = only_run(limited_lake, "sleepy")

    lab = Lab.open(limited_lake)
    lab.jobs["report"].run(JobContext(lab, threading.Event(), {"refresh": True}))

    client = MlflowClient(default_tracking_uri(limited_lake))
    [report] = client.search_runs([client.get_experiment_by_name("housekeeping").experiment_id])
    assert report.data.metrics["limits.stopped_runs"] == 1
    text = Path(client.download_artifacts(report.info.run_id, "report.md", str(tmp_path))).read_text()
    section = text.split("## Runs stopped by compute limits", 1)[1]
    row = next(line for line in section.splitlines() if stopped.info.run_id[:8] in line)
    assert "| sleepy | tester | memory | 1MiB |" in row
    import pandas as pd

    table = pd.read_parquet(client.download_artifacts(report.info.run_id, "tables/limited_runs.parquet",
                                                      str(tmp_path)))
    assert table.to_dict("records")[0] | {"ended": None} == {
        "run_id": stopped.info.run_id, "experiment": "sleepy", "user": "tester", "limit": "memory",
        "value": "1MiB", "ended": None, "error": stopped.data.tags["error"]}


def test_sizes_are_read_as_memory_limit_reads_them():
    assert RunLimits(memory="1MiB").bytes("memory") == MIB
    assert not RunLimits()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as test_signals.py: pytest may run with SIGINT ignored


@pytest.mark.parametrize(("how", "exit_code", "name"), [
    ("ctrl-c", 130, "SIGINT"),  # the terminal's SIGINT reaches the lab's process and its child
    ("kill", 143, "SIGTERM"),  # SIGTERM reaches the lab's process only
    ("kill-9", -9, ""),  # the lab's process dies: its child must not go on unwatched
], ids=["ctrl-c", "sigterm", "kill-9-of-the-lab"])
def test_an_interrupt_of_the_lab_reaches_the_limited_run(limited_lake: Path, tmp_path: Path, how: str,
                                                         exit_code: int, name: str):
    import psutil

    configure(limited_lake, "[compute.limits]\nwall_seconds = 600")
    marker = tmp_path / "started"
    process = subprocess.Popen(
        [sys.executable, "-m", "bedrot_lab", "run", "sleepy", "-P", f"marker={marker}", "-P", "seconds=120"], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint,
        env={**os.environ, "BEDROT_LAKE": str(limited_lake), "BEDROT_USER": "tester"})
    try:
        deadline = time.monotonic() + 90
        while not marker.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the run never started: {process.communicate()[1]}")
            time.sleep(0.05)
        run_id, child = marker.read_text().split()
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM if how == "kill" else signal.SIGKILL)
        _, stderr = process.communicate(timeout=60)
        if how == "kill-9":  # the child is told (SIGTERM) and records its failure, not its end
            deadline = time.monotonic() + 30
            while psutil.pid_exists(int(child)) and psutil.Process(int(child)).status() != psutil.STATUS_ZOMBIE:
                assert time.monotonic() < deadline, "the run's process outlived the lab's"
                time.sleep(0.1)
            assert process.returncode == exit_code and only_run(limited_lake, "sleepy").info.status == "RUNNING"
            assert ends(limited_lake, run_id) == ["RunTerminated", "KILLED"]
            return
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr
    run = only_run(limited_lake, "sleepy")
    assert run.info.run_id == run_id
    assert run.info.status == "KILLED" and run.data.tags["error"] == f"interrupted by {name}"
    assert run.data.metrics["before"] == 1 and "run.cpu_seconds" in run.data.metrics
    # the child recorded its own end, once, however many times the interrupt reached it
    assert ends(limited_lake, run.info.run_id) == ["KeyboardInterrupt" if name == "SIGINT" else "RunTerminated",
                                                   "KILLED"]
