"""A run and the sandbox: its workdir's bytes logged and listed by run, and the quota gate
at start (refused over a hard limit, warned and tagged over a soft one)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.runner import RunRefused, prepare, run
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.runs import quota_gate
from bedrot_lab.testing import read_run
from tests.conftest import bedrot_forked as bedrot  # what the commands do, not how they start

SCRATCH = """
    import os
    from bedrot_lab import Param, experiment, hookimpl

    @experiment("scratch", params={"nbytes": Param(int, 3000), "fail": False})
    def scratch(ctx):
        '''Writes nbytes into its workdir, in a sub-folder too, and a link that must not be followed.'''
        (ctx.workdir / "out.bin").write_bytes(b"x" * ctx.params["nbytes"])
        (ctx.workdir / "sub").mkdir()
        (ctx.workdir / "sub" / "part.bin").write_bytes(b"y" * 100)
        os.symlink("/etc/hostname", ctx.workdir / "link")
        if ctx.params["fail"]:
            raise RuntimeError("failed after writing")

    @experiment("quiet")
    def quiet(ctx):
        '''Writes nothing to the sandbox.'''
        ctx.log_metric("one", 1)

    @hookimpl
    def register_experiments(register):
        register(scratch)
        register(quiet)
"""

QUOTAS = """
[sandbox.quotas]
user = { soft = "10KiB", hard = "100KiB" }
projects."tester/capped" = { hard = "1KiB" }
"""


@pytest.fixture
def lake(bedrot_lake: Path, write_plugin) -> Path:
    write_plugin("scratch", SCRATCH)
    return bedrot_lake


def with_quotas(lake: Path) -> Lab:
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + QUOTAS)
    return Lab.open(lake)


def fill(lake: Path, relative: str, nbytes: int) -> Path:
    path = lake / "sandbox" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"z" * nbytes)
    return path


def link_size() -> int:
    return len("/etc/hostname")  # a link's own size is its target's length


def test_a_runs_workdir_bytes_are_logged_and_listed_by_run(lake: Path) -> None:
    lab = Lab.open(lake)
    with UsageIndex.for_settings(lab.settings) as index:
        index.full_scan()  # an index exists: the run brings its own folder up to date in it
    result = run(lab, prepare(lab, "scratch", {"nbytes": "4096"}))
    assert result.status == "FINISHED"
    expected = 4096 + 100 + link_size()
    assert read_run(result.run_id, lab).data.metrics["run.sandbox_bytes"] == expected
    with UsageIndex.for_settings(lab.settings) as index:
        rows = index.usage("run")
        assert rows == [{"user": "tester", "project": "scratch", "run_id": result.run_id,
                         "bytes": expected, "files": 3}]
        assert index.run_bytes(result.run_id) == expected
        assert index.reconcile().changed == 0  # nothing was left for a reconcile to find


def test_a_failed_run_still_logs_its_bytes_and_a_quiet_run_logs_zero(lake: Path) -> None:
    lab = Lab.open(lake)
    failed = run(lab, prepare(lab, "scratch", {"nbytes": "10", "fail": "true"}))
    assert failed.status == "FAILED"
    assert read_run(failed.run_id, lab).data.metrics["run.sandbox_bytes"] == 10 + 100 + link_size()
    quiet = run(lab, prepare(lab, "quiet", {}))
    assert read_run(quiet.run_id, lab).data.metrics["run.sandbox_bytes"] == 0
    assert not (lake / "sandbox" / "users" / "tester" / "quiet").exists()  # no workdir made for it
    assert not (lab.settings.state_dir / "sandbox.db").exists()  # no index was asked for: none made


def test_no_quota_means_no_index_and_no_gate(lake: Path) -> None:
    lab = Lab.open(lake)
    fill(lake, "users/tester/scratch/huge.bin", 1 << 20)
    assert quota_gate(lab.settings, "scratch").violations == ()
    assert not (lab.settings.state_dir / "sandbox.db").exists()


def test_over_a_hard_user_quota_the_run_is_refused_before_it_exists(lake: Path) -> None:
    lab = with_quotas(lake)
    fill(lake, "users/tester/old/data.bin", 150 * 1024)
    fill(lake, "users/someone-else/p/data.bin", 500 * 1024)  # not tester's
    with pytest.raises(RunRefused) as caught:
        run(lab, prepare(lab, "quiet", {}))
    message = str(caught.value)
    assert "user tester holds 150.0 KiB" in message and "hard limit of 100.0 KiB" in message
    assert "bedrot-lab sandbox usage --by project" in message
    client = MlflowClient(lab.settings.tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_the_gate_sees_what_changed_without_a_watcher(lake: Path) -> None:
    lab = with_quotas(lake)
    big = fill(lake, "users/tester/old/data.bin", 150 * 1024)
    assert quota_gate(lab.settings, "quiet").hard
    big.unlink()  # freed by hand: the next run starts, though no watcher saw it
    gate = quota_gate(lab.settings, "quiet")
    assert gate.violations == ()
    assert run(lab, prepare(lab, "quiet", {})).status == "FINISHED"


def test_over_a_hard_project_quota_only_that_project_is_refused(lake: Path) -> None:
    lab = with_quotas(lake)
    fill(lake, "users/tester/capped/data.bin", 2048)
    gate = quota_gate(lab.settings, "capped")
    assert [(v.rule, v.subject, v.measured, v.limit) for v in gate.hard] == [
        ("quota.project", "project:tester/capped", 2048, 1024)]
    assert quota_gate(lab.settings, "scratch").hard == []


def test_over_a_soft_quota_the_run_starts_warned_and_tagged(lake: Path, caplog) -> None:
    lab = with_quotas(lake)
    fill(lake, "users/tester/old/data.bin", 20 * 1024)
    result = run(lab, prepare(lab, "quiet", {}))
    assert result.status == "FINISHED"
    tag = read_run(result.run_id, lab).data.tags["bedrot.sandbox.quota"]
    assert tag == "user tester holds 20.0 KiB in 1 file, over its soft limit of 10.0 KiB"
    assert any("soft sandbox quota" in r.getMessage() for r in caplog.records)


def test_cli_refusal_is_one_line_with_exit_1(lake: Path, cli_env) -> None:
    with_quotas(lake)
    fill(lake, "users/tester/old/data.bin", 150 * 1024)
    done = bedrot("run", "quiet", env=cli_env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "over its hard limit of 100.0 KiB" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    os.remove(lake / "sandbox/users/tester/old/data.bin")
    assert bedrot("run", "quiet", env=cli_env).returncode == 0


def test_a_plugins_quota_rule_is_the_one_the_run_gate_uses(lake: Path, write_plugin) -> None:
    write_plugin("strict_quota", """
        from bedrot_lab import Violation, hookimpl

        class NoBigFiles:
            name = "quota"  # replaces the built-in quota rule

            def evaluate(self, index, now):
                for row in index.usage("user"):
                    if row["bytes"] > 1000:
                        yield Violation("quota.user", f"user:{row['user']}", row["bytes"], 1000, "hard",
                                        f"user {row['user']} holds more than 1000 bytes")

        @hookimpl
        def sandbox_rules(settings):
            return [NoBigFiles()]
    """)
    lab = Lab.open(lake)  # no [sandbox.quotas] at all: only the plugin's rule limits
    fill(lake, "users/tester/old/data.bin", 2000)
    with pytest.raises(RunRefused, match="user tester holds more than 1000 bytes"):
        run(lab, prepare(lab, "quiet", {}))
    fill(lake, "users/tester/old/data.bin", 10)
    assert run(lab, prepare(lab, "quiet", {})).status == "FINISHED"
