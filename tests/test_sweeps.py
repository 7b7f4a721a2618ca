"""A sweep's parent run answers the sweep's question: the best value and why, the curves,
the children's table and a report; read back from a real MLflow store."""

from __future__ import annotations

import itertools
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, REPO_PLUGINS
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.specs import SpecError, load_spec, run_sweep, spec_requests

GRID = """
    from bedrot_lab import Param, experiment, hookimpl

    @experiment("grid", headline=["score", "cost"], params={
        "n": Param(int, 1), "factor": Param(float, 1.0), "label": "x", "flag": False, "fail_at": Param(int, -1)})
    def grid(ctx):
        '''score = n * factor; cost = n + factor; fails when n is fail_at.'''
        if ctx.params["n"] == ctx.params["fail_at"]:
            raise ValueError(f"n={ctx.params['n']} refused on purpose")
        ctx.log_metrics({"score": ctx.params["n"] * ctx.params["factor"],
                         "cost": ctx.params["n"] + ctx.params["factor"], "side.detail": 1.0})

    @experiment("plain")
    def plain(ctx):
        '''No headline metrics.'''
        ctx.log_metric("value", 1)

    @hookimpl
    def register_experiments(register):
        register(grid)
        register(plain)
"""


@pytest.fixture
def lab(bedrot_lake, write_plugin):
    write_plugin("grid", GRID)
    return Lab.open(bedrot_lake)


def write_spec(lake: Path, text: str, name: str = "sweep.toml") -> Path:
    path = lake / "experiments" / name
    path.write_text(text)
    return path


def sweep(lab: Lab, spec_file: Path):
    spec = load_spec(spec_file)
    parent, children = spec_requests(lab, spec, {})
    return run_sweep(lab, parent, children, spec)


def artifact(lab: Lab, run_id: str, path: str) -> Path:
    return Path(MlflowClient(lab.settings.tracking_uri).download_artifacts(run_id, path))


def children_of(lab: Lab, run) -> list:
    client = MlflowClient(lab.settings.tracking_uri)
    return client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'")


def png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_the_shipped_k_sweep_names_the_best_k_and_why(bedrot_lake):
    """The shipped spec, on the sample lake (k = 2..4 to keep it short): the parent names the k
    whose child has the highest silhouette, with the reason, the curves, the table and a report."""
    from bedrot_lab.sample import write_sample

    shutil.copy(REPO_PLUGINS / "artist_clustering.py", bedrot_lake / "plugins")
    lab = Lab.open(bedrot_lake)
    write_sample(lab.settings)
    spec = load_spec(REPO / "experiments" / "artist-clustering-sweep.toml")
    spec = replace(spec, sweep={"n_clusters": [2, 3, 4]})
    result = run_sweep(lab, *spec_requests(lab, spec, {}), spec)
    assert result.status == "FINISHED", result.error
    parent = MlflowClient(lab.settings.tracking_uri).get_run(result.run_id)
    kids = children_of(lab, parent)
    silhouettes = {int(k.data.params["n_clusters"]): k.data.metrics["silhouette_score"] for k in kids}
    assert sorted(silhouettes) == [2, 3, 4]
    best_k = max(silhouettes, key=silhouettes.get)

    assert parent.data.params == {"grain": "track", "random_state": "42",
                                  "n_clusters": "[2, 3, 4]", "best.n_clusters": str(best_k)}
    assert parent.data.metrics["best.silhouette_score"] == pytest.approx(silhouettes[best_k])
    reason = f"best n_clusters={best_k}: silhouette_score {silhouettes[best_k]:.4g}, highest of 3"
    assert parent.data.tags["bedrot.sweep.best"] == reason
    best_id = next(k.info.run_id for k in kids if k.data.params["n_clusters"] == str(best_k))
    assert parent.data.tags["bedrot.sweep.best_run"] == best_id
    assert f"**Result.** B{reason[1:]}." in parent.data.tags["mlflow.note.content"]

    table = pd.read_parquet(artifact(lab, parent.info.run_id, "tables/sweep.parquet"))
    assert list(table.columns) == ["n_clusters", "status", "silhouette_score", "inertia_score", "best", "error",
                                   "run_id"]
    assert set(table["run_id"]) == {k.info.run_id for k in kids}  # whole ids, not cut
    assert table.loc[table["best"], "n_clusters"].tolist() == [best_k]
    width, height = png_size(artifact(lab, parent.info.run_id, "figures/sweep.png"))
    assert width == 600 and height < 600
    report = artifact(lab, parent.info.run_id, "report.md").read_text()
    assert f"**B{reason[1:]}.**" in report
    assert f"| {best_id[:8]} **best** | {best_k} | FINISHED | {silhouettes[best_k]:.4g} |" in report


