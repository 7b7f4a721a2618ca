"""The synthetic sample lake: complete, readable, deterministic, never overwriting, consistent."""

from __future__ import annotations

import csv
import shutil
from datetime import date
from pathlib import Path

import pytest
from conftest import REPO_PLUGINS

from bedrot_lab.builtin.datasets import CATALOG
from bedrot_lab.config import Settings, settings_from
from bedrot_lab.lab import Lab
from bedrot_lab.lake import read_dataset
from bedrot_lab.promotion import promote, register
from bedrot_lab.sample import SampleReport, ad_set_copies, write_sample
from bedrot_lab.sample.statement import DEFAULT_STATEMENT_ROWS
from bedrot_lab.testing import read_run, run_experiment

EXPECTED_FILES = [
    "4_curated/dk_bank_details.csv",
    "4_curated/tidy_daily_streams.csv",
    "4_curated/metaads_campaigns_daily.csv",
    "4_curated/metaads_campaigns_performance_log.csv",
    "4_curated/spotify_audience_curated_20250701_120000.csv",
    "4_curated/track_catalog_royalty_splits.csv",
    "4_curated/linktree_analytics.csv",
    "4_curated/tiktok_analytics_curated_20250701_120000.csv",
    "1_landing/BEDROT-ADS-Ads-Jan-1-2025-May-31-2025.csv",
    "3_staging/dk_bank_details.csv",
    "3_staging/daily_streams_distrokid.csv",
    "3_staging/metaads/metaads_staging_latest.csv",
    "sandbox/notebooks/streams_by_store.ipynb",
    "sandbox/analysis/revenue_report.py",
]
#: the sandbox's notebook and script: fixed text, the same whatever the seed
SANDBOX_FILES = {"sandbox/notebooks/streams_by_store.ipynb", "sandbox/analysis/revenue_report.py"}
STORES = {
    "Spotify",
    "Apple Music",
    "iTunes",
    "YouTube (Ads)",
    "YouTube (Red)",
    "TikTok",
    "Pandora",
    "Amazon Unlimited (Streaming)",
    "SoundCloud",
    "Tencent",
}
BY_NAME = {dataset.name: dataset for dataset in CATALOG}


def make_settings(root: Path) -> Settings:
    return settings_from(root, {}, None, env={})


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, SampleReport]:
    settings = make_settings(tmp_path_factory.mktemp("lake"))
    return settings, write_sample(settings)


def read(lake: tuple[Settings, SampleReport], name: str):
    settings, _ = lake
    dataset = BY_NAME[name]
    return read_dataset(dataset, dataset.locate(settings))


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def data_rows(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle) - 1


def test_writes_the_expected_files(lake):
    settings, report = lake
    assert [p.relative_to(settings.root).as_posix() for p in report.written] == EXPECTED_FILES
    assert report.skipped == []
    assert sorted(files_of(settings.root)) == sorted(EXPECTED_FILES)


@pytest.mark.parametrize("name", [dataset.name for dataset in CATALOG])
def test_every_catalog_dataset_is_found_and_reads(lake, name):
    frame = read(lake, name)
    assert list(frame.columns) == list(BY_NAME[name].columns)
    assert len(frame) > 0


def test_headers_are_exactly_as_declared(lake):
    settings, _ = lake
    for dataset in CATALOG:
        with dataset.locate(settings).open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle))
        assert set(dataset.columns) <= set(header), dataset.name


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        write_sample(make_settings(tmp_path / name), seed=seed)
    first, again, other = (files_of(tmp_path / name) for name in "abc")
    assert first == again
    changed = {name for name in first if first[name] != other[name]}
    # the hand-kept catalog is fixed; everything else is drawn from the seed
    assert changed == set(EXPECTED_FILES) - {"4_curated/track_catalog_royalty_splits.csv"} - SANDBOX_FILES


