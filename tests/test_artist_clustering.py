"""artist-clustering on a hand-made statement of two obviously different kinds of track."""

from __future__ import annotations

import math
import shutil

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from conftest import REPO_PLUGINS
from conftest import STATEMENT_HEADER as HEADER
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

MONTHS = ("2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06")
CATALOG = ("AFTERGLOW", "CHROME", "HOLLOW")   # NOVA VANTA: long-running, two stores, flat
FRESH = ("SUNDIAL", "BLOOM", "GHOST")          # GLASS ORCHID: one store, one (the latest) month


def line(month: str, store: str, artist: str, title: str, quantity: int, earnings: float) -> str:
    return f"2025-08-01,{month},{store},{artist},{title},QZ0000000001,123456789012,{quantity},100,Song,US,0,{earnings}\n"


def statement() -> str:
    rows = []
    for title, streams in zip(CATALOG, (1000, 1100, 1200)):
        for month in MONTHS:  # Spotify pays 0.003 and Apple Music 0.007 per stream
            rows.append(line(month, "Spotify", "NOVA VANTA", title, streams, round(streams * 0.003, 2)))
            rows.append(line(month, "Apple Music", "NOVA VANTA", title, streams, round(streams * 0.007, 2)))
    for title, streams in zip(FRESH, (10, 20, 30)):
        rows.append(line("2025-06", "Spotify", "GLASS ORCHID", title, streams, round(streams * 0.003, 2)))
    return HEADER + "".join(rows)


# Features by hand (latest sale month 2025-06; growth compares 04-06 with 01-03):
#   AFTERGLOW: streams 6 * (1000 + 1000) = 12000, earnings 6 * (3.00 + 7.00) = 60.00, 0.005 per stream,
#              2 stores, 6 months, growth ln((6000 + 1) / (6000 + 1)) = 0
#   CHROME:    13200, 6 * (3.30 + 7.70) = 66.00, 0.005, 2, 6, 0
#   HOLLOW:    14400, 6 * (3.60 + 8.40) = 72.00, 0.005, 2, 6, 0
#   SUNDIAL:   10, 0.03, 0.003, 1 store, 1 month, growth ln((10 + 1) / (0 + 1)) = ln 11
#   BLOOM:     20, 0.06, 0.003, 1, 1, ln 21
#   GHOST:     30, 0.09, 0.003, 1, 1, ln 31
# Standardised, earnings per stream, stores and months are +1 for one group and -1 for the other,
# log streams and log earnings about +-1 with spreads of 0.05 and 0.3 inside a group, and growth
# -0.98 against 0.61..1.30: the groups' centres are about 2 * sqrt(6) = 4.9 apart while no point
# is more than 0.8 from its own group, so each silhouette is at least 1 - 0.8 / (4.9 - 0.8) > 0.8.
EXPECTED = {
    ("NOVA VANTA", "AFTERGLOW"): (12000, 60.00, 2, 6, 0.0),
    ("NOVA VANTA", "CHROME"): (13200, 66.00, 2, 6, 0.0),
    ("NOVA VANTA", "HOLLOW"): (14400, 72.00, 2, 6, 0.0),
    ("GLASS ORCHID", "SUNDIAL"): (10, 0.03, 1, 1, math.log(11)),
    ("GLASS ORCHID", "BLOOM"): (20, 0.06, 1, 1, math.log(21)),
    ("GLASS ORCHID", "GHOST"): (30, 0.09, 1, 1, math.log(31)),
}


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "artist_clustering.py", bedrot_lake / "plugins")
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(statement())
    return Lab.open(bedrot_lake)


def table(lab, run_id: str, name: str) -> pd.DataFrame:
    client = MlflowClient(lab.settings.tracking_uri)
    return pd.read_parquet(client.download_artifacts(run_id, f"tables/{name}.parquet"))


def test_two_profiles_make_two_clusters_of_three(lab):
    result = run_experiment(lab, "artist-clustering", n_clusters=2)
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    metrics = stored.data.metrics
    assert metrics["points"] == 6 and metrics["features"] == 6 and metrics["points_dropped"] == 0
    assert metrics["cluster_size.0"] == 3 and metrics["cluster_size.1"] == 3
    assert metrics["silhouette_score"] > 0.8
    assert metrics["inertia_score"] > 0

    points = table(lab, result.run_id, "points").set_index(["Artist", "Title"])
    for key, (streams, earnings, stores, months, growth) in EXPECTED.items():
        row = points.loc[key]
        assert (row["streams"], row["stores"], row["months_active"]) == (streams, stores, months), key
        assert row["earnings_usd"] == pytest.approx(earnings)
        assert row["earnings_per_stream"] == pytest.approx(0.005 if stores == 2 else 0.003)
        assert row["growth"] == pytest.approx(growth)
    clusters = points.groupby("Artist")["cluster"].agg(set)
    assert len(clusters["NOVA VANTA"]) == 1 and len(clusters["GLASS ORCHID"]) == 1
    assert clusters["NOVA VANTA"] != clusters["GLASS ORCHID"]

    client = MlflowClient(lab.settings.tracking_uri)
    assert {a.path for a in client.list_artifacts(result.run_id, "figures")} == {"figures/clusters.png"}
    model = mlflow.sklearn.load_model(stored.data.tags["model_uri"])
    features = ["log_streams", "log_earnings_usd", "earnings_per_stream", "stores", "months_active", "growth"]
    assert list(model.feature_names_in_) == features


