"""Every packaged experiment, run on the sample lake, names its metrics as docs/plugins.md
("Naming metrics") says, logs counts as whole numbers and logs its headline metrics."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_PLUGINS
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.sample import write_sample
from bedrot_lab.testing import ISOLATED_VARIABLES, make_lake, run_experiment

#: lower snake_case words, dots between the measure and what it is of (``missing.country_of_sale``)
KEY = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*(?:\.[a-z0-9]+(?:_[a-z0-9]+)*)*")
#: the last word of a measure that is not a count -> what its value is (seconds, mb and bytes are
#: the runner's own run.* metrics)
UNITS = {"usd": "US dollars", "pct": "a percent", "rate": "a fraction, 0 to 1", "ratio": "a quotient",
         "score": "a model's score", "days": "days", "seconds": "seconds", "mb": "megabytes", "bytes": "bytes"}
#: the last word of a measure that is a whole number of streams; any other measure is a count
STREAMS = "streams"
#: last words that name a point in time: a date is a tag or a table row, never a number
TIME_POINTS = {"date", "day", "week", "month", "year", "time"}
#: how a measure may not begin, and what to write instead
PREFIXES = {"total_": "a count or a sum is the plain noun: streams, not total_streams",
            "num_": "a count is the plain noun: ads, not num_ads",
            "avg_": "say what the mean is of: mean_campaign_cost_per_click_usd"}
#: words another word already says, and the one to use
SYNONYMS = {"earnings": "money earned is revenue: gross_revenue_usd, revenue_per_stream_usd"}
#: the framework's namespaces before a measure: the runner's run.*, a sweep parent's sweep.* and best.*
NAMESPACES = ("run.", "sweep.", "best.")
#: MLflow's system metrics, named by MLflow
SYSTEM = "system/"
#: runs besides each experiment's default one, for the metrics only they log
VARIANTS = [("business-metrics", {"royalty_adjusted": True}), ("artist-clustering", {"sweep_k": True, "max_k": 4})]


def problems(name: str, value: float) -> list[str]:
    """What is wrong with metric ``name`` = ``value`` by the naming convention; empty when nothing."""
    if not KEY.fullmatch(name):
        return [f"{name}: not lower snake_case words with dots between them"]
    measure = name.removeprefix(next((n for n in NAMESPACES if name.startswith(n)), "")).split(".")[0]
    words = measure.split("_")
    found = [f"{name}: {why}" for prefix, why in PREFIXES.items() if measure.startswith(prefix)]
    found += [f"{name}: {SYNONYMS[word]}" for word in words if word in SYNONYMS]
    if words[-1] in TIME_POINTS:
        found.append(f"{name}: names a point in time; log it as a tag or a table row")
    if words[-1] == "rate" and not 0 <= value <= 1:
        found.append(f"{name} = {value}: a _rate is a fraction from 0 to 1; a percent is _pct")
    if words[-1] not in UNITS and not (value >= 0 and float(value).is_integer()):
        kind = "a number of streams" if words[-1] == STREAMS else "a count (no unit word at its end)"
        found.append(f"{name} = {value}: {kind} is a whole number, 0 or more")
    return found


@pytest.mark.parametrize(("name", "value", "wrong"), [
    ("gross_revenue_usd", 12.5, False), ("missing.country_of_sale", 3, False), ("cluster_size.0", 2, False),
    ("retention_rate", 0.8, False), ("roi_pct", -42.5, False), ("streams", 1200, False),
    ("missing.Country of Sale", 3, True), ("Streams", 1, True), ("roi", 0.2, True), ("retention_rate", 80, True),
    ("best_month", 202505, True), ("total_streams", 10, True), ("num_ads", 3, True), ("campaigns", 2.5, True),
    ("new_release_streams", 10.5, True), ("earnings_per_stream_usd", 0.003, True), ("avg_cpc_usd", 1, True),
    ("run.wall_seconds", 2.5, False), ("best.silhouette_score", 0.41, False), ("best.silhouette", 0.41, True),
    ("sweep.runs", 8, False), ("total.missing", 3, False), ("missing.country_of_sale", 1.5, True),
])
def test_the_rule_tells_good_names_from_bad(name, value, wrong):
    assert bool(problems(name, value)) is wrong, problems(name, value)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    """The sample lake with the repository's plugins, and the metrics of each experiment's runs:
    ``{experiment: [(params, {run id: metrics}), ...]}``, child runs included."""
    with pytest.MonkeyPatch.context() as env:
        for variable in ISOLATED_VARIABLES:
            env.delenv(variable, raising=False)
        env.setenv("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("BEDROT_USER", "tester")
        env.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        root = make_lake(tmp_path_factory.mktemp("sample") / "lake")
        env.chdir(root)
        plugins = [p for p in REPO_PLUGINS.glob("*.py") if p.name != "__init__.py"]
        for plugin in plugins:
            shutil.copy(plugin, root / "plugins")
        lab = Lab.open(root)
        write_sample(lab.settings)
        packaged = {name: e for name, e in lab.experiments.items() if e.plugin in {p.stem for p in plugins}}
        client = MlflowClient(lab.settings.tracking_uri)
        runs: dict[str, list[tuple[dict[str, Any], dict[str, dict[str, float]]]]] = {}
        for name, params in [*((name, {}) for name in packaged), *VARIANTS]:
            result = run_experiment(lab, name, **params)
            assert result.status == "FINISHED", (name, params, result.error)
            runs.setdefault(name, []).append((params, metrics_of(client, result.run_id)))
        yield packaged, runs, client


def metrics_of(client: MlflowClient, run_id: str) -> dict[str, dict[str, float]]:
    """The metrics of run ``run_id`` and of its child runs, by run id, without MLflow's system metrics."""
    run = client.get_run(run_id)
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    return {r.info.run_id: {k: v for k, v in r.data.metrics.items() if not k.startswith(SYSTEM)}
            for r in [run, *children]}


