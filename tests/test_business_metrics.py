"""business-metrics against hand-made data sets whose expected numbers are worked out by hand."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, REPO_PLUGINS, STATEMENT_HEADER
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.specs import load_spec
from bedrot_lab.testing import read_run, run_experiment

ADS_HEADER = ("campaign_id,campaign_name,first_seen_date,last_seen_date,total_spend_usd,total_impressions,"
              "total_clicks,max_daily_reach,is_currently_active,data_source,api_version,avg_cpc,avg_ctr,"
              "total_days_active\n")
AUDIENCE_HEADER = "date,listeners,streams,followers,artist_id,artist_name\n"
CATALOG_HEADER = "artist,title,your_revenue_share,isrc,upc,release_date,release_type,royalty_percentage\n"
AUDIENCE_FILE = "spotify_audience_curated_20250701_120000.csv"

NOVA, GLASS = ("3Xk9PqL2vN8wRt5YbZ1mCd", "nova_vanta"), ("6hT4sWq0JeM7uAa2FgK9rV", "glass_orchid")
NIGHT_DRIVE = ("NOVA VANTA", "NIGHT DRIVE")
ECHO_PARK = ("NOVA VANTA", "ECHO PARK (feat. GLASS ORCHID)")
LOST_TAPE = ("GLASS ORCHID", "LOST TAPE")


def campaign(number: int, first: str, last: str, spend: float, clicks: int, cpc: float, days: int) -> str:
    return (f"12020000000000000{number},CAMPAIGN {number} - BROAD,{first},{last},{spend:.2f},{clicks * 50},"
            f"{clicks},500.0,false,meta_daily_campaigns_extractor,v18.0,{cpc:.4f},2.000,{days}\n")


def listeners(date: str, nova: int, glass: int) -> str:
    return (f"{date},{nova},{nova * 2},2000,{NOVA[0]},{NOVA[1]}\n"
            f"{date},{glass},{glass * 2},1500,{GLASS[0]},{GLASS[1]}\n")


def sale(month: str, store: str, track: tuple[str, str], quantity: int, earnings: float) -> str:
    artist, title = track
    return (f"2025-05-15,{month},{store},{artist},{title},QZNV52400001,196871300101,{quantity},100,Song,US,0,"
            f"{earnings}\n")


# Two overlapping campaigns: window = [2025-01-10, 2025-01-29].
# spend = 40 + 60 = 100; clicks = 80 + 20 = 100; mean avg_cpc = (0.5 + 3.0) / 2 = 1.75;
# spend per click = 100 / 100 = 1.0; campaign-days = 10 + 15 = 25 -> daily ad spend = 100 / 25 = 4.0
ADS = (campaign(1, "2025-01-10", "2025-01-19", 40, 80, 0.5, 10)
       + campaign(2, "2025-01-15", "2025-01-29", 60, 20, 3.0, 15))

# Both acts summed per day: 800 | 600, 1050, 1100 inside the window | 1500.
# growth = 1100 - 600 = 500 (raw rows would give 800 - 200 = 600, per act 400 + 250 = 650);
# max listeners over the whole timeline = 1500 (2025-02-10, outside the window).
AUDIENCE = (listeners("2025-01-05", 500, 300) + listeners("2025-01-10", 400, 200)
            + listeners("2025-01-20", 800, 250) + listeners("2025-01-29", 650, 450)
            + listeners("2025-02-10", 900, 600))

# Stores: Spotify 5000 + 3000 + 4000 = 12000 streams, 15 + 9 + 12 = 36 USD;
# Apple (Apple Music + iTunes) 1500 + 500 = 2000, 9 + 3 = 12; Other (YouTube) 6000, 12.
# Total 20000 streams, 60 USD. Tracks: NIGHT DRIVE 15 + 12 = 27 (11000 streams),
# ECHO PARK 9 + 12 = 21 (7000), LOST TAPE 9 + 3 = 12 (2000).
STATEMENT = (sale("2024-11", "Spotify", NIGHT_DRIVE, 5000, 15.00)
             + sale("2024-12", "Spotify", ECHO_PARK, 3000, 9.00)
             + sale("2025-01", "Apple Music", LOST_TAPE, 1500, 9.00)
             + sale("2025-02", "YouTube (Ads)", NIGHT_DRIVE, 6000, 12.00)
             + sale("2025-03", "Spotify", ECHO_PARK, 4000, 12.00)
             + sale("2025-03", "iTunes", LOST_TAPE, 500, 3.00))

# NIGHT DRIVE spelled in other case with surrounding spaces (100%), the collaboration
# ECHO PARK at 60%, a track the statement does not have; LOST TAPE is missing.
CATALOG = ('" nova vanta "," Night Drive ",100,,,,single,100\n'
           "NOVA VANTA,ECHO PARK (feat. GLASS ORCHID),60,,,2024-12-01,single,60\n"
           "GLASS ORCHID,UNRELEASED DEMO,50,,,,single,50\n")


@pytest.fixture
def lab(bedrot_lake: Path) -> Lab:
    shutil.copy(REPO_PLUGINS / "business_metrics.py", bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def write_lake(lake: Path, *, ads: str = ADS, audience: str = AUDIENCE, statement: str = STATEMENT,
               catalog: str = CATALOG) -> None:
    curated = lake / "4_curated"
    (curated / "metaads_campaigns_daily.csv").write_text(ADS_HEADER + ads)
    (curated / AUDIENCE_FILE).write_text(AUDIENCE_HEADER + audience)
    (curated / "dk_bank_details.csv").write_text(STATEMENT_HEADER + statement)
    (curated / "track_catalog_royalty_splits.csv").write_text(CATALOG_HEADER + catalog)


def finished(lab: Lab, **params) -> tuple[str, dict[str, float], dict[str, str]]:
    """Run business-metrics; its run id, metrics and skipped.* tags (none of them a bare NaN)."""
    result = run_experiment(lab, "business-metrics", **params)
    assert result.status == "FINISHED", result.error
    data = read_run(result.run_id, lab).data
    skipped = {k.removeprefix("skipped."): v for k, v in data.tags.items() if k.startswith("skipped.")}
    assert not [v for v in skipped.values() if v.startswith("value is")], skipped
    return result.run_id, data.metrics, skipped


def table(lab: Lab, run_id: str, name: str) -> pd.DataFrame:
    client = MlflowClient(lab.settings.tracking_uri)
    return pd.read_parquet(client.download_artifacts(run_id, f"tables/{name}.parquet"))


def test_gross_metrics_match_the_hand_worked_numbers(lab, bedrot_lake):
    write_lake(bedrot_lake)
    run_id, metrics, skipped = finished(lab, top_n=2)
    assert skipped == {}
    expected = {
        "campaigns": 2, "ad_spend_usd": 100.0, "ad_clicks": 100, "cost_per_click_usd": 1.0, "mean_campaign_cost_per_click_usd": 1.75,
        "campaign_window_days": 20,                       # 2025-01-10 .. 2025-01-29 inclusive
        "listener_growth": 500,
        "listeners_per_click_ratio": 5.0,                 # 500 / 100
        "cpa_usd": 0.2,                                   # 100 / 500
        "max_listeners": 1500,
        "revenue_per_listener_usd": 0.04,                 # 60 / 1500
        "ltv_usd": 0.24,                                  # 0.04 * 6
        "roi_pct": 20.0,                                  # (0.24 - 0.2) / 0.2 * 100
        "profit_per_listener_usd": 0.04,                  # 0.24 - 0.2
        "streams": 20000, "gross_revenue_usd": 60.0,
        "revenue_per_stream_usd": 0.003,                  # 60 / 20000
        "revenue_per_stream_spotify_usd": 0.003,          # 36 / 12000
        "revenue_per_stream_apple_usd": 0.006,            # 12 / 2000
        "revenue_per_stream_other_usd": 0.002,            # 12 / 6000
        "daily_revenue_usd": 0.5,                         # 60 / 120 days (2024-11-01 .. 2025-03-01: 30+31+31+28)
        "daily_ad_spend_usd": 4.0,
        "revenue_per_click_usd": 0.15,                    # 50 * 0.003
        "payback_days": 8.0,                              # 4.0 / 0.5
        # cutoff 2025-03-01 - 90 days = 2024-12-01: December (on the cutoff) onwards is new
        "new_release_streams": 15000, "new_release_revenue_usd": 45.0,    # 20000 - 5000, 60 - 15
        "back_catalog_streams": 5000, "back_catalog_revenue_usd": 15.0,   # November's NIGHT DRIVE
        "tracks": 3, "months_without_data": 0,
    }
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert not {"royalty_adjusted_revenue_usd", "royalties_paid_usd", "retention_rate", "tracks_not_in_catalog"} \
        & set(metrics)

    top = table(lab, run_id, "top_tracks")
    assert list(top["Title"]) == ["NIGHT DRIVE", "ECHO PARK (feat. GLASS ORCHID)"]  # top_n=2 of 3
    assert list(top["earnings_usd"]) == pytest.approx([27.0, 21.0])
    assert list(top["streams"]) == [11000, 7000]
    platforms = table(lab, run_id, "revenue_per_stream_by_platform").set_index("platform")
    assert platforms.loc["Apple", "earnings_per_1000_streams"] == pytest.approx(6.0)
    stores = table(lab, run_id, "revenue_per_stream_by_store").set_index("Store")
    assert stores.loc["iTunes", "platform"] == "Apple" and stores.loc["iTunes", "earnings_per_stream"] == 0.006
    releases = table(lab, run_id, "back_catalog_vs_new_releases").set_index("release_type")
    assert releases.loc["Back Catalog", "earnings_usd"] == pytest.approx(15.0)

    artifacts = {a.path for a in MlflowClient(lab.settings.tracking_uri).list_artifacts(run_id, "figures")}
    assert artifacts == {f"figures/{name}.png" for name in ("listeners", "revenue_per_1000_streams", "monthly_revenue",
                                                            "top_tracks")}
    report = Path(MlflowClient(lab.settings.tracking_uri).download_artifacts(run_id, "report.md")).read_text()
    assert "Revenue figures are gross earnings" in report and "| `payback_days` | 8 |" in report


def test_royalty_adjusted_metrics_use_the_label_share(lab, bedrot_lake):
    write_lake(bedrot_lake)
    run_id, metrics, skipped = finished(lab, royalty_adjusted=True)
    assert skipped == {}
    # ECHO PARK at 60%: 21 * 0.6 = 12.6 (Spotify Dec 9 * 0.6 = 5.4, Mar 12 * 0.6 = 7.2);
    # NIGHT DRIVE matched despite case and spaces: 27; LOST TAPE not in the catalog, 100%: 12.
    # Label share = 27 + 12.6 + 12 = 51.6 of 60 gross.
    expected = {
        "ad_spend_usd": 100.0, "listener_growth": 500, "cpa_usd": 0.2,   # ads and audience are unchanged
        "royalty_adjusted_revenue_usd": 51.6,
        "gross_revenue_usd": 60.0,
        "royalties_paid_usd": 8.4,                          # 60 - 51.6
        "retention_rate": 0.86,                             # 51.6 / 60
        "tracks_not_in_catalog": 1,                         # LOST TAPE
        "revenue_per_listener_usd": 0.0344,                 # 51.6 / 1500
        "ltv_usd": 0.2064,                                  # 0.0344 * 6
        "roi_pct": 3.2,                                     # (0.2064 - 0.2) / 0.2 * 100
        "profit_per_listener_usd": 0.0064,                  # 0.2064 - 0.2
        "revenue_per_stream_usd": 0.00258,                  # 51.6 / 20000
        "revenue_per_stream_spotify_usd": 0.0023,           # (15 + 5.4 + 7.2) / 12000 = 27.6 / 12000
        "revenue_per_stream_apple_usd": 0.006,              # LOST TAPE kept whole: 12 / 2000
        "revenue_per_stream_other_usd": 0.002,              # NIGHT DRIVE on YouTube: 12 / 6000
        "daily_revenue_usd": 0.43,                          # 51.6 / 120
        "revenue_per_click_usd": 0.129,                     # 50 * 0.00258
        "payback_days": 4.0 / 0.43,                         # 9.3023...
        "back_catalog_revenue_usd": 15.0,                   # November's NIGHT DRIVE, 100%
        "new_release_revenue_usd": 36.6,                    # 51.6 - 15
    }
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)

    artists = table(lab, run_id, "artist_economics").set_index("Artist")
    # NOVA VANTA: gross 27 + 21 = 48, actual 27 + 12.6 = 39.6; GLASS ORCHID: 12, 12
    assert artists.loc["NOVA VANTA", ["gross_usd", "actual_usd", "royalties_usd", "retention_rate"]].tolist() \
        == pytest.approx([48.0, 39.6, 8.4, 0.825])
    assert artists.loc["GLASS ORCHID", ["gross_usd", "actual_usd", "royalties_usd"]].tolist() \
        == pytest.approx([12.0, 12.0, 0.0])
    tracks = table(lab, run_id, "track_shares").set_index("Title")
    assert tracks["share"].to_dict() == pytest.approx(
        {"NIGHT DRIVE": 1.0, "ECHO PARK (feat. GLASS ORCHID)": 0.6, "LOST TAPE": 1.0})
    assert tracks["in_catalog"].to_dict() == {
        "NIGHT DRIVE": True, "ECHO PARK (feat. GLASS ORCHID)": True, "LOST TAPE": False}
    assert list(table(lab, run_id, "top_tracks")["earnings_usd"]) == pytest.approx([27.0, 12.6, 12.0])


def test_a_track_missing_from_the_catalog_keeps_the_default_share(lab, bedrot_lake):
    write_lake(bedrot_lake)
    run_id, metrics, _ = finished(lab, royalty_adjusted=True, default_share=50)
    # only LOST TAPE changes: 12 * 0.5 = 6 -> 27 + 12.6 + 6 = 45.6; royalties 60 - 45.6 = 14.4
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(45.6)
    assert metrics["royalties_paid_usd"] == pytest.approx(14.4)
    assert metrics["revenue_per_stream_apple_usd"] == pytest.approx(0.003)  # 6 / 2000
    assert metrics["tracks_not_in_catalog"] == 1
    lost = table(lab, run_id, "track_shares").set_index("Title").loc["LOST TAPE"]
    assert lost["share"] == 0.5 and not lost["in_catalog"] and lost["gross_usd"] == pytest.approx(12.0)


def test_zero_clicks_skips_the_per_click_rates_and_keeps_the_rest(lab, bedrot_lake):
    # one campaign without clicks (avg_cpc is 0 in the file, as the cleaner writes inf as 0);
    # window 2025-01-10 .. 2025-01-20 holds the days 600 and 1050 -> growth 450
    write_lake(bedrot_lake, ads=campaign(1, "2025-01-10", "2025-01-20", 10, 0, 0.0, 11))
    _, metrics, skipped = finished(lab)
    assert metrics["ad_clicks"] == 0 and metrics["mean_campaign_cost_per_click_usd"] == 0
    assert metrics["listener_growth"] == 450
    assert metrics["cpa_usd"] == pytest.approx(10 / 450)
    assert metrics["daily_ad_spend_usd"] == pytest.approx(10 / 11)
    assert skipped == {"listeners_per_click_ratio": "no ad clicks", "cost_per_click_usd": "no ad clicks"}


@pytest.mark.parametrize(("audience", "growth", "reason"), [
    # per act the listeners move (400 -> 350 -> 300, 200 -> 250 -> 300), the sum stays 600
    (listeners("2025-01-10", 400, 200) + listeners("2025-01-20", 350, 250) + listeners("2025-01-29", 300, 300),
     0.0, "no listener growth in the campaign window"),
    (listeners("2025-01-05", 500, 300) + listeners("2025-02-10", 900, 600),
     None, "no audience rows in the campaign window 2025-01-10 to 2025-01-29"),
], ids=["flat", "no-rows-in-window"])
def test_zero_growth_skips_cpa_roi_and_profit(lab, bedrot_lake, audience, growth, reason):
    write_lake(bedrot_lake, audience=audience)
    _, metrics, skipped = finished(lab)
    for name in ("cpa_usd", "roi_pct", "profit_per_listener_usd"):
        assert skipped[name] == reason
    if growth is None:
        assert skipped["listener_growth"] == skipped["listeners_per_click_ratio"] == reason
    else:
        assert metrics["listener_growth"] == 0 and metrics["listeners_per_click_ratio"] == 0
    # LTV does not depend on the window: 60 / max listeners (600 flat, 1500) * 6
    assert metrics["ltv_usd"] == pytest.approx(60 / (600 if growth is not None else 1500) * 6)


@pytest.mark.parametrize("statement", [
    sale("2025-01", "Spotify", NIGHT_DRIVE, 0, 0.0) + sale("2025-01", "Apple Music", LOST_TAPE, 0, 0.0),
    "",
], ids=["zero-quantity", "header-only"])
def test_no_streams_skips_the_per_stream_rates(lab, bedrot_lake, statement):
    write_lake(bedrot_lake, statement=statement)
    _, metrics, skipped = finished(lab)
    assert metrics["streams"] == 0 and metrics["gross_revenue_usd"] == 0
    assert metrics["new_release_streams"] == metrics["back_catalog_streams"] == 0
    assert skipped["revenue_per_stream_usd"] == skipped["revenue_per_click_usd"] == "the statement has no streams"
    assert skipped["revenue_per_stream_spotify_usd"] == "no Spotify streams"
    assert skipped["revenue_per_stream_other_usd"] == "no Other streams"
    months = ("the statement covers a single sale month (0 days between the first and last)" if statement
              else "the statement has no sale months")
    assert skipped["daily_revenue_usd"] == skipped["payback_days"] == months
    # nothing earned: LTV 0, so ROI = (0 - 0.2) / 0.2 = -100 % and profit = -0.2
    assert metrics["ltv_usd"] == 0 and metrics["roi_pct"] == pytest.approx(-100.0)
    assert metrics["profit_per_listener_usd"] == pytest.approx(-0.2)


def test_a_month_without_data_counts_as_zero_in_the_span(lab, bedrot_lake):
    # January and March, nothing for February: 2025-01-01 .. 2025-03-01 = 31 + 28 = 59 days
    write_lake(bedrot_lake, statement=sale("2025-01", "Spotify", NIGHT_DRIVE, 1000, 2.95)
               + sale("2025-03", "Spotify", NIGHT_DRIVE, 1000, 2.95))
    run_id, metrics, _ = finished(lab)
    assert metrics["months_without_data"] == 1
    assert metrics["daily_revenue_usd"] == pytest.approx(0.1)  # 5.90 / 59
    assert metrics["payback_days"] == pytest.approx(40.0)      # 4.0 / 0.1
    by_month = table(lab, run_id, "monthly")
    assert [str(m)[:7] for m in by_month["sale_month"]] == ["2025-01", "2025-02", "2025-03"]
    assert list(by_month["streams"]) == [1000, 0, 1000] and list(by_month["has_data"]) == [True, False, True]


def test_unparsable_campaign_date_fails_naming_file_and_column(lab, bedrot_lake):
    write_lake(bedrot_lake, ads=ADS.replace("2025-01-15", "01/15/2025"))
    result = run_experiment(lab, "business-metrics")
    assert result.status == "FAILED"
    assert "metaads_campaigns_daily.csv: column 'first_seen_date'" in result.error
    assert "should be date (YYYY-MM-DD), but data row 2 has '01/15/2025'" in result.error


def test_specs_use_the_defaults_and_name_the_mode(lab):
    defaults = lab.experiment("business-metrics").validate({})
    gross = load_spec(REPO / "experiments" / "business-metrics.toml")
    royalty = load_spec(REPO / "experiments" / "business-metrics-royalty.toml")
    assert gross.experiment == royalty.experiment == "business-metrics"
    assert lab.experiment("business-metrics").validate(gross.params) == defaults
    assert lab.experiment("business-metrics").validate(royalty.params) == {**defaults, "royalty_adjusted": True}
    assert all(len(spec.methodology) > 200 for spec in (gross, royalty))


def test_on_the_sample_lake_both_modes_finish_with_positive_metrics(lab):
    from bedrot_lab.sample import write_sample

    write_sample(lab.settings)
    _, gross, _ = finished(lab)
    _, royalty, _ = finished(lab, royalty_adjusted=True)
    for name in ("ad_spend_usd", "ad_clicks", "listener_growth", "cpa_usd", "ltv_usd", "revenue_per_stream_usd",
                 "revenue_per_stream_spotify_usd", "revenue_per_stream_apple_usd", "payback_days"):
        assert gross[name] > 0 and royalty[name] > 0, name
    assert royalty["royalty_adjusted_revenue_usd"] < gross["gross_revenue_usd"] == pytest.approx(royalty["gross_revenue_usd"])
    assert 0 < royalty["retention_rate"] < 1 and royalty["tracks_not_in_catalog"] == 1


def test_a_track_spelled_several_ways_counts_once_under_its_most_common_spelling(lab, bedrot_lake):
    # one more sale of each track, spelled apart from the other two by case and inner spaces
    variants = (sale("2025-03", "Spotify", ("nova  vanta", "night drive"), 1000, 3.00)
                + sale("2025-03", "Spotify", ("NOVA VANTA", "Echo Park(feat.  Glass Orchid)"), 1000, 3.00)
                + sale("2025-03", "Spotify", (" Glass Orchid", "LOST  TAPE "), 1000, 3.00))
    write_lake(bedrot_lake, statement=STATEMENT + variants)
    run_id, metrics, _ = finished(lab, royalty_adjusted=True)
    # NIGHT DRIVE 27 + 3 = 30 (100%); ECHO PARK (21 + 3) x 0.6 = 14.4, matched in spite of the
    # spelling; LOST TAPE 12 + 3 = 15, not in the catalog (100%): 59.4 of 69 gross
    assert metrics["tracks"] == 3 and metrics["tracks_not_in_catalog"] == 1
    assert metrics["gross_revenue_usd"] == pytest.approx(69.0)
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(59.4)

    top = table(lab, run_id, "top_tracks")
    assert list(zip(top["Artist"], top["Title"])) == [
        NIGHT_DRIVE, LOST_TAPE, ECHO_PARK]
    assert list(top["earnings_usd"]) == pytest.approx([30.0, 15.0, 14.4])
    assert list(top["streams"]) == [12000, 3000, 8000]
    artists = table(lab, run_id, "artist_economics").set_index("Artist")
    assert sorted(artists.index) == ["GLASS ORCHID", "NOVA VANTA"]
    assert artists.loc["NOVA VANTA", ["gross_usd", "actual_usd"]].tolist() == pytest.approx([54.0, 44.4])
    report = Path(MlflowClient(lab.settings.tracking_uri).download_artifacts(run_id, "report.md")).read_text()
    assert "Not in the track catalog, kept at 100%: LOST TAPE (GLASS ORCHID)." in report


def test_a_track_is_spelled_as_most_rows_spell_it_and_a_month_of_zero_streams_has_data(lab, bedrot_lake):
    # NIGHT DRIVE: twice as "NIGHT DRIVE" (two months, two stores), three times as "Night Drive"
    # (one month and store); LOST TAPE's only April row has no streams and no earnings
    statement = (sale("2025-01", "Spotify", NIGHT_DRIVE, 1000, 3.00)
                 + sale("2025-02", "Apple Music", NIGHT_DRIVE, 500, 2.50)
                 + sale("2025-03", "Spotify", ("NOVA VANTA", "Night Drive"), 1000, 3.00) * 3
                 + sale("2025-04", "Spotify", LOST_TAPE, 0, 0.00))
    write_lake(bedrot_lake, statement=statement)
    run_id, metrics, _ = finished(lab, new_release_days=31)
    expected = {
        "streams": 4500, "gross_revenue_usd": 14.50,                           # 1000 + 500 + 3 x 1000; 3 + 2.5 + 3 x 3
        "tracks": 2, "months_without_data": 0,                                 # April has a row, of 0 streams
        "revenue_per_stream_spotify_usd": 0.003,                               # 12.00 / 4000
        "revenue_per_stream_apple_usd": 0.005,                                 # 2.50 / 500
        "daily_revenue_usd": 14.50 / 90,                                       # 2025-01-01 .. 2025-04-01: 31 + 28 + 31
        "new_release_streams": 3000, "new_release_revenue_usd": 9.00,          # cutoff 2025-04-01 - 31 d = 03-01
        "back_catalog_streams": 1500, "back_catalog_revenue_usd": 5.50,
    }
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    top = table(lab, run_id, "top_tracks")
    assert list(zip(top["Artist"], top["Title"])) == [("NOVA VANTA", "Night Drive"), LOST_TAPE]
    assert list(top["streams"]) == [4500, 0] and list(top["earnings_usd"]) == pytest.approx([14.50, 0.0])
    by_month = table(lab, run_id, "monthly")
    assert list(by_month["streams"]) == [1000, 500, 3000, 0] and by_month["has_data"].all()
