"""One run's whole record, read back through MlflowClient; failures, hooks, secrets, sweeps."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from bedrot_lab import hookimpl
from bedrot_lab.experiments import ParamError
from bedrot_lab.lab import Lab
from bedrot_lab.runner import prepare, run
from bedrot_lab.specs import SpecError, load_spec, run_sweep, spec_requests
from bedrot_lab.testing import read_run, run_experiment

RECORDER = """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from bedrot_lab import Param, experiment, hookimpl
    __version__ = "0.3"

    @experiment("record", datasets=["track_catalog"], params={
        "factor": Param(float, 1.5, "a multiplier"), "label": "x", "n": Param(int, 3), "flag": False})
    def record(ctx):
        '''Log one of everything.

        Methodology goes here.'''
        catalog = ctx.load("track_catalog")
        ctx.log_metrics({"rows": len(catalog), "scaled": len(catalog) * ctx.params["factor"]})
        ctx.log_metric("series", 1.0, step=1)
        ctx.log_metric("series", 2.0, step=2)
        ctx.log_metric("ratio", float("nan"))
        ctx.log_table(catalog, "catalog copy")
        fig, ax = plt.subplots()
        ax.plot([1, 2], [3, 4])
        ctx.log_figure(fig, "line")
        ctx.report("## Findings\\n\\nAll good.")
        ctx.log_output(pd.DataFrame({"artist": ["A", "B"], "share": [100.0, 50.0]}), "shares")
        (ctx.workdir / "scratch.txt").write_text("kept in the sandbox")
        ctx.set_tag("best_store", "Spotify")

    @experiment("explode")
    def explode(ctx):
        '''Fails on purpose.'''
        ctx.log_metric("before", 1)
        raise ValueError("boom at row 7")

    @hookimpl
    def register_experiments(register):
        register(record)
        register(explode)