def test_every_plugin_module_contributes_an_experiment(sample):
    packaged, _, _ = sample
    modules = {p.stem for p in REPO_PLUGINS.glob("*.py") if p.name != "__init__.py"}
    assert {e.plugin for e in packaged.values()} == modules
    assert len(packaged) >= len(modules)


def test_every_metric_of_every_run_follows_the_convention(sample):
    _, runs, _ = sample
    found, checked = [], 0
    for experiment, results in runs.items():
        for params, by_run in results:
            for metrics in by_run.values():
                for name, value in metrics.items():
                    checked += 1
                    found += [f"{experiment} {params or ''}: {problem}" for problem in problems(name, value)]
    assert checked > 100
    assert found == []


def test_each_experiment_names_two_to_four_headline_metrics_its_default_run_logs(sample):
    packaged, runs, _ = sample
    for name, experiment in packaged.items():
        assert 2 <= len(experiment.headline) <= 4, (name, experiment.headline)
        params, by_run = runs[name][0]
        assert params == {}
        logged = next(iter(by_run.values()))
        missing = [metric for metric in experiment.headline if metric not in logged]
        assert missing == [], f"{name}: headline metrics not logged by a default run on the sample lake"
        assert all(math.isfinite(logged[metric]) for metric in experiment.headline)


def test_a_concept_has_one_name_across_experiments(sample):
    _, runs, _ = sample
    names = {experiment: {n for _, by_run in results for m in by_run.values() for n in m}
             for experiment, results in runs.items()}
    # the same money and counts, logged by several experiments under one name each
    assert {"gross_revenue_usd", "royalty_adjusted_revenue_usd", "roi_royalty_adjusted_pct"} <= names["meta-ads"]
    assert {"gross_revenue_usd", "royalty_adjusted_revenue_usd", "retention_rate", "streams"} \
        <= names["royalty-adjusted-revenue"]
    assert {"gross_revenue_usd", "royalty_adjusted_revenue_usd", "roi_pct", "cost_per_click_usd", "streams"} \
        <= names["business-metrics"]
    assert {"gross_revenue_usd", "revenue_per_stream_usd", "revenue_per_stream_spotify_usd", "streams"} \
        <= names["revenue-per-stream"]
    assert {"ad_spend_usd", "cpm_usd", "cost_per_result_usd", "impressions"} <= names["meta-ads"]
    assert {"ad_spend_usd", "cpm_usd", "cost_per_result_usd", "impressions"} <= names["metaads-staging2curated"]
    assert {"streams", "spotify_streams"} <= names["streaming-trends"]


def test_each_report_shows_every_figure_its_run_logs(sample):
    _, runs, client = sample
    for experiment, results in runs.items():
        for params, by_run in results:
            run_id = next(iter(by_run))
            figures = {a.path for a in client.list_artifacts(run_id, "figures")}
            report = Path(client.download_artifacts(run_id, "report.md")).read_text()
            shown = set(re.findall(r"!\[[^\]]+\]\((figures/[^)\s]+\.png)\)", report))
            assert shown == figures, (experiment, params)


def test_data_quality_names_a_column_in_snake_case(sample):
    _, runs, _ = sample
    (_, by_run), = runs["data-quality"]
    metrics = next(iter(by_run.values()))
    assert {"missing.country_of_sale", "missing.earnings_usd", "type_violations.sale_month"} <= set(metrics)


def test_the_best_month_is_a_tag_not_a_number(sample):
    _, runs, client = sample
    (_, by_run), = runs["streaming-trends"]
    run_id = next(iter(by_run))
    assert "best_month" not in by_run[run_id] and by_run[run_id]["best_month_streams"] > 0
    assert re.fullmatch(r"\d{4}-\d{2}", client.get_run(run_id).data.tags["best_month"])
