"""The ``report`` housekeeping job on a real temporary lake: real files in its sandbox, quotas in
its bedrot-lab.toml, a real clean between reports, and every run read back from MLflow.

Ages: as in test_sandbox_clean.py, ctime cannot be set, so the clean's plan is made at ``LATER``
(100 days after the real now, when every ctime is 100 days old); files that must not be stale
get atime and mtime at ``LATER``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bedrot_lab import JobContext
from bedrot_lab.jobs import JobStopped
from bedrot_lab.lab import Lab
from bedrot_lab.sandbox.archive import ARCHIVE_AREA, MANIFEST_KIND, MANIFEST_VERSION, MANIFESTS_DIR
from bedrot_lab.sandbox.clean import apply_clean, plan_clean
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.report import EXPERIMENT, JOB_TAG, REPORT_JOB, metric_part
from bedrot_lab.sandbox.rules import effective_rules
from bedrot_lab.sandbox.settings import DAY

LATER = time.time() + 100 * DAY
KIB = 1024
QUOTAS = """
[sandbox.quotas]
user = { soft = "1KiB", hard = "10KiB" }
total = { soft = "64KiB", hard = "1MiB" }

[[sandbox.stale]]
name = "logs"
glob = "*.log"
days = 30
action = "delete"
"""
PNG = b"\x89PNG\r\n\x1a\n"


def write(root: Path, relative: str, size: int, *, fresh: bool = False) -> Path:
    path = root / "sandbox" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if fresh:  # not stale even at LATER
        os.utime(path, (LATER, LATER))
    return path


def open_lab(lake: Path, config: str = "") -> Lab:
    with (lake / "bedrot-lab.toml").open("a") as handle:
        handle.write(config)
    return Lab.open(lake)


def run_report(lab: Lab, **options) -> str:
    job = lab.jobs["report"]
    return job.run(JobContext(lab, threading.Event(), {"refresh": True, **options}))


def reports(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], filter_string=f"tags.`{JOB_TAG}` = 'report'",
                                   order_by=["attributes.start_time ASC"]))


def artifact(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> Path:
    folder = tmp_path / "downloads" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(folder)))


def table(client: MlflowClient, run_id: str, name: str, tmp_path: Path) -> list[dict]:
    data = json.loads(artifact(client, run_id, f"tables/{name}.json", tmp_path).read_text())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def test_the_sandbox_registers_the_report_job(bedrot_lab: Lab):
    assert bedrot_lab.jobs["report"] is REPORT_JOB
    assert REPORT_JOB.every == "1d" and set(REPORT_JOB.options) == {"history", "chart_rows", "refresh"}


def test_two_reports_with_a_clean_between(bedrot_lake: Path, tmp_path: Path):
    lab = open_lab(bedrot_lake, QUOTAS)
    write(bedrot_lake, "users/ana/churn/model.bin", 12 * KIB)  # over ana's hard limit
    write(bedrot_lake, "users/bob/notes/a.txt", 200, fresh=True)
    old_log = write(bedrot_lake, "users/bob/notes/old.log", 300)  # stale at LATER: deleted by the logs rule
    old_tmp = write(bedrot_lake, "users/bob/notes/old.tmp", 400)  # stale at LATER: archived by the tmp rule
    write(bedrot_lake, "users/zoë.k/x.txt", 10, fresh=True)  # a name MLflow cannot take as it is
    write(bedrot_lake, "analysis/q3.csv", 2 * KIB)
    lab.jobs["reconcile"].run(JobContext(lab, threading.Event(), {}))
    check = lab.jobs["check"].run(JobContext(lab, threading.Event(), {}))
    assert "1 hard" in check  # quota.user of ana

    first = run_report(lab)
    assert re.match(r"run \w{8}: 14\.9 KiB in 6 files, 1 over quota \(1 hard\), 1 open violations, 0 B reclaimed",
                    first), first

    # between the reports: bob writes more (over his soft limit), a real clean reclaims his stale files
    write(bedrot_lake, "users/bob/notes/more.bin", 3 * KIB, fresh=True)
    rules = effective_rules(lab.settings, lab.plugins.hook)
    with UsageIndex.for_settings(lab.settings) as index:
        index.reconcile()
        plan = plan_clean(lab.settings, index, user="bob", now=LATER, rules=rules)
        assert sorted(item.path for item in plan.items) == ["users/bob/notes/old.log", "users/bob/notes/old.tmp"]
        result = apply_clean(lab.settings, plan, index, rules=rules)
    assert len(result.deleted) == 1 and len(result.archived) == 1 and not old_log.exists() and not old_tmp.exists()

    second = run_report(lab)
    assert "700 B reclaimed" in second and "2 over quota (1 hard)" in second

    client = MlflowClient(lab.settings.tracking_uri)
    runs = reports(client)
    assert len(runs) == 2
    assert client.get_experiment_by_name(EXPERIMENT).tags["mlflow.experimentKind"] == "custom_model_development"
    one, two = runs
    today = time.strftime("%Y-%m-%d")
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"usage report {today}"
        assert run.data.tags[JOB_TAG] == "report" and run.data.tags["bedrot.report.quotas"] == "yes"
        assert "Sandbox usage report" in run.data.tags["mlflow.note.content"]

    m1, m2 = one.data.metrics, two.data.metrics
    zoe = f"usage.user.{metric_part('zoë.k')}.bytes"
    assert re.fullmatch(r"usage\.user\.zo_k-[0-9a-f]{6}\.bytes", zoe)
    assert {"usage.user.ana.bytes": 12 * KIB, "usage.user.ana.files": 1, "usage.user.bob.bytes": 900,
            "usage.user.bob.files": 3, zoe: 10, "usage.project.ana.churn.bytes": 12 * KIB,
            "usage.project.bob.notes.bytes": 900, "usage.area.analysis.bytes": 2 * KIB,
            "usage.area.users.bytes": 12 * KIB + 910, "usage.total.bytes": 14 * KIB + 910, "usage.total.files": 6,
            "violations.open": 1, "violations.open.hard": 1, "violations.open.soft": 0,
            "violations.quota.user.hard": 1, "reclaimed.bytes": 0, "reclaimed.files": 0,
            "index.watcher_live": 0}.items() <= m1.items()
    assert 0 <= m1["index.age_seconds"] < 60 and 0 <= m1["index.reconcile_age_seconds"] < 60
    assert {"usage.user.bob.bytes": 200 + 3 * KIB, "usage.user.bob.files": 2,
            "usage.total.bytes": 17 * KIB + 210, "usage.total.files": 5,
            "reclaimed.bytes": 700, "reclaimed.files": 2, "reclaimed.deleted.bytes": 300,
            "reclaimed.archived.bytes": 400}.items() <= m2.items()
    assert all(re.fullmatch(r"[a-z_]+(\.[A-Za-z0-9_-]+)+", key) for key in m2)

    # the usage table: parquet beside the MLflow table, one row per user, project, area and the total
    rows = {(row["scope"], row["name"]): row for row in table(client, two.info.run_id, "usage", tmp_path)}
    assert rows[("user", "ana")]["status"] == "hard" and rows[("user", "ana")]["hard_bytes"] == 10 * KIB
    assert rows[("user", "bob")]["status"] == "soft" and rows[("user", "bob")]["bytes"] == 200 + 3 * KIB
    assert rows[("total", "")]["bytes"] == 17 * KIB + 210 and rows[("area", "analysis")]["status"] == ""
    assert artifact(client, two.info.run_id, "tables/usage.parquet", tmp_path).stat().st_size > 0

    for run in runs:
        for figure in ("figures/usage_vs_limits.png", "figures/total_usage.png"):
            png = artifact(client, run.info.run_id, figure, tmp_path)
            assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000

    report = artifact(client, two.info.run_id, "report.md", tmp_path).read_text()
    assert "| user ana | 12.0 KiB | 1.0 KiB | 10.0 KiB | **hard (120%)** |" in report, report
    assert "| user bob | 3.2 KiB |" in report and "**700 B** in 2 files (400 B archived, 300 B deleted)" in report

    # the line chart's data: both reports, oldest first
    history = table(client, two.info.run_id, "history", tmp_path)
    assert [(p["run_id"], p["bytes"]) for p in history] == [(one.info.run_id, 14 * KIB + 910),
                                                            (two.info.run_id, 17 * KIB + 210)]

    # the clean's manifest is counted once: a third report reclaims nothing more
    counted = json.loads(artifact(client, two.info.run_id, "reclaimed.json", tmp_path).read_text())
    assert list(counted["manifests"].values()) == [2]
    assert "0 B reclaimed" in run_report(lab)
    assert len(reports(client)) == 3


def test_report_options_come_from_the_daemon_table(bedrot_lake: Path, tmp_path: Path):
    from bedrot_lab.daemon.settings import DaemonSettings

    lab = open_lab(bedrot_lake, QUOTAS + "\n[daemon.jobs.report]\nevery = \"12h\"\nhistory = 2\nchart_rows = 1\n"
                   "refresh = true\n")
    write(bedrot_lake, "users/ana/p/a.bin", 2 * KIB)
    write(bedrot_lake, "users/bob/p/b.bin", 100)
    schedule = DaemonSettings.from_settings(lab.settings).schedule(lab.jobs["report"])
    assert schedule.options == {"history": 2, "chart_rows": 1, "refresh": True}
    for _ in range(3):
        REPORT_JOB.run(JobContext(lab, threading.Event(), schedule.options))
    client = MlflowClient(lab.settings.tracking_uri)
    runs = reports(client)
    assert len(runs) == 3
    history = table(client, runs[-1].info.run_id, "history", tmp_path)
    assert [point["run_id"] for point in history] == [run.info.run_id for run in runs[-2:]]


def test_a_clean_running_during_a_report_is_counted_in_full_once(bedrot_lake: Path):
    """Entries written to a manifest after a report read it count in the next report, the rest never again."""
    lab = open_lab(bedrot_lake)
    folder = bedrot_lake / "5_archive" / ARCHIVE_AREA / time.strftime("%Y-%m-%d") / MANIFESTS_DIR
    folder.mkdir(parents=True)
    manifest = folder / "clean-030000-abcdef.jsonl"

    def entry(path: str, size: int) -> str:
        return json.dumps({"path": path, "archived": None, "size": size, "action": "delete"}) + "\n"

    manifest.write_text(json.dumps({"kind": MANIFEST_KIND, "version": MANIFEST_VERSION}) + "\n" + entry("a", 100))
    assert "100 B reclaimed" in run_report(lab)
    with manifest.open("a") as handle:
        handle.write(entry("b", 20) + entry("c", 3))
    assert "23 B reclaimed" in run_report(lab)
    assert "0 B reclaimed" in run_report(lab)


def test_an_empty_sandbox_without_quotas_is_cheap(bedrot_lake: Path, tmp_path: Path):
    lab = open_lab(bedrot_lake)
    summary = run_report(lab)
    assert summary.endswith("0 B in 0 files, 0 over quota (0 hard), 0 open violations, 0 B reclaimed")
    client = MlflowClient(lab.settings.tracking_uri)
    (run,) = reports(client)
    assert run.data.tags["bedrot.report.quotas"] == "no"
    assert run.data.metrics["usage.total.bytes"] == 0 and run.data.metrics["violations.open"] == 0
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"report.md", "reclaimed.json", "tables"}  # no figures: nothing to draw
    assert {a.path for a in client.list_artifacts(run.info.run_id, "tables")} == {
        "tables/history.json", "tables/history.parquet"}
    report = artifact(client, run.info.run_id, "report.md", tmp_path).read_text()
    assert "No quotas are set" in report
    assert not (lab.settings.state_dir / "violations.db").exists()


def test_an_index_never_built_is_built_first(bedrot_lake: Path):
    lab = open_lab(bedrot_lake, QUOTAS)
    write(bedrot_lake, "users/ana/p/f.bin", 100)
    summary = run_report(lab, refresh=False)
    assert "100 B in 1 file," in summary, summary
    (run,) = reports(MlflowClient(lab.settings.tracking_uri))
    assert run.data.metrics["usage.user.ana.bytes"] == 100 and run.data.metrics["index.reconcile_age_seconds"] < 60
    with UsageIndex.for_settings(lab.settings) as index:
        assert index.info()["full_scans"] == 1


def test_a_stopping_daemon_logs_no_report(bedrot_lake: Path):
    lab = open_lab(bedrot_lake)
    stop = threading.Event()
    stop.set()
    with pytest.raises(JobStopped):
        REPORT_JOB.run(JobContext(lab, stop, {}))
    assert MlflowClient(lab.settings.tracking_uri).get_experiment_by_name(EXPERIMENT) is None


class StopAfter(threading.Event):
    """A stop event that the daemon sets once the job has checked it ``checks`` times."""

    def __init__(self, checks: int):
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        if self.checks < 0:
            self.set()
        return super().is_set()


def test_a_stop_during_the_report_ends_its_run_killed(bedrot_lake: Path):
    lab = open_lab(bedrot_lake, QUOTAS)
    write(bedrot_lake, "users/ana/p/a.bin", 2 * KIB)
    lab.jobs["reconcile"].run(JobContext(lab, threading.Event(), {}))
    with pytest.raises(JobStopped):
        REPORT_JOB.run(JobContext(lab, StopAfter(3), {"refresh": True}))  # the fourth check is in the run
    (run,) = reports(MlflowClient(lab.settings.tracking_uri))
    assert run.info.status == "KILLED" and run.data.metrics["usage.user.ana.bytes"] == 2 * KIB


@pytest.mark.parametrize(("name", "part"), [
    ("ana", "ana"), ("a-b_C9", "a-b_C9"), ("a.b", None), ("a b", None), ("", None), ("x" * 300, None)])
def test_metric_parts_keep_mlflow_characters_and_never_collide(name: str, part: str | None):
    got = metric_part(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,80}", got)
    if part is not None:
        assert got == part
    else:
        assert re.fullmatch(r".+-[0-9a-f]{6}", got) and got != metric_part(name.replace(".", "_") + "!")