def test_a_grid_ranks_by_min_with_ties_and_a_failed_child(lab, bedrot_lake):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\nbest = "min cost"\n[params]\nlabel = "swept"\n'
                                        'fail_at = 3\n[sweep]\nn = [1, 2, 3]\nfactor = [2.0, 1.0]\n')
    result = sweep(lab, spec_file)
    assert result.status == "FINISHED", result.error
    assert [c.status for c in result.children].count("FAILED") == 2
    stored = MlflowClient(lab.settings.tracking_uri).get_run(result.run_id)
    # cost = n + factor: 1 + 1.0 is the lowest; n=3 failed twice, so 4 of 6 children rank
    assert stored.data.params == {"label": "swept", "fail_at": "3", "n": "[1, 2, 3]", "factor": "[2.0, 1.0]",
                                  "best.n": "1", "best.factor": "1.0"}
    assert stored.data.tags["bedrot.sweep.best"] == "best n=1, factor=1.0: cost 2, lowest of 4 (2 failed)"
    assert stored.data.metrics["best.cost"] == 2 and stored.data.metrics["sweep.failed"] == 2
    table = pd.read_parquet(artifact(lab, result.run_id, "tables/sweep.parquet"))
    assert list(table.columns) == ["n", "factor", "status", "cost", "score", "best", "error", "run_id"]
    failed = table[table["status"] == "FAILED"]
    assert failed["n"].tolist() == [3, 3] and failed["error"].str.contains("n=3 refused on purpose").all()
    assert png_size(artifact(lab, result.run_id, "figures/sweep.png"))[0] == 600
    report = artifact(lab, result.run_id, "report.md").read_text()
    assert "- n=3, factor=2.0: ValueError: n=3 refused on purpose" in report


def test_a_tie_is_named(lab, bedrot_lake):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\nbest = "max score"\n'
                                        '[sweep]\nn = [2, 4]\nfactor = [2.0, 1.0]\n')
    stored = MlflowClient(lab.settings.tracking_uri).get_run(sweep(lab, spec_file).run_id)
    assert stored.data.tags["bedrot.sweep.best"] == "best n=4, factor=2.0: score 8, highest of 4"
    spec_file.write_text('experiment = "grid"\nbest = "max"\n[params]\nfactor = 1.0\n[sweep]\nn = [4, 4]\n')
    stored = MlflowClient(lab.settings.tracking_uri).get_run(sweep(lab, spec_file).run_id)
    assert stored.data.tags["bedrot.sweep.best"] == "best n=4: score 4, highest of 2; tied with n=4"


def test_without_best_there_is_no_ranking_but_the_curves_and_table(lab, bedrot_lake):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\n[sweep]\nn = [1, 2, 3]\n')
    result = sweep(lab, spec_file)
    stored = MlflowClient(lab.settings.tracking_uri).get_run(result.run_id)
    assert stored.data.params == {"n": "[1, 2, 3]"}
    assert "bedrot.sweep.best" not in stored.data.tags and "best.score" not in stored.data.metrics
    table = pd.read_parquet(artifact(lab, result.run_id, "tables/sweep.parquet"))
    assert list(table.columns) == ["n", "status", "score", "cost", "error", "run_id"]
    assert table["score"].tolist() == [1.0, 2.0, 3.0]
    assert png_size(artifact(lab, result.run_id, "figures/sweep.png"))[0] == 600
    assert "**No ranking: the spec names no `best`" in artifact(lab, result.run_id, "report.md").read_text()


def test_the_revenue_sweep_gets_the_curves_and_the_table(bedrot_lake):
    from bedrot_lab.sample import write_sample

    shutil.copy(REPO_PLUGINS / "revenue_per_stream.py", bedrot_lake / "plugins")
    lab = Lab.open(bedrot_lake)
    write_sample(lab.settings)
    result = sweep(lab, REPO / "experiments" / "revenue-per-stream-sweep.toml")
    assert result.status == "FINISHED", result.error
    stored = MlflowClient(lab.settings.tracking_uri).get_run(result.run_id)
    assert stored.data.params == {"min_streams": "[0, 100, 1000, 10000]"}
    table = pd.read_parquet(artifact(lab, result.run_id, "tables/sweep.parquet"))
    assert table["min_streams"].tolist() == [0, 100, 1000, 10000] and set(table["status"]) == {"FINISHED"}
    assert list(table.columns) == ["min_streams", "status", "stores_shown", "revenue_per_stream_usd", "error",
                                   "run_id"]
    # the question the sweep asks: how many stores the table keeps as the cut-off rises
    kept = table["stores_shown"].tolist()
    assert kept == sorted(kept, reverse=True) and kept[0] > kept[-1]
    assert png_size(artifact(lab, result.run_id, "figures/sweep.png"))[0] == 600