def test_never_overwrites(tmp_path):
    settings = make_settings(tmp_path)
    first = write_sample(settings)
    original = files_of(tmp_path)

    again = write_sample(settings)
    assert again.written == []
    assert again.skipped == first.written
    assert files_of(tmp_path) == original

    edited = settings.zone("curated") / "linktree_analytics.csv"
    edited.write_text("date,totalViews\n2025-01-01,1\n")
    removed = settings.zone("staging") / "daily_streams_distrokid.csv"
    removed.unlink()
    third = write_sample(settings, seed=99)
    assert third.written == [removed]
    assert edited.read_text() == "date,totalViews\n2025-01-01,1\n"
    assert removed.read_bytes() != original["3_staging/daily_streams_distrokid.csv"]


def test_a_file_regenerated_alone_matches_a_fresh_lake(tmp_path):
    settings = make_settings(tmp_path / "lake")
    write_sample(settings)
    original = files_of(settings.root)
    (settings.zone("curated") / "tidy_daily_streams.csv").unlink()
    (settings.zone("landing") / "BEDROT-ADS-Ads-Jan-1-2025-May-31-2025.csv").unlink()
    write_sample(settings)
    assert files_of(settings.root) == original


def test_an_interrupted_write_leaves_no_file(tmp_path):
    settings = make_settings(tmp_path)

    def interrupt(message: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_sample(settings, scale=10, progress=interrupt)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_statement_tracks_match_the_catalog_but_one(lake):
    statement = read(lake, "dk_bank_details")
    catalog = read(lake, "track_catalog")
    in_statement = set(zip(statement["Artist"], statement["Title"]))
    in_catalog = {(a.strip().upper(), t.strip().upper()) for a, t in zip(catalog["artist"], catalog["title"])}
    upper_statement = {(a, t.upper()) for a, t in in_statement}
    assert len(in_statement) == 17
    assert len(catalog) == 16
    assert upper_statement - in_catalog == {("NOVA VANTA", "PALE ORBIT")}
    assert in_catalog <= upper_statement
    raw = set(zip(catalog["artist"], catalog["title"]))
    assert len(raw - in_statement) == 3  # spelled differently only by case or spaces


def test_catalog_shares(lake):
    catalog = read(lake, "track_catalog")
    collaboration = catalog["title"].str.contains("(feat. ", regex=False)
    assert collaboration.sum() == 5
    assert catalog.loc[~collaboration, "your_revenue_share"].eq(100).all()
    assert catalog.loc[collaboration, "your_revenue_share"].between(40, 90).all()
    assert sorted(catalog.loc[collaboration, "your_revenue_share"]) == [40, 50, 60, 75, 90]
    assert (catalog["royalty_percentage"] == catalog["your_revenue_share"]).all()


def test_campaign_and_ad_set_names_name_catalog_tracks(lake):
    catalog = read(lake, "track_catalog")
    tracks = {
        (artist.strip().upper(), title.strip().upper().split(" (FEAT.")[0])
        for artist, title in zip(catalog["artist"], catalog["title"])
    }
    campaigns = read(lake, "metaads_campaigns_daily")
    export = read(lake, "meta_ads_export")
    names = [*campaigns["campaign_name"], *read(lake, "metaads_campaigns_performance_log")["campaign_name"]]
    for name in [*names, *export["Ad Set Name"]]:
        artist, track, *targeting = name.split(" - ")
        assert (artist, track) in tracks, name
        assert targeting, name
    assert len(campaigns) == 8
    assert campaigns["campaign_name"].str.endswith(" - Copy").sum() == 1
    assert export["Ad name"].str.contains(r"AD\d+").all()


def test_date_ranges_overlap(lake):
    statement = read(lake, "dk_bank_details")
    campaigns = read(lake, "metaads_campaigns_daily")
    audience = read(lake, "spotify_audience")
    streams = read(lake, "tidy_daily_streams")
    log = read(lake, "metaads_campaigns_performance_log")

    assert statement["Sale Month"].min().date() == date(2024, 1, 1)
    assert statement["Sale Month"].max().date() == date(2025, 6, 1)
    lag = statement["Reporting Date"] - statement["Sale Month"]
    assert lag.dt.days.between(28, 4 * 31).all()

    first, last = campaigns["first_seen_date"].min().date(), campaigns["last_seen_date"].max().date()
    assert (first, last) == (date(2025, 1, 6), date(2025, 5, 31))
    span = (campaigns["last_seen_date"] - campaigns["first_seen_date"]).dt.days + 1
    assert (campaigns["total_days_active"] == span).all()
    assert campaigns["is_currently_active"].sum() == 3

    assert (log["date"].min().date(), log["date"].max().date()) == (date(2025, 5, 3), date(2025, 5, 31))

    for frame in (audience, streams, read(lake, "linktree_analytics"), read(lake, "tiktok_analytics")):
        span = (frame["date"].min().date(), frame["date"].max().date())
        assert span == (date(2024, 7, 1), date(2025, 6, 30))


def test_statement_shape(lake):
    statement = read(lake, "dk_bank_details")
    assert len(statement) == 4_000
    assert set(statement["Store"]) == STORES
    assert statement["Store"].value_counts().index[0] == "Spotify"
    assert statement["Country of Sale"].value_counts().index[0] == "US"
    assert set(statement["Artist"]) == {"NOVA VANTA", "GLASS ORCHID"}
    assert statement["ISRC"].str.fullmatch(r"[A-Z]{2}[A-Z0-9]{3}\d{7}").all()
    assert statement["UPC"].str.fullmatch(r"\d{12}").all()
    assert statement.groupby("Title")["ISRC"].nunique().eq(1).all()

    totals = statement.groupby("Store")[["Earnings (USD)", "Quantity"]].sum()
    per_stream = totals["Earnings (USD)"] / totals["Quantity"]
    assert per_stream.between(0.0002, 0.011).all()
    assert per_stream["Apple Music"] > 1.5 * per_stream["Spotify"] > 3 * per_stream["YouTube (Ads)"]

    assert (statement["Earnings (USD)"] == 0).any()
    assert (statement["Earnings (USD)"] < 0).any()
    assert statement["Quantity"].median() < 50
    assert statement["Quantity"].max() >= 1_000
    assert (statement["Team Percentage"] == 100).mean() > 0.99
    assert set(statement["Song/Album"]) == {"Song", "Album"}
    grain = ["Reporting Date", "Sale Month", "Store", "Artist", "Title", "Country of Sale"]
    assert not statement.duplicated(grain).any()


def test_staging_copies_and_derived_columns(lake):
    settings, _ = lake
    curated, staging = settings.zone("curated"), settings.zone("staging")
    assert (curated / "dk_bank_details.csv").read_bytes() == (staging / "dk_bank_details.csv").read_bytes()

    streams = read(lake, "tidy_daily_streams")
    assert list(streams["source"].unique()) == ["distrokid", "toolost"]
    assert streams.groupby("source")["date"].apply(lambda d: d.is_monotonic_increasing).all()
    assert (streams["combined_streams"] == streams["spotify_streams"] + streams["apple_streams"]).all()
    distrokid = read(lake, "daily_streams_distrokid")
    assert distrokid.equals(streams[streams["source"] == "distrokid"].drop(columns="source"))

    export = read(lake, "meta_ads_export")
    staged_path = staging / "metaads" / "metaads_staging_latest.csv"
    staged = read_dataset(BY_NAME["metaads_staging"], staged_path, ["ad_name", "cpm"])
    assert list(staged["ad_name"]) == list(export["Ad name"])
    assert (staged["cpm"] - export["Amount spent (USD)"] / export["Impressions"] * 1000).abs().max() < 1e-4
    landing = settings.zone("landing") / "BEDROT-ADS-Ads-Jan-1-2025-May-31-2025.csv"
    with landing.open(newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == list(BY_NAME["meta_ads_export"].columns)


def test_audience_and_tiktok_acts(lake):
    audience = read(lake, "spotify_audience")
    assert set(audience["artist_name"]) == {"nova_vanta", "glass_orchid"}
    assert audience["artist_id"].str.fullmatch(r"[0-9A-Za-z]{22}").all()
    assert audience.groupby("artist_name")["followers"].apply(lambda f: f.is_monotonic_increasing).all()
    tiktok = read(lake, "tiktok_analytics")
    assert set(tiktok["artist"]) == {"novavanta", "glassorchid"}
    assert (tiktok["artist"] == tiktok["zone"]).all()
    assert (tiktok["new_followers"] >= 0).all()
    assert (tiktok["Year"] == tiktok["date"].dt.year).all()
    linktree = read(lake, "linktree_analytics")
    assert (linktree["uniqueViews"] <= linktree["totalViews"]).all()
    assert (linktree["uniqueClicks"] <= linktree["totalClicks"]).all()


def test_scale_writes_exactly_n_rows_in_batches(tmp_path, monkeypatch):
    monkeypatch.setattr("bedrot_lab.sample.statement.BATCH_ROWS", 7_000)
    settings = make_settings(tmp_path)
    messages: list[str] = []
    write_sample(settings, scale=50_000, progress=messages.append)
    for zone in ("curated", "staging"):
        statement = settings.zone(zone) / "dk_bank_details.csv"
        assert data_rows(statement) == 50_000
        batches = [m for m in messages if m.startswith(f"{statement.relative_to(tmp_path)}: ")]
        assert len(batches) == 8  # ceil(50,000 / 7,000)
        assert batches[-1].endswith("50,000 of 50,000 rows")
    assert len(read_dataset(BY_NAME["dk_bank_details"], settings.zone("curated") / "dk_bank_details.csv")) == 50_000


def test_progress_names_the_file_as_it_is_called_and_only_while_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr("bedrot_lab.sample.statement.BATCH_ROWS", 4)
    settings = make_settings(tmp_path)
    messages: list[str] = []
    report = write_sample(settings, scale=10, progress=messages.append)
    # batches of the statements under their own names (relative to the lake), never the
    # temporary files'; the files written are the report's to list, not the progress's
    assert messages == [
        *(f"4_curated/dk_bank_details.csv: {done} of 10 rows" for done in (4, 8, 10)),
        *(f"3_staging/dk_bank_details.csv: {done} of 10 rows" for done in (4, 8, 10)),
        "3_staging/metaads/metaads_staging_latest.csv: 31 rows, 1 of 1 copies of the ad sets",
    ]
    assert len(report.written) == len(EXPECTED_FILES)


# -- --scale: the files the ETL experiments read, at size ------------------------------------

SCALE = 50_000
SCALED_FILES = {"4_curated/dk_bank_details.csv", "3_staging/dk_bank_details.csv",
                "3_staging/metaads/metaads_staging_latest.csv"}
STAGED_ADS = "3_staging/metaads/metaads_staging_latest.csv"


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[str]]:
    """A sample lake at ``--scale 50,000``, a progress message every 5 copies of the ad sets."""
    settings = make_settings(tmp_path_factory.mktemp("scaled"))
    messages: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bedrot_lab.sample.AD_COPIES_PER_MESSAGE", 5)
        write_sample(settings, scale=SCALE, progress=messages.append)
    return settings, messages


def test_scale_makes_both_statements_that_long_and_alike(scaled):
    settings, _ = scaled
    curated, staging = (settings.zone(zone) / "dk_bank_details.csv" for zone in ("curated", "staging"))
    assert data_rows(staging) == SCALE
    assert staging.read_bytes() == curated.read_bytes()  # the cleaner's byte copy, as in the real lake
    statement = read_dataset(BY_NAME["dk_bank_details_staging"], staging)
    assert len(statement) == SCALE
    assert set(statement["Store"]) == STORES


def test_scale_stages_a_copy_of_the_ad_sets_per_default_statement(scaled, lake):
    settings, _ = scaled
    assert ad_set_copies(SCALE) == SCALE // DEFAULT_STATEMENT_ROWS == 12
    ads = read_dataset(BY_NAME["metaads_staging"], settings.root / STAGED_ADS)
    unscaled = read(lake, "metaads_staging")
    assert 11 * len(unscaled) < len(ads) < SCALE // 10
    # the first copy is the unscaled file; the others are its ad sets duplicated, named as Meta does
    assert ads.head(len(unscaled)).equals(unscaled)
    copies = ads["adset_name"].str.extract(r" - Copy (\d+)$")[0].dropna().astype(int)
    assert sorted(set(copies)) == list(range(2, 13))
    assert len(copies) == len(ads) - len(unscaled)
    assert ads["ad_name"].is_unique
    assert set(ads["adset_name"].str.split(" - ").str[0]) == {"NOVA VANTA", "GLASS ORCHID"}
    assert ads[["results", "reach", "impressions", "spend_usd", "cost_per_result"]].ge(0).all().all()
    assert (ads["reach"] <= ads["impressions"]).all()


def test_scale_leaves_every_other_file_as_without_it(scaled, lake):
    (settings, _), (unscaled, _) = scaled, lake
    files, original = files_of(settings.root), files_of(unscaled.root)
    assert sorted(files) == sorted(EXPECTED_FILES)
    assert {name for name in files if files[name] != original[name]} == SCALED_FILES


def test_scale_reports_progress_for_each_scaled_file(scaled):
    _, messages = scaled
    assert [m for m in messages if m.startswith("3_staging/dk_bank_details.csv")] == [
        "3_staging/dk_bank_details.csv: 50,000 of 50,000 rows"]
    ads = [m.split(", ", 1)[1] for m in messages if m.startswith(f"{STAGED_ADS}: ")]
    assert ads == [f"{done} of 12 copies of the ad sets" for done in (5, 10, 12)]
    assert messages[-1].startswith(f"{STAGED_ADS}: {data_rows(scaled[0].root / STAGED_ADS):,} rows")


@pytest.fixture
def etl_lab(bedrot_lake: Path) -> Lab:
    for name in ("distrokid_staging2curated.py", "metaads_staging2curated.py"):
        shutil.copy(REPO_PLUGINS / name, bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def test_the_etl_experiments_run_on_a_scaled_lake_and_their_outputs_promote(etl_lab):
    write_sample(etl_lab.settings, scale=SCALE)
    distrokid = run_experiment(etl_lab, "distrokid-staging2curated")
    assert distrokid.status == "FINISHED", distrokid.error
    metrics = read_run(distrokid.run_id, etl_lab).data.metrics
    assert (metrics["bank_rows_in"], metrics["bank_rows_out"], metrics["bank_byte_copy"]) == (SCALE, SCALE, 1.0)
    assert metrics["streams_duplicate_keys"] == 0

    metaads = run_experiment(etl_lab, "metaads-staging2curated")
    assert metaads.status == "FINISHED", metaads.error
    metrics = read_run(metaads.run_id, etl_lab).data.metrics
    assert metrics["ads_out"] == data_rows(etl_lab.settings.root / STAGED_ADS)
    assert (metrics["duplicate_ads"], metrics["campaigns_out"]) == (0, 2)
    # the per-ad output keeps its key (ad set, ad) at scale: its contract lets it be promoted
    version = register(etl_lab, metaads.run_id, "metaads_ad_performance", "metaads/ad_performance_latest.csv")
    assert promote(etl_lab, version["name"]).status == "promote"


def test_scale_zero_writes_only_the_header(tmp_path):
    settings = make_settings(tmp_path)
    write_sample(settings, scale=0)
    assert data_rows(settings.zone("curated") / "dk_bank_details.csv") == 0