def test_sweep_k_makes_one_child_per_k_and_keeps_the_best(lab):
    result = run_experiment(lab, "artist-clustering", sweep_k=True)
    assert result.status == "FINISHED", result.error
    parent = read_run(result.run_id, lab)
    client = MlflowClient(lab.settings.tracking_uri)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    # max_k 9 is capped at points - 1 = 5: k = 2, 3, 4, 5
    assert sorted(c.info.run_name for c in children) == ["k=2", "k=3", "k=4", "k=5"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["k"] == child.info.run_name[2:]
        assert set(child.data.metrics) == {"inertia_score", "silhouette_score"}
    by_k = {int(c.data.params["k"]): c.data.metrics for c in children}
    assert by_k[2]["inertia_score"] > by_k[3]["inertia_score"] > by_k[4]["inertia_score"] > by_k[5]["inertia_score"]
    assert max(by_k, key=lambda k: by_k[k]["silhouette_score"]) == 2  # the two groups, as planted

    assert parent.data.metrics["best_k"] == 2 and parent.data.tags["best_k"] == "2"
    assert parent.data.metrics["best_silhouette_score"] == pytest.approx(by_k[2]["silhouette_score"])
    assert parent.data.metrics["cluster_size.0"] == 3 and parent.data.metrics["cluster_size.1"] == 3
    assert {a.path for a in client.list_artifacts(result.run_id, "figures")} == {
        "figures/clusters.png", "figures/k_sweep.png"}
    assert table(lab, result.run_id, "k_sweep")["k"].tolist() == [2, 3, 4, 5]

    model = mlflow.sklearn.load_model(f"runs:/{result.run_id}/model")
    points = table(lab, result.run_id, "points")
    labels = model.predict(points[["streams", "earnings_usd", "earnings_per_stream", "stores", "months_active",
                                   "growth"]].rename(columns={"streams": "log_streams",
                                                              "earnings_usd": "log_earnings_usd"})
                           .assign(log_streams=lambda f: f["log_streams"].map(math.log1p),
                                   log_earnings_usd=lambda f: f["log_earnings_usd"].map(math.log1p)))
    assert labels.tolist() == points["cluster"].tolist()


def test_max_k_limits_the_sweep(lab):
    result = run_experiment(lab, "artist-clustering", sweep_k=True, max_k=3)
    client = MlflowClient(lab.settings.tracking_uri)
    children = client.search_runs([read_run(result.run_id, lab).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["k=2", "k=3"]


def test_too_few_points_skip_with_a_reason_and_finish(lab):
    # grain artist: two points (NOVA VANTA, GLASS ORCHID), fewer than k = 3
    result = run_experiment(lab, "artist-clustering", grain="artist", n_clusters=3)
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    assert stored.data.metrics["points"] == 2
    assert "inertia_score" not in stored.data.metrics and "silhouette_score" not in stored.data.metrics
    assert stored.data.tags["skipped.inertia_score"] == (
        "k=3 needs at least 3 distinct points; the statement gives 2 at grain=artist")
    assert "model_uri" not in stored.data.tags

    # k = 2 = points: a fit (inertia 0: each point is its own centre) without a silhouette
    result = run_experiment(lab, "artist-clustering", grain="artist", n_clusters=2)
    stored = read_run(result.run_id, lab)
    assert stored.data.metrics["inertia_score"] == pytest.approx(0.0)
    assert stored.data.tags["skipped.silhouette_score"] == (
        "silhouette needs at least 3 points and k < points; k=2, points=2")

    result = run_experiment(lab, "artist-clustering", grain="artist", sweep_k=True)
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED"
    assert "sweep of k needs at least 3 distinct points" in stored.data.tags["skipped.best_k"]
    client = MlflowClient(lab.settings.tracking_uri)
    assert not client.search_runs([stored.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'")


TIKTOK = ("artist,zone,date,Video Views,Profile Views,Likes,Comments,Shares,Year,engagement_rate,Followers,"
          "new_followers\n")


def test_tiktok_engagement_joins_when_every_artist_has_an_account(lab, bedrot_lake):
    # novavanta: (10 + 20 likes + 1 + 3 comments + 1 + 5 shares) / (100 + 300 views) = 40 / 400 = 0.1
    # glassorchid: (40 + 5 + 5) / 200 = 0.25
    path = bedrot_lake / "4_curated" / "tiktok_analytics_curated_20250701_120000.csv"
    path.write_text(TIKTOK + "novavanta,novavanta,2025-06-01,100,5,10,1,1,2025,0.12,50,0\n"
                    "novavanta,novavanta,2025-06-02,300,5,20,3,5,2025,0.0933,50,0\n"
                    "glassorchid,glassorchid,2025-06-01,200,5,40,5,5,2025,0.25,80,0\n")
    result = run_experiment(lab, "artist-clustering", n_clusters=2, tiktok=True)
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["tiktok_matched_artists"] == 2 and metrics["features"] == 7
    rates = table(lab, result.run_id, "points").groupby("Artist")["tiktok_engagement_rate"].agg(["min", "max"])
    assert rates.loc["NOVA VANTA"].tolist() == pytest.approx([0.1, 0.1])
    assert rates.loc["GLASS ORCHID"].tolist() == pytest.approx([0.25, 0.25])

    # one artist without an account: the feature is left out rather than half missing
    path.write_text(TIKTOK + "novavanta,novavanta,2025-06-01,100,5,10,1,1,2025,0.12,50,0\n")
    result = run_experiment(lab, "artist-clustering", n_clusters=2, tiktok=True)
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["tiktok_matched_artists"] == 1 and metrics["features"] == 6


def test_on_the_sample_lake_the_tracks_cluster(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    (bedrot_lake / "4_curated" / "dk_bank_details.csv").unlink()
    write_sample(lab.settings)
    result = run_experiment(lab, "artist-clustering", tiktok=True)
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["points"] == 17 and metrics["tiktok_matched_artists"] == 2
    assert sum(metrics[f"cluster_size.{i}"] for i in range(3)) == 17
    assert -1 <= metrics["silhouette_score"] <= 1


def test_a_track_without_streams_is_left_out_and_an_empty_statement_still_finishes(lab, bedrot_lake):
    path = bedrot_lake / "4_curated" / "dk_bank_details.csv"
    # a seventh track with 0 streams has no earnings per stream: it is left out, 6 points remain
    path.write_text(statement() + line("2025-06", "Spotify", "GLASS ORCHID", "SILENT", 0, 0.0))
    result = run_experiment(lab, "artist-clustering", n_clusters=2)
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["points"] == 6 and metrics["points_dropped"] == 1
    assert metrics["cluster_size.0"] == 3 and metrics["cluster_size.1"] == 3

    path.write_text(HEADER)
    result = run_experiment(lab, "artist-clustering")
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED", result.error
    assert stored.data.metrics["points"] == 0
    assert stored.data.tags["skipped.inertia_score"].startswith("k=3 needs at least 3 distinct points; the statement gives 0")


def test_a_track_or_artist_spelled_several_ways_is_one_point(lab, bedrot_lake):
    # AFTERGLOW once more in June on Spotify, spelled apart by case and spaces, artist and title
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(
        statement() + line("2025-06", "Spotify", "nova  vanta", " Afterglow", 1000, 3.00))
    result = run_experiment(lab, "artist-clustering", grain="artist", n_clusters=3)
    assert result.status == "FINISHED", result.error
    points = table(lab, result.run_id, "points").set_index("Artist")
    assert sorted(points.index) == ["GLASS ORCHID", "NOVA VANTA"]
    assert points.loc["NOVA VANTA", "tracks"] == 3 and points.loc["GLASS ORCHID", "tracks"] == 3
    assert points.loc["NOVA VANTA", "streams"] == 12000 + 13200 + 14400 + 1000

    result = run_experiment(lab, "artist-clustering", n_clusters=7)
    assert result.status == "FINISHED", result.error
    points = table(lab, result.run_id, "points").set_index(["Artist", "Title"])
    assert len(points) == 6 and points.loc[("NOVA VANTA", "AFTERGLOW"), "streams"] == 13000


def test_a_track_is_spelled_as_most_rows_spell_it_and_its_stores_and_months_counted_once(lab, bedrot_lake):
    # SUNDIAL: as "SUNDIAL" in two rows (2025-06 Spotify, 2025-05 Apple Music), as "Sundial" in three rows
    # of one store and month (2025-06 Spotify)
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(
        statement() + line("2025-05", "Apple Music", "GLASS ORCHID", "SUNDIAL", 5, 0.02)
        + line("2025-06", "Spotify", "GLASS ORCHID", "Sundial", 10, 0.03) * 3)
    result = run_experiment(lab, "artist-clustering", n_clusters=2)
    assert result.status == "FINISHED", result.error
    points = table(lab, result.run_id, "points").set_index(["Artist", "Title"])
    assert len(points) == 6 and ("GLASS ORCHID", "SUNDIAL") not in points.index
    sundial = points.loc[("GLASS ORCHID", "Sundial")]
    assert (sundial["streams"], sundial["stores"], sundial["months_active"]) == (45, 2, 2)  # 10 + 5 + 3 x 10
    assert sundial["earnings_usd"] == pytest.approx(0.14)                                  # 0.03 + 0.02 + 3 x 0.03
    assert sundial["earnings_per_stream"] == pytest.approx(0.14 / 45)
    assert sundial["growth"] == pytest.approx(math.log(46))  # all 45 in the latest 3 months, none before
