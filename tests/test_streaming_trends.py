"""streaming-trends against hand-made streams whose expected numbers are worked out by hand."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import REPO_PLUGINS, STATEMENT_HEADER
from mlflow import MlflowClient

from bedrot_lab.experiments import ParamError
from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

DAILY_HEADER = "date,spotify_streams,apple_streams,combined_streams,source\n"


def line(month: str, store: str, artist: str, quantity: int | str) -> str:
    return f"2025-06-05,{month},{store},{artist},SOME TRACK,QZNV52500301,196871550309,{quantity},100,Song,US,0,0.01\n"


#: Jan 200, Feb nothing (0), Mar 160, Apr 300
GOLDEN = (
    line("2025-01", "Spotify", "NOVA VANTA", 100),
    line("2025-01", "Apple Music", "GLASS ORCHID", 50),
    line("2025-01", "TikTok", "NOVA VANTA", 50),
    line("2025-03", "Spotify", "NOVA VANTA", 150),
    line("2025-03", "iTunes", "GLASS ORCHID", 10),
    line("2025-04", "Spotify", "GLASS ORCHID", 200),
    line("2025-04", "Spotify", "NOVA VANTA", 60),
    line("2025-04", "YouTube (Ads)", "NOVA VANTA", 40),
)


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "streaming_trends.py", bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def write_statement(lake, *rows: str) -> None:
    (lake / "4_curated" / "dk_bank_details.csv").write_text(STATEMENT_HEADER + "".join(rows))


def table(lab, run_id: str, name: str) -> pd.DataFrame:
    client = MlflowClient(lab.settings.tracking_uri)
    return pd.read_parquet(client.download_artifacts(run_id, f"tables/{name}.parquet"))


def test_monthly_streams_growth_and_an_empty_month(lab, bedrot_lake):
    write_statement(bedrot_lake, *GOLDEN)
    result = run_experiment(lab, "streaming-trends", top_stores=2)
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    metrics = stored.data.metrics
    assert metrics["streams"] == 660             # 200 + 0 + 160 + 300
    assert metrics["months_covered"] == 4              # 2025-01..2025-04, February included
    assert metrics["months_without_streams"] == 1      # 2025-02
    assert metrics["latest_month_streams"] == 300      # 200 + 60 + 40
    assert metrics["latest_mom_growth_pct"] == pytest.approx(87.5)  # (300 - 160) / 160 * 100
    assert stored.data.tags["best_month"] == "2025-04" and metrics["best_month_streams"] == 300
    assert metrics["spotify_streams"] == 510           # 100 + 150 + 200 + 60
    assert metrics["apple_streams"] == 60              # Apple Music 50 + iTunes 10
    assert metrics["other_streams"] == 90              # TikTok 50 + YouTube (Ads) 40
    assert not any(tag.startswith("skipped.") for tag in stored.data.tags)

    totals = table(lab, result.run_id, "monthly_totals")
    assert list(totals["month"]) == ["2025-01", "2025-02", "2025-03", "2025-04"]
    assert list(totals["streams"]) == [200, 0, 160, 300]
    growth = totals["mom_growth_pct"]
    assert pd.isna(growth[0])                          # first month: nothing to compare with
    assert growth[1] == pytest.approx(-100.0)          # (0 - 200) / 200 * 100
    assert pd.isna(growth[2])                          # growth from 0 is undefined, not inf
    assert growth[3] == pytest.approx(87.5)

    platform = table(lab, result.run_id, "monthly_by_platform").set_index(["month", "platform"])
    assert platform.loc[("2025-02", "Spotify"), "streams"] == 0
    assert platform.loc[("2025-04", "Spotify"), "streams"] == 260  # 200 + 60
    assert platform.loc[("2025-04", "Spotify"), "mom_growth_pct"] == pytest.approx(110 / 150 * 100)  # 73.333
    assert platform.loc[("2025-03", "Apple"), "streams"] == 10     # iTunes counts as Apple
    assert platform.loc[("2025-04", "Apple"), "mom_growth_pct"] == pytest.approx(-100.0)  # (0 - 10) / 10 * 100

    artist = table(lab, result.run_id, "monthly_by_artist").set_index(["month", "artist"])
    assert artist.loc[("2025-01", "NOVA VANTA"), "streams"] == 150  # 100 + 50
    assert artist.loc[("2025-04", "NOVA VANTA"), "streams"] == 100  # 60 + 40
    assert artist.loc[("2025-04", "GLASS ORCHID"), "mom_growth_pct"] == pytest.approx(1900.0)  # (200 - 10) / 10 * 100

    store = table(lab, result.run_id, "monthly_by_store")
    assert len(store) == 4 * 5                         # every month for each of the 5 stores
    assert store.groupby("store")["streams"].sum().to_dict() == {
        "Spotify": 510, "TikTok": 50, "Apple Music": 50, "YouTube (Ads)": 40, "iTunes": 10}

    figures = {a.path for a in MlflowClient(lab.settings.tracking_uri).list_artifacts(result.run_id, "figures")}
    assert figures == {"figures/monthly_streams.png", "figures/monthly_growth.png",
                       "figures/monthly_streams_top_stores.png", "figures/monthly_streams_by_artist.png"}


def test_latest_growth_after_an_empty_month_is_skipped_with_a_reason(lab, bedrot_lake):
    write_statement(bedrot_lake, line("2025-01", "Spotify", "NOVA VANTA", 100),
                    line("2025-03", "Spotify", "NOVA VANTA", 50))
    result = run_experiment(lab, "streaming-trends")
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED", result.error
    assert stored.data.metrics["months_covered"] == 3
    assert stored.data.metrics["latest_month_streams"] == 50
    assert "latest_mom_growth_pct" not in stored.data.metrics
    assert stored.data.tags["skipped.latest_mom_growth_pct"] == (
        "no streams in 2025-02, the month before 2025-03: growth from 0 is undefined")


def test_a_single_month_has_no_growth(lab, bedrot_lake):
    write_statement(bedrot_lake, line("2025-05", "Spotify", "NOVA VANTA", 0))
    result = run_experiment(lab, "streaming-trends")
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED", result.error
    assert stored.data.metrics["streams"] == 0 and stored.data.metrics["months_covered"] == 1
    assert stored.data.tags["best_month"] == "2025-05" and "best_month" not in stored.data.metrics
    assert stored.data.tags["skipped.latest_mom_growth_pct"] == "only one month of data (2025-05)"


def test_daily_source_sums_spotify_and_apple_by_month(lab, bedrot_lake):
    (bedrot_lake / "4_curated" / "tidy_daily_streams.csv").write_text(
        DAILY_HEADER
        + "2025-01-30,10,5,15,distrokid\n"
        + "2025-03-01,40,10,50,distrokid\n"
        + "2025-01-31,20,0,20,toolost\n"
        + "2025-03-02,25,5,30,toolost\n"
    )
    result = run_experiment(lab, "streaming-trends", source="daily")
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    metrics = stored.data.metrics
    assert metrics["streams"] == 115             # Jan 10+5+20+0 = 35, Mar 40+10+25+5 = 80
    assert metrics["months_covered"] == 3 and metrics["months_without_streams"] == 1
    assert metrics["spotify_streams"] == 95            # 10 + 20 + 40 + 25
    assert metrics["apple_streams"] == 20              # 5 + 0 + 10 + 5
    assert metrics["latest_month_streams"] == 80
    assert stored.data.tags["best_month"] == "2025-03" and metrics["best_month_streams"] == 80
    assert "skipped.latest_mom_growth_pct" in stored.data.tags  # February had no streams

    totals = table(lab, result.run_id, "monthly_totals")
    assert list(totals["streams"]) == [35, 0, 80]
    assert list(totals["days_with_data"]) == [2, 0, 2]
    assert list(totals["days_in_month"]) == [31, 28, 31]
    assert pd.isna(totals["mom_growth_pct"][2])
    artifacts = {a.path for a in MlflowClient(lab.settings.tracking_uri).list_artifacts(result.run_id, "tables")}
    assert "tables/monthly_by_artist.parquet" not in artifacts  # the daily data has no artist


def test_text_in_quantity_fails_naming_file_and_column(lab, bedrot_lake):
    write_statement(bedrot_lake, line("2025-01", "Spotify", "NOVA VANTA", 10),
                    line("2025-02", "Spotify", "NOVA VANTA", "lots"))
    result = run_experiment(lab, "streaming-trends")
    assert result.status == "FAILED"
    assert "dk_bank_details.csv: column 'Quantity'" in result.error and "'lots'" in result.error


def test_daily_source_without_its_file_fails_naming_it(lab, bedrot_lake):
    write_statement(bedrot_lake, *GOLDEN)
    result = run_experiment(lab, "streaming-trends", source="daily")
    assert result.status == "FAILED"
    assert "tidy_daily_streams" in result.error and "file not found" in result.error


def test_an_unknown_source_is_refused_before_any_run(lab):
    with pytest.raises(ParamError, match="source"):
        run_experiment(lab, "streaming-trends", source="weekly")


def test_on_the_sample_lake_both_sources_give_positive_trends(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    write_sample(lab.settings)
    for source in ("statement", "daily"):
        result = run_experiment(lab, "streaming-trends", source=source)
        assert result.status == "FINISHED", (source, result.error)
        metrics = read_run(result.run_id, lab).data.metrics
        for name in ("streams", "months_covered", "latest_month_streams", "best_month_streams",
                     "spotify_streams", "apple_streams"):
            assert metrics[name] > 0, (source, name)
        assert metrics["months_covered"] >= 12 and metrics["months_without_streams"] == 0
        assert metrics["best_month_streams"] <= metrics["streams"]
        assert "latest_mom_growth_pct" in metrics


def test_an_artist_spelled_several_ways_is_one_artist(lab, bedrot_lake):
    write_statement(bedrot_lake, *GOLDEN, line("2025-04", "Spotify", "Nova  Vanta", 20),
                    line("2025-04", "Apple Music", " glass orchid", 5))
    result = run_experiment(lab, "streaming-trends")
    assert result.status == "FINISHED", result.error
    artist = table(lab, result.run_id, "monthly_by_artist")
    assert sorted(set(artist["artist"])) == ["GLASS ORCHID", "NOVA VANTA"]
    streams = artist.set_index(["month", "artist"])["streams"]
    assert streams[("2025-04", "NOVA VANTA")] == 120 and streams[("2025-04", "GLASS ORCHID")] == 205


def test_a_negative_row_fails_though_its_month_store_and_artist_sum_to_more(lab, bedrot_lake):
    # (2025-04, Spotify, NOVA VANTA) sums to 60 - 5 = 55 streams, but one of its rows has -5
    write_statement(bedrot_lake, *GOLDEN, line("2025-04", "Spotify", "NOVA VANTA", -5))
    result = run_experiment(lab, "streaming-trends")
    assert result.status == "FAILED"
    assert "dk_bank_details.csv: streams should be 0 or more, but found -5" in result.error


def test_an_artist_is_spelled_as_most_rows_spell_it_not_most_groups(lab, bedrot_lake):
    # "Glass Orchid": 3 rows, all in one month and store; "GLASS ORCHID": 2 rows in two
    write_statement(bedrot_lake, line("2025-01", "Spotify", "Glass Orchid", 10),
                    line("2025-01", "Apple Music", "GLASS ORCHID", 5),
                    line("2025-01", "Spotify", "Glass Orchid", 20),
                    line("2025-02", "Spotify", "GLASS ORCHID", 7),
                    line("2025-01", "Spotify", "Glass Orchid", 30))
    result = run_experiment(lab, "streaming-trends")
    assert result.status == "FINISHED", result.error
    artist = table(lab, result.run_id, "monthly_by_artist")
    assert set(artist["artist"]) == {"Glass Orchid"}
    assert list(artist["streams"]) == [65, 7]   # 10 + 5 + 20 + 30, then 7
    assert read_run(result.run_id, lab).data.metrics["streams"] == 72