def test_when_every_child_fails_the_parent_still_records_the_sweep(lab, bedrot_lake):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\nbest = "max score"\n[params]\nfail_at = 5\n'
                                        '[sweep]\nn = [5, 5]\n')
    result = sweep(lab, spec_file)
    assert result.status == "FAILED" and result.exit_code == 1
    assert "all 2 child runs failed, the first with: ValueError: n=5 refused on purpose" in result.error
    stored = MlflowClient(lab.settings.tracking_uri).get_run(result.run_id)
    assert stored.info.status == "FAILED" and stored.data.tags["error"] == result.error
    assert stored.data.tags["bedrot.sweep.best"] == "all 2 child runs failed; nothing to compare"
    assert stored.data.metrics["sweep.runs"] == 2 and stored.data.metrics["sweep.failed"] == 2
    table = pd.read_parquet(artifact(lab, result.run_id, "tables/sweep.parquet"))
    assert table["status"].tolist() == ["FAILED", "FAILED"] and not table["best"].any()
    report = artifact(lab, result.run_id, "report.md").read_text()
    assert "**All 2 child runs failed; nothing to compare.**" in report
    assert "No figure: no finished child run logged a metric to compare." in report
    client = MlflowClient(lab.settings.tracking_uri)
    assert [a.path for a in client.list_artifacts(result.run_id)].count("figures") == 0


@pytest.mark.parametrize(("line", "message"), [
    ('best = "maximum score"', r'best: must be "max METRIC" or "min METRIC" \(e.g. best = "max silhouette_score"\), '
                               r"got 'maximum score'"),
    ("best = 3", r'best: must be "max METRIC" or "min METRIC"'),
    ('metrics = "score"', r"metrics: must be a list of metric names"),
])
def test_a_bad_best_names_the_file_and_the_key(lab, bedrot_lake, line, message):
    spec_file = write_spec(bedrot_lake, f'experiment = "grid"\n{line}\n[sweep]\nn = [1, 2]\n', "bad.toml")
    with pytest.raises(SpecError, match=rf"^{spec_file}: {message}"):
        load_spec(spec_file)


def test_best_needs_a_sweep_and_an_experiment_that_can_answer_it(lab, bedrot_lake):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\nbest = "max score"\n', "bad.toml")
    with pytest.raises(SpecError, match=r"bad.toml: best: ranks and compares a sweep's child runs; this spec has no"):
        load_spec(spec_file)
    spec_file.write_text('experiment = "grid"\nbest = "min"\n[sweep]\n')
    with pytest.raises(SpecError, match=r"bad.toml: best: ranks"):
        load_spec(spec_file)
    spec_file.write_text('experiment = "plain"\nbest = "max"\n[sweep]\nfoo = [1]\n')
    with pytest.raises(SpecError, match=r"bad.toml: best: experiment 'plain' declares no headline metric to rank by; "
                                        r'name one: best = "max METRIC"'):
        spec_requests(lab, load_spec(spec_file), {})


def test_the_command_line_reports_a_bad_best_in_one_line_and_starts_no_run(lab, bedrot_lake, cli_env):
    spec_file = write_spec(bedrot_lake, 'experiment = "grid"\nbest = "highest score"\n[sweep]\nn = [1, 2]\n', "bad.toml")
    done = bedrot("run", str(spec_file), env=cli_env)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert errors == [f"Error: {spec_file}: best: must be \"max METRIC\" or \"min METRIC\" "
                      f"(e.g. best = \"max silhouette_score\"), got 'highest score'"], done.stderr
    client = MlflowClient(lab.settings.tracking_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_every_shipped_sweep_spec_is_valid_for_its_experiment(installed_plugins, bedrot_lake):
    from bedrot_lab.specs import packaged_specs

    lab = Lab.open(bedrot_lake)
    sweeps = [load_spec(path) for path in packaged_specs().values() if load_spec(path).sweep]
    assert {spec.path.name for spec in sweeps} >= {"artist-clustering-sweep.toml", "revenue-per-stream-sweep.toml"}
    for spec in sweeps:
        children = spec_requests(lab, spec, {})[1]
        assert len(children) == len(list(itertools.product(*spec.sweep.values()))), spec.path
    # the shipped sweeps rank by a headline metric (that the metrics they compare are logged, the
    # tests of each sweep above show: their tables hold a value for every child)
    for spec in sweeps:
        experiment = lab.experiment(spec.experiment)
        ranking = spec.ranking(experiment)
        assert ranking is None or ranking.metric in experiment.headline, spec.path


def test_a_metric_named_like_the_swept_param_gets_a_column_of_its_own(bedrot_lake, write_plugin):
    write_plugin("echo", """
        from bedrot_lab import Param, experiment, hookimpl

        @experiment("echo", params={"n": Param(int, 1)})
        def echo(ctx):
            ctx.log_metric("n", ctx.params["n"] * 10)

        @hookimpl
        def register_experiments(register):
            register(echo)
    """)
    lab = Lab.open(bedrot_lake)
    result = sweep(lab, write_spec(bedrot_lake, 'experiment = "echo"\n[sweep]\nn = [1, 2]\n'))

    assert result.status == "FINISHED", result.error
    table = pd.read_parquet(artifact(lab, result.run_id, "tables/sweep.parquet"))
    assert list(table.columns) == ["n", "status", "metric.n", "error", "run_id"]
    assert table["n"].tolist() == [1, 2] and table["metric.n"].tolist() == [10.0, 20.0]
