"""``bedrot-lab sandbox``: usage, scan, check, violations and the live watcher, as a user
types them (real subprocesses, a real lake, a real watchdog observer)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import bedrot_forked as bedrot  # what the commands do, not how they start

QUOTAS = """
[sandbox.quotas]
user = { soft = "10KiB", hard = "100KiB" }
"""


def write(path: Path, nbytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"s" * nbytes)
    return path


@pytest.fixture
def lake(bedrot_lake: Path) -> Path:
    config = bedrot_lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + QUOTAS)
    sandbox = bedrot_lake / "sandbox"
    write(sandbox / "users/ana/churn/model.bin", 4096)
    write(sandbox / "users/ana/churn/runs/0123456789abcdef0123456789abcdef/out.bin", 1000)
    write(sandbox / "users/bob/royalties/splits.parquet", 20 * 1024)
    write(sandbox / "analysis/q3/report.html", 300)
    return bedrot_lake


def usage_json(env: dict[str, str], *args: str) -> dict:
    done = bedrot("sandbox", "usage", "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_usage_by_each_grouping_with_quotas(lake: Path, cli_env) -> None:
    by_user = usage_json(cli_env)
    assert by_user["total"] == {"bytes": 4096 + 1000 + 20 * 1024 + 300, "files": 4}
    assert [(r["user"], r["bytes"], r["files"], r["soft"], r["hard"], r["over"]) for r in by_user["rows"]] == [
        ("bob", 20 * 1024, 1, 10 * 1024, 100 * 1024, "soft"), ("ana", 5096, 2, 10 * 1024, 100 * 1024, None)]
    assert by_user["watcher"] is None and by_user["as_of"]
    assert by_user["others"] == [{"area": "analysis", "bytes": 300, "files": 1, "soft": None, "hard": None,
                                  "over": None}]
    by_run = usage_json(cli_env, "--by", "run")["rows"]
    assert [(r["user"], r["project"], r["run_id"], r["bytes"]) for r in by_run] == [
        ("ana", "churn", "0123456789abcdef0123456789abcdef", 1000)]
    areas = {r["area"]: r["bytes"] for r in usage_json(cli_env, "--by", "area")["rows"]}
    assert areas == {"users": 4096 + 1000 + 20 * 1024, "analysis": 300}
    projects = [(r["user"], r["project"]) for r in usage_json(cli_env, "--by", "project")["rows"]]
    assert projects == [("bob", "royalties"), ("ana", "churn")]

    table = bedrot("sandbox", "usage", env=cli_env)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["USER", "SIZE", "FILES", "SOFT", "HARD", "OVER"]
    assert lines[1].split() == ["bob", "20.0", "KiB", "1", "10.0", "KiB", "100.0", "KiB", "soft"]
    assert lines[3].split() == ["analysis/", "(shared)", "300", "B", "1"]  # counted in the total, so listed
    assert "watcher not running" in table.stderr


def test_usage_of_a_small_sandbox_without_a_watcher_reconciles_first(lake: Path, cli_env) -> None:
    before = usage_json(cli_env)["total"]["bytes"]
    write(lake / "sandbox/users/ana/churn/new.bin", 777)
    current = usage_json(cli_env)  # no watcher, but 5 files are quickly walked: the index is brought up to date
    assert current["total"]["bytes"] == before + 777 and current["stale_since"] is None
    assert usage_json(cli_env, "--refresh")["total"]["bytes"] == before + 777
    scanned = json.loads(bedrot("sandbox", "scan", "--json", env=cli_env).stdout)
    assert (scanned["files"], scanned["bytes"], scanned["errors"]) == (5, before + 777, 0)


def test_check_exit_codes_follow_the_hardest_violation(lake: Path, cli_env) -> None:
    done = bedrot("sandbox", "check", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [(v["rule"], v["subject"], v["severity"]) for v in found["violations"]] == [
        ("quota.user", "user:bob", "soft")]
    assert [t["event"] for t in found["transitions"]] == ["new"]

    write(lake / "sandbox/users/bob/royalties/more.bin", 100 * 1024)
    done = bedrot("sandbox", "check", env=cli_env)
    assert done.returncode == 1
    assert "hard      quota.user  user:bob" in done.stdout
    assert "since the last check: 1 escalated" in done.stdout
    again = bedrot("sandbox", "check", env=cli_env)
    assert again.returncode == 1 and "since the last check" not in again.stdout  # not re-alerted

    listed = json.loads(bedrot("sandbox", "violations", "--json", env=cli_env).stdout)
    assert [(v["rule"], v["severity"], v["status"]) for v in listed] == [("quota.user", "hard", "open")]
    (lake / "sandbox/users/bob/royalties/more.bin").unlink()
    (lake / "sandbox/users/bob/royalties/splits.parquet").unlink()
    resolved = bedrot("sandbox", "check", env=cli_env)
    assert resolved.returncode == 0 and "no violations" in resolved.stdout
    assert "1 resolved" in resolved.stdout
    history = bedrot("sandbox", "violations", "--all", env=cli_env).stdout
    assert "resolved" in history and "quota.user" in history
    sink = (lake / ".bedrot-lab" / "violations.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in sink] == ["new", "escalated", "resolved"]


def test_a_config_mistake_is_one_line_naming_the_key(lake: Path, cli_env) -> None:
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text().replace('hard = "100KiB"', 'hard = "lots"'))
    done = bedrot("sandbox", "usage", env=cli_env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "sandbox.quotas.user.hard" in done.stderr, done.stderr


def test_a_missing_sandbox_folder_says_what_to_do(lake: Path, cli_env) -> None:
    import shutil

    shutil.rmtree(lake / "sandbox")
    done = bedrot("sandbox", "check", env=cli_env)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr


class Watch:
    """``bedrot-lab sandbox watch`` in a subprocess, its output read line by line."""

    def __init__(self, env: dict[str, str], *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bedrot_lab", "sandbox", "watch", *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in: {self.seen}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def test_watch_keeps_usage_live_and_reports_violations(lake: Path, cli_env) -> None:
    watch = Watch(cli_env, "--check-every", "1", "--status-every", "1")
    try:
        watch.expect("watching")
        watch.expect("sandbox violation new: [soft] quota.user user:bob")
        live = usage_json(cli_env)
        assert live["watcher"] == "inotify"
        write(lake / "sandbox/users/ana/big/blob.bin", 200 * 1024)
        watch.expect("sandbox violation new: [hard] quota.user user:ana")
        deadline = time.monotonic() + 30
        while usage_json(cli_env)["rows"][0] != {"user": "ana", "bytes": 5096 + 200 * 1024, "files": 3,
                                                  "soft": 10240, "hard": 102400, "over": "hard"}:
            assert time.monotonic() < deadline, usage_json(cli_env)
            time.sleep(0.2)
        os.remove(lake / "sandbox/users/ana/big/blob.bin")
        watch.expect("sandbox violation resolved: [hard] quota.user user:ana")
    finally:
        code = watch.stop()
    assert code == 0, watch.seen
    watch.expect("stopped")
    assert usage_json(cli_env)["watcher"] is None  # it said goodbye


def test_clean_plans_then_applies_then_restores_through_the_cli(lake: Path, cli_env) -> None:
    from mlflow import MlflowClient

    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    client = MlflowClient(lab.settings.tracking_uri)
    live = client.create_run(lab.store.experiment_id("churn")).info.run_id  # left RUNNING
    sandbox = lake / "sandbox"
    busy = write(sandbox / f"users/ana/churn/runs/{live}/partial.bin", 64)
    pinned = write(sandbox / "users/bob/royalties/final/.keep", 0)
    old = {path: path.read_bytes() for path in sandbox.rglob("*") if path.is_file() and path != busy}
    times = {path: os.stat(path).st_mtime_ns for path in old}
    time.sleep(1.2)  # every file is now older than the 0.00001 days (0.9 s) asked below
    tiny = ["--older-than", "0.00001"]

    plan = json.loads(bedrot("sandbox", "clean", *tiny, "--json", env=cli_env).stdout)
    assert plan["applied"] is False
    planned = {item["path"] for item in plan["items"]}
    assert f"users/ana/churn/runs/{live}/partial.bin" not in planned
    assert {s["path"]: s["reason"] for s in plan["skipped"]}[f"users/ana/churn/runs/{live}/partial.bin"] == \
        f"run {live} is still RUNNING"
    assert "users/bob/royalties/final/.keep" not in planned  # a pin is not itself cleaned
    assert all(path.exists() for path in old)  # a plan changes nothing

    user_plan = json.loads(bedrot("sandbox", "clean", *tiny, "--user", "bob", "--json", env=cli_env).stdout)
    assert {item["path"] for item in user_plan["items"]} == {"users/bob/royalties/splits.parquet"}

    done = bedrot("sandbox", "clean", *tiny, "--apply", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert f"archived {len(planned)} files, deleted 0" in done.stdout
    manifest = next(line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("manifest: "))
    assert busy.exists() and pinned.exists()
    for path in old:
        if path.relative_to(sandbox).as_posix() in planned:
            assert not path.exists()
    assert usage_json(cli_env)["total"]["bytes"] == 64  # the index followed the clean: only the busy file

    back = bedrot("sandbox", "restore", manifest, "users/bob", env=cli_env)  # one folder first
    assert back.returncode == 0 and "restored 1 file\n" in back.stdout, back.stdout
    assert (sandbox / "users/bob/royalties/splits.parquet").read_bytes() == old[sandbox / "users/bob/royalties/splits.parquet"]
    everything = bedrot("sandbox", "restore", manifest, "--json", env=cli_env)
    assert everything.returncode == 0, everything.stderr
    result = json.loads(everything.stdout)
    assert len(result["restored"]) == len(planned) - 1
    assert [s["reason"] for s in result["skipped"]] == ["already restored"]
    for path, data in old.items():
        assert path.read_bytes() == data and os.stat(path).st_mtime_ns == times[path], path
    assert usage_json(cli_env, "--refresh")["total"]["bytes"] == sum(map(len, old.values())) + 64

    missing = bedrot("sandbox", "restore", str(lake / "no-such.jsonl"), env=cli_env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "no-such.jsonl" in missing.stderr


def test_clean_apply_prints_every_file_it_left_alone(lake: Path, cli_env) -> None:
    from mlflow import MlflowClient

    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    live = MlflowClient(lab.settings.tracking_uri).create_run(lab.store.experiment_id("churn")).info.run_id
    sandbox = lake / "sandbox"
    write(sandbox / f"users/ana/churn/runs/{live}/partial.bin", 64)
    key = "AKIA" + "Z" * 16  # a fake AWS-style key, built here
    (sandbox / "users/ana/churn/notes.txt").write_text(f"aws_access_key_id = {key}\n")
    (sandbox / "users/ana/churn/latest").symlink_to(sandbox / "users/ana/churn/model.bin")
    time.sleep(1.2)  # every file is now older than the 0.00001 days (0.9 s) asked below
    tiny = ["--older-than", "0.00001"]
    left = {f"users/ana/churn/runs/{live}/partial.bin": f"run {live} is still RUNNING",
            "users/ana/churn/notes.txt": "holds a credential",
            "users/ana/churn/latest": "a link"}

    done = bedrot("sandbox", "clean", *tiny, "--apply", env=cli_env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("left alone: ")]
    assert len(lines) == 3, done.stdout
    for path, reason in left.items():
        assert any(line.startswith(f"left alone: {path}: {reason}") for line in lines), (path, done.stdout)
    assert "archived 4 files, deleted 0" in done.stdout
    assert key not in done.stdout + done.stderr
    assert all((sandbox / path).exists() or (sandbox / path).is_symlink() for path in left)

    write(sandbox / "users/bob/royalties/later.bin", 10)
    time.sleep(1.2)
    again = json.loads(bedrot("sandbox", "clean", *tiny, "--apply", "--json", env=cli_env).stdout)
    assert again["applied"] is True and [entry["path"] for entry in again["archived"]] == [
        "users/bob/royalties/later.bin"]
    assert {s["path"] for s in again["skipped"]} == set(left)