"""

CATALOG_CSV = """artist,title,your_revenue_share,isrc,upc,release_date,release_type,royalty_percentage
NOVA VANTA,NIGHT DRIVE,100,QZABC2400001,123456789012,2024-02-01,single,100
NOVA VANTA,GLASS HEART (feat. GLASS ORCHID),60,QZABC2400002,123456789013,2024-05-10,single,100
"""


@pytest.fixture
def lab(bedrot_lake, write_plugin):
    write_plugin("recorder", RECORDER)
    (bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(CATALOG_CSV)
    return Lab.open(bedrot_lake)


def test_a_run_records_params_metrics_artifacts_inputs_tags_and_description(lab, bedrot_lake):
    subprocess.run(["git", "init", "-q", str(bedrot_lake)], check=True)
    subprocess.run(["git", "-C", str(bedrot_lake), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                    "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    result = run(lab, prepare(lab, "record", {"n": "7"}, note="checking the record", run_name="full"))
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)

    assert stored.info.status == "FINISHED" and stored.info.run_name == "full"
    assert stored.data.params == {"factor": "1.5", "label": "x", "n": "7", "flag": "False"}
    metrics = stored.data.metrics
    assert metrics["rows"] == 2 and metrics["scaled"] == 3.0
    assert {"run.wall_seconds", "run.cpu_seconds", "run.peak_rss_mb"} <= set(metrics)
    assert metrics["run.peak_rss_mb"] > 10
    assert "ratio" not in metrics
    assert not [m for m in metrics if m.startswith("system/")]  # short runs: no system metrics
    history = MlflowClient(lab.settings.tracking_uri).get_metric_history(result.run_id, "series")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 2.0)]

    tags = stored.data.tags
    assert tags["skipped.ratio"] == "value is nan"
    assert tags["best_store"] == "Spotify"
    assert tags["bedrot.user"] == tags["mlflow.user"] == "tester"
    assert (tags["bedrot.plugin"], tags["bedrot.plugin_version"]) == ("recorder", "0.3")
    assert tags["bedrot.internal.plugin_source"] == "path" and tags["bedrot.internal.host"]
    head = subprocess.run(["git", "-C", str(bedrot_lake), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == head.stdout.strip()
    description = tags["mlflow.note.content"]
    assert "checking the record" in description and "Methodology goes here." in description

    client = MlflowClient(lab.settings.tracking_uri)
    files = {a.path for a in client.list_artifacts(result.run_id)} | {
        a.path for d in ("tables", "figures", "outputs") for a in client.list_artifacts(result.run_id, d)}
    assert {"report.md", "tables/catalog_copy.parquet", "tables/catalog_copy.json", "figures/line.png",
            "outputs/shares.parquet", "outputs/shares.json"} <= files
    local = client.download_artifacts(result.run_id, "outputs/shares.json")
    record = json.loads(Path(local).read_text())
    assert (record["rows"] == 2 and record["schema"] == {"artist": "object", "share": "float64"}) or record["rows"] == 2
    assert tags["output.shares.sha256"] == record["sha256"]
    report = Path(client.download_artifacts(result.run_id, "report.md")).read_text()
    assert "## Findings" in report

    (data_input,) = stored.inputs.dataset_inputs
    input_tags = {t.key: t.value for t in data_input.tags}
    import hashlib

    expected = hashlib.sha256((bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").read_bytes()).hexdigest()
    assert input_tags["sha256"] == expected and data_input.dataset.digest == expected[:32]
    assert data_input.dataset.name == "track_catalog"
    assert "track_catalog_royalty_splits.csv" in data_input.dataset.source
    workdir = bedrot_lake / "sandbox" / "users" / "tester" / "record" / "runs" / result.run_id
    assert (workdir / "scratch.txt").read_text() == "kept in the sandbox"


def test_a_failing_experiment_ends_failed_with_traceback_and_error_tag(lab):
    result = run_experiment(lab, "explode")
    assert (result.status, result.error, result.exit_code) == ("FAILED", "ValueError: boom at row 7", 1)
    stored = read_run(result.run_id, lab)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["error"] == "ValueError: boom at row 7"
    assert stored.data.metrics["before"] == 1  # what was logged before the failure is kept
    client = MlflowClient(lab.settings.tracking_uri)
    traceback_text = Path(client.download_artifacts(result.run_id, "error/traceback.txt")).read_text()
    assert "Traceback" in traceback_text and 'raise ValueError("boom at row 7")' in traceback_text


def test_params_are_checked_before_any_run_is_created(lab):
    with pytest.raises(ParamError, match=r"no param 'nn'; valid params: factor \(float, default 1.5\): a multiplier"):
        prepare(lab, "record", {"nn": "1"})
    with pytest.raises(ParamError, match="param 'n' must be int, got 'seven'"):
        prepare(lab, "record", {"n": "seven"})
    with pytest.raises(ParamError, match="param 'flag' must be bool"):
        prepare(lab, "record", {"flag": "maybe"})
    client = MlflowClient(lab.settings.tracking_uri)
    assert client.get_experiment_by_name("record") is None


def test_param_coercion():
    from bedrot_lab import Param

    assert Param(int, 1, name="n").coerce("42") == 42
    assert Param(float, 1, name="f").coerce("0.25") == 0.25
    assert Param(bool, False, name="b").coerce("yes") is True
    assert Param(str, "a", name="s", choices=("a", "b")).coerce("b") == "b"
    with pytest.raises(ParamError, match="must be one of"):
        Param(str, "a", name="s", choices=("a", "b")).coerce("c")
    with pytest.raises(ParamError, match=r"within \[0, 10\]"):
        Param(int, 1, name="n", min=0, max=10).coerce("11")
    with pytest.raises(ParamError, match="must be int"):
        Param(int, 1, name="n").coerce(2.5)


FAKE_AWS_KEY = "AKIA" + "Q" * 16
FAKE_META_TOKEN = "EAA" + "b1" * 20


def test_secrets_never_reach_mlflow(bedrot_lake, write_plugin):
    write_plugin("leaky", """
        from bedrot_lab import experiment, hookimpl

        @experiment("leaky", params={"api_token": "", "note": "", "size": 1})
        def leaky(ctx):
            pass

        @hookimpl
        def register_experiments(register):
            register(leaky)

        @hookimpl
        def run_tags():
            return {"meta_access_token": "whatever-value", "origin": "-----BEGIN RSA PRIVATE KEY-----"}
    """)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "leaky", api_token="s3cr3t-value", note=f"key {FAKE_AWS_KEY}")
    stored = read_run(result.run_id, lab)
    assert stored.data.params == {"api_token": "****", "note": "key ****", "size": "1"}
    assert stored.data.tags["meta_access_token"] == "****" and stored.data.tags["origin"] == "****"
    masked = stored.data.tags["bedrot.internal.masked"]
    assert "param api_token (name)" in masked and "param note (AWS access key)" in masked
    assert "tag origin (private key)" in masked
    everything = json.dumps([stored.data.params, stored.data.tags])
    assert FAKE_AWS_KEY not in everything and "s3cr3t-value" not in everything


def test_secret_detection_by_name_and_value():
    from bedrot_lab.secrets import is_secret_name, secret_kind

    assert all(map(is_secret_name, ["api_key", "metaAccessToken", "DB_PASSWORD", "client-secret", "AWS_ACCESS_KEY_ID"]))
    assert not any(map(is_secret_name, ["max_tokens", "author", "retention_months", "keyword"]))
    assert secret_kind(f"x {FAKE_META_TOKEN} y") == "Meta access token"
    assert secret_kind("password = hunter2hunter2") == "credential assignment"
    assert secret_kind("nothing to see") is None


def test_hooks_fire_in_order(bedrot_lake, write_plugin):
    calls = []

    class Recording:
        @hookimpl
        def validate_run(self, experiment, params):
            calls.append(("validate_run", experiment.name))

        @hookimpl
        def on_run_end(self, ctx, status):
            calls.append(("on_run_end", ctx.run_id, status))
            ctx.log_metric("ended", 1)

        @hookimpl
        def run_tags(self, experiment, params):
            calls.append(("run_tags", experiment.name, dict(params)))
            return {"recorded": "yes"}

        @hookimpl
        def before_run(self, ctx):
            calls.append(("before_run", ctx.run_id))

        @hookimpl
        def after_run(self, ctx):
            calls.append(("after_run", ctx.run_id))

        @hookimpl
        def on_run_failure(self, ctx, error):
            calls.append(("on_run_failure", ctx.run_id, str(error)))

    write_plugin("steps", """
        from bedrot_lab import experiment, hookimpl

        @experiment("ok")
        def ok(ctx):
            ctx.log_metric("x", 1)

        @experiment("bad")
        def bad(ctx):
            raise KeyError("missing")

        @hookimpl
        def register_experiments(register):
            register(ok)
            register(bad)
    """)
    lab = Lab.open(bedrot_lake)
    lab.plugins.pm.register(Recording(), name="recording")
    try:
        good = run_experiment(lab, "ok")
        failed = run_experiment(lab, "bad")
    finally:
        lab.plugins.pm.unregister(name="recording")
    assert calls == [
        ("validate_run", "ok"), ("run_tags", "ok", {}), ("before_run", good.run_id), ("after_run", good.run_id),
        ("on_run_end", good.run_id, "FINISHED"),
        ("validate_run", "bad"), ("run_tags", "bad", {}), ("before_run", failed.run_id),
        ("on_run_failure", failed.run_id, "'missing'"), ("on_run_end", failed.run_id, "FAILED"),
    ]
    assert read_run(good.run_id, lab).data.tags["recorded"] == "yes"
    assert read_run(failed.run_id, lab).data.metrics["ended"] == 1


def test_a_spec_with_a_sweep_runs_children_under_one_parent(lab, bedrot_lake):
    spec_file = bedrot_lake / "experiments" / "record-sweep.toml"
    spec_file.write_text(
        'experiment = "record"\nname = "grid"\npurpose = "See how n matters."\n'
        'methodology = "Vary n and factor."\n[params]\nlabel = "swept"\n[sweep]\nn = [1, 2]\nfactor = [0.5, 2.0]\n'
    )
    spec = load_spec(spec_file)
    parent, children = spec_requests(lab, spec, {})
    assert [(c.params["n"], c.params["factor"]) for c in children] == [(1, 0.5), (2, 0.5), (1, 2.0), (2, 2.0)] or \
        sorted((c.params["n"], c.params["factor"]) for c in children) == [(1, 0.5), (1, 2.0), (2, 0.5), (2, 2.0)]
    result = run_sweep(lab, parent, children)
    assert result.status == "FINISHED" and len(result.children) == 4
    client = MlflowClient(lab.settings.tracking_uri)
    stored = client.get_run(result.run_id)
    assert stored.data.tags["bedrot.spec"] == str(spec_file)
    assert "See how n matters." in stored.data.tags["mlflow.note.content"]
    assert stored.data.metrics["sweep.runs"] == 4 and stored.data.metrics["sweep.failed"] == 0
    assert stored.data.params == {"label": "swept", "n": "[1, 2]", "factor": "[0.5, 2.0]"}
    kids = client.search_runs([stored.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(k.data.metrics["scaled"] for k in kids) == [1.0, 1.0, 4.0, 4.0]
    table = pd.read_parquet(client.download_artifacts(result.run_id, "tables/sweep.parquet"))
    assert len(table) == 4 and set(table["status"]) == {"FINISHED"}


def test_a_bad_spec_names_the_file_and_the_key(lab, bedrot_lake):
    spec_file = bedrot_lake / "experiments" / "bad.toml"
    spec_file.write_text('experiment = "record"\n[sweep]\nn = [1, "two"]\n')
    with pytest.raises(SpecError, match=r"bad.toml: params: param 'n' must be int, got 'two'"):
        spec_requests(lab, load_spec(spec_file), {})
    spec_file.write_text('experiment = "record"\nparams_typo = 1\n')
    with pytest.raises(SpecError, match=r"bad.toml: params_typo: unknown key"):
        load_spec(spec_file)


def test_long_runs_get_mlflow_system_metrics(bedrot_lake, write_plugin):
    config = bedrot_lake / "bedrot-lab.toml"
    config.write_text(config.read_text()
                      .replace("system_metrics_after = 10 ", "system_metrics_after = 0.2")
                      .replace("system_metrics_interval = 10", "system_metrics_interval = 0.5"))
    write_plugin("slow", """
        import time
        from bedrot_lab import experiment, hookimpl

        @experiment("slow")
        def slow(ctx):
            time.sleep(ctx.params.get("seconds", 2.5))

        @hookimpl
        def register_experiments(register):
            register(slow)
    """)
    lab = Lab.open(bedrot_lake)
    assert lab.settings.system_metrics_after == 0.2
    long_run = read_run(run_experiment(lab, "slow").run_id, lab)
    assert "system/cpu_utilization_percentage" in long_run.data.metrics
    assert "system/system_memory_usage_megabytes" in long_run.data.metrics


def test_two_lakes_in_one_process_keep_their_own_stores(tmp_path, bedrot_env, bedrot_store_template):
    import os
    import shutil

    from bedrot_lab.testing import make_lake

    labs = []
    for name in ("a", "b"):
        lake = make_lake(tmp_path / name)
        shutil.copy(bedrot_store_template, lake / "mlruns" / "mlflow.db")
        (lake / "plugins" / "hello.py").write_text(
            "from bedrot_lab import experiment, hookimpl\n"
            "@hookimpl\ndef register_experiments(register):\n"
            "    register(experiment('hello')(lambda ctx: ctx.log_metric('x', 1)))\n")
        labs.append(Lab.open(lake))
    first = run_experiment(labs[0], "hello")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = run_experiment(Lab.open(tmp_path / "b"), "hello")
    assert read_run(first.run_id, labs[0]).info.status == "FINISHED"
    assert read_run(second.run_id, labs[1]).info.status == "FINISHED"
    in_a = MlflowClient(labs[0].settings.tracking_uri).search_runs(
        [labs[0].store.experiment_id("hello")])
    assert [r.info.run_id for r in in_a] == [first.run_id]


def test_a_credential_in_an_error_message_is_scrubbed(bedrot_lake, write_plugin):
    write_plugin("leaky_error", f"""
        from bedrot_lab import experiment, hookimpl

        @experiment("leaky-error")
        def leaky_error(ctx):
            raise PermissionError("token {FAKE_META_TOKEN} was refused")

        @hookimpl
        def register_experiments(register):
            register(leaky_error)
    """)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "leaky-error")
    stored = read_run(result.run_id, lab)
    assert stored.data.tags["error"] == "PermissionError: token **** was refused"
    client = MlflowClient(lab.settings.tracking_uri)
    traceback_text = Path(client.download_artifacts(result.run_id, "error/traceback.txt")).read_text()
    assert FAKE_META_TOKEN not in traceback_text and "token **** was refused" in traceback_text


def test_a_spec_without_a_sweep_is_one_plain_run(lab, bedrot_lake):
    spec_file = bedrot_lake / "experiments" / "plain.toml"
    spec_file.write_text('experiment = "record"\npurpose = "Just once."\n[params]\nn = 2\n')
    parent, children = spec_requests(lab, load_spec(spec_file), {"factor": "3"})
    assert children == []
    assert (parent.params["n"], parent.params["factor"], parent.purpose) == (2, 3.0, "Just once.")


# -- the run opens while the experiment starts ---------------------------------------------------

BESIDE = """
    import threading
    from bedrot_lab import experiment, hookimpl

    STARTED = threading.Event()

    @experiment("beside")
    def beside(ctx):
        STARTED.set()
        if ctx.params.get("fail_first", True):
            raise RuntimeError("failed before touching the run")

    @experiment("beside-logs")
    def beside_logs(ctx):
        import time
        time.sleep(1.5)  # before the run is used: the run's start is still when this began
        ctx.log_metric("answer", 42)
        (ctx.workdir / "note.txt").write_text(ctx.run_id)

    @hookimpl
    def register_experiments(register):
        register(beside)
        register(beside_logs)
"""

USES_MLFLOW = """
    import mlflow
    from bedrot_lab import experiment, hookimpl

    @experiment("fluent")
    def fluent(ctx):
        mlflow.log_metric("fluent", 1.0)  # before any ctx call: the run must already be active

    @hookimpl
    def register_experiments(register):
        register(fluent)
"""


def test_an_experiment_that_fails_before_its_run_is_open_is_recorded_failed(bedrot_lake, write_plugin):
    write_plugin("beside_probe", BESIDE)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "beside")
    assert result.status == "FAILED" and "failed before touching the run" in result.error
    stored = read_run(result.run_id, lab)
    assert stored.info.status == "FAILED"
    assert stored.data.tags["error"].endswith("failed before touching the run")
    assert "error/traceback.txt" in [a.path for a in MlflowClient(lab.settings.tracking_uri).list_artifacts(
        result.run_id, "error")]


def test_a_run_opened_beside_the_experiment_records_all_it_logs(bedrot_lake, write_plugin):
    import mlflow

    write_plugin("beside_probe", BESIDE)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "beside-logs")
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    assert stored.data.metrics["answer"] == 42 and stored.info.status == "FINISHED"
    assert (stored.info.end_time - stored.info.start_time) / 1000 >= 1.5
    note = lab.settings.zone("sandbox") / "users" / "tester" / "beside-logs" / "runs" / result.run_id / "note.txt"
    assert note.read_text() == result.run_id
    assert mlflow.active_run() is None  # made active when first used, ended with the run


def test_an_experiment_that_uses_mlflow_itself_gets_its_run_active_before_it_starts(bedrot_lake, write_plugin):
    write_plugin("fluent_probe", USES_MLFLOW)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "fluent")
    assert result.status == "FINISHED", result.error
    assert read_run(result.run_id, lab).data.metrics["fluent"] == 1.0
    client = MlflowClient(lab.settings.tracking_uri)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1  # no stray run


def test_a_store_that_cannot_be_opened_is_one_line_even_when_opened_beside(bedrot_lake, write_plugin, cli_env):
    from conftest import bedrot_forked as bedrot  # what the command does, not how it starts

    write_plugin("beside_probe", BESIDE)
    env = {**cli_env, "MLFLOW_TRACKING_URI": f"sqlite:///{bedrot_lake}/bedrot-lab.toml/mlflow.db"}
    done = bedrot("run", "beside-logs", env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: cannot open the tracking store"), done.stderr
