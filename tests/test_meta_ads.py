"""meta-ads against a hand-made Ads export and statement whose expected numbers are worked out by hand."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_PLUGINS, STATEMENT_HEADER
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

EXPORT_NAME = "BEDROT-ADS-Ads-Feb-10-2025-Mar-20-2025.csv"
EXPORT_HEADER = ("Reporting starts,Reporting ends,Ad name,Ad delivery,Ad Set Name,Bid,Bid type,Ad set budget,"
                 "Ad set budget type,Last significant edit,Attribution setting,Results,Result indicator,Reach,"
                 "Impressions,Cost per results,Quality ranking,Engagement rate ranking,Conversion rate ranking,"
                 "Amount spent (USD),Ends\n")
CATALOG_HEADER = "artist,title,your_revenue_share,isrc,upc,release_date,release_type,royalty_percentage\n"


def ad(name: str, adset: str, spend: str, impressions: int, reach: int, results: str | int) -> str:
    return (f'2025-02-10,2025-03-20,{name},active,{adset},0,ABSOLUTE_OCPM,5,Daily,0,'
            f'"7-day click, 1-day view, or 1-day engaged-view",{results},'
            f'actions:offsite_conversion.fb_pixel_view_content,{reach},{impressions},,Average,Average,Average,'
            f'{spend},Ongoing\n')


def sale(month: str, artist: str, title: str, earnings: float) -> str:
    return f"2025-06-05,{month},Spotify,{artist},{title},QZNV52500301,196871550309,100,100,Song,US,0,{earnings}\n"


#: spend 70.00, impressions 14000, reach 11300, results 30 (ad 3's blank Results count as 0)
GOLDEN_ADS = (
    ad("SUNDIAL AD1 - 9x16 video", "GLASS ORCHID - SUNDIAL - DREAM POP", "30.00", 6000, 5000, 12),
    ad("SUNDIAL AD2 - carousel", "GLASS ORCHID - SUNDIAL - BROAD", "10.00", 4000, 3000, 8),
    ad("VELVET DYNAMO AD3 - 1x1 static", "NOVA VANTA - VELVET DYNAMO - SYNTHWAVE", "20.00", 2000, 1500, ""),
    ad("Boosted post", "SPRING PROMO", "0.00", 0, 0, 0),
    ad("SUNDIAL AD1 - 4x5 video", "GLASS ORCHID - SUNDIAL - BROAD", "10.00", 2000, 1800, 10),
)
#: gross 5 + 20 + 40 + 10 + 15 = 90.00 over 2025-01..2025-04; PALE ORBIT is not in the catalog
GOLDEN_STATEMENT = (
    sale("2025-01", "NOVA VANTA", "VELVET DYNAMO", 5.00),
    sale("2025-02", "NOVA VANTA", "VELVET DYNAMO", 20.00),
    sale("2025-03", "GLASS ORCHID", "SUNDIAL", 40.00),
    sale("2025-03", "NOVA VANTA", "PALE ORBIT", 10.00),
    sale("2025-04", "GLASS ORCHID", "SUNDIAL", 15.00),
)
#: VELVET DYNAMO keeps 50 %, SUNDIAL 25 % (spelled differently from the statement on purpose)
GOLDEN_CATALOG = (
    "NOVA VANTA,VELVET DYNAMO,50,QZNV52500301,196871550309,2025-04-25,single,50\n",
    "glass orchid,Sundial ,25,QZGO72500421,196871500426,2025-03-21,single,25\n",
)


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "meta_ads.py", bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def write_lake(lake, ads=GOLDEN_ADS, statement=GOLDEN_STATEMENT, catalog=GOLDEN_CATALOG) -> None:
    (lake / "1_landing" / EXPORT_NAME).write_text(EXPORT_HEADER + "".join(ads))
    (lake / "4_curated" / "dk_bank_details.csv").write_text(STATEMENT_HEADER + "".join(statement))
    (lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(CATALOG_HEADER + "".join(catalog))


def table(lab, run_id: str, name: str) -> pd.DataFrame:
    client = MlflowClient(lab.settings.tracking_uri)
    return pd.read_parquet(client.download_artifacts(run_id, f"tables/{name}.parquet"))


def test_totals_ratios_campaigns_and_creatives(lab, bedrot_lake):
    write_lake(bedrot_lake)
    result = run_experiment(lab, "meta-ads", top_n=2)
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["ad_spend_usd"] == pytest.approx(70.0)       # 30 + 10 + 20 + 0 + 10
    assert metrics["impressions"] == 14000                   # 6000 + 4000 + 2000 + 0 + 2000
    assert metrics["reach"] == 11300                         # 5000 + 3000 + 1500 + 0 + 1800
    assert metrics["results"] == 30                          # 12 + 8 + blank(0) + 0 + 10
    assert metrics["ads"] == 5
    assert metrics["campaigns"] == 3                               # GLASS ORCHID, NOVA VANTA, SPRING PROMO
    assert metrics["creatives"] == 3                               # AD1, AD2, AD3 ("unknown" not counted)
    assert metrics["cpm_usd"] == pytest.approx(5.0)                # 70 / 14000 * 1000
    assert metrics["cost_per_result_usd"] == pytest.approx(7 / 3)  # 70 / 30
    assert metrics["results_per_usd"] == pytest.approx(3 / 7)        # 30 / 70

    campaigns = table(lab, result.run_id, "campaigns").set_index("campaign")
    assert list(campaigns.index) == ["GLASS ORCHID", "NOVA VANTA", "SPRING PROMO"]  # by spend
    glass = campaigns.loc["GLASS ORCHID"]                          # ads 1, 2 and 5
    assert (glass["ads"], glass["spend_usd"], glass["impressions"], glass["reach"], glass["results"]) == (
        3, pytest.approx(50.0), 12000, 9800, 30)
    assert glass["cpm_usd"] == pytest.approx(50 / 12000 * 1000)    # 4.1667
    assert glass["cost_per_result_usd"] == pytest.approx(50 / 30)  # 1.6667
    assert glass["results_per_usd"] == pytest.approx(0.6)            # 30 / 50
    nova = campaigns.loc["NOVA VANTA"]
    assert nova["cpm_usd"] == pytest.approx(10.0)                  # 20 / 2000 * 1000
    assert pd.isna(nova["cost_per_result_usd"]) and nova["results_per_usd"] == 0  # no results: 0 / 20
    promo = campaigns.loc["SPRING PROMO"]                          # no " - ": the whole ad set name
    assert pd.isna(promo["cpm_usd"]) and pd.isna(promo["cost_per_result_usd"]) and pd.isna(promo["results_per_usd"])

    creatives = table(lab, result.run_id, "creatives").set_index("creative")
    assert set(creatives.index) == {"AD1", "AD2", "AD3", "unknown"}
    assert creatives.loc["AD1", "ads"] == 2                        # ads 1 and 5
    assert creatives.loc["AD1", "spend_usd"] == pytest.approx(40.0)  # 30 + 10
    assert creatives.loc["AD1", "results"] == 22                   # 12 + 10
    assert creatives.loc["AD1", "results_per_usd"] == pytest.approx(0.55)  # 22 / 40
    assert creatives.loc["AD2", "results_per_usd"] == pytest.approx(0.8)   # 8 / 10
    assert creatives.loc["unknown", "spend_usd"] == 0

    # ranked by results per USD; NaN (no spend) and "unknown" are never ranked
    assert list(table(lab, result.run_id, "top_creatives")["creative"]) == ["AD2", "AD1"]  # 0.8, 0.55
    assert list(table(lab, result.run_id, "top_campaigns")["campaign"]) == ["GLASS ORCHID", "NOVA VANTA"]  # 0.6, 0

    artifacts = {a.path for a in MlflowClient(lab.settings.tracking_uri).list_artifacts(result.run_id, "figures")}
    assert artifacts == {"figures/spend_by_campaign.png", "figures/top_creatives.png", "figures/spend_vs_revenue.png"}


def test_roi_and_roas_against_the_whole_statement(lab, bedrot_lake):
    write_lake(bedrot_lake)
    result = run_experiment(lab, "meta-ads")
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    metrics = stored.data.metrics
    assert metrics["gross_revenue_usd"] == pytest.approx(90.0)      # 5 + 20 + 40 + 10 + 15
    # 5 * 0.5 + 20 * 0.5 + 40 * 0.25 + 10 * 1.0 (not in catalog: default 100 %) + 15 * 0.25
    # = 2.5 + 10 + 10 + 10 + 3.75
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(36.25)
    assert metrics["revenue_months"] == 4
    assert metrics["tracks_not_in_catalog"] == 1                   # NOVA VANTA / PALE ORBIT
    assert metrics["roi_gross_pct"] == pytest.approx(20 / 70 * 100)  # (90 - 70) / 70 * 100 = 28.571
    assert metrics["roas_gross_ratio"] == pytest.approx(90 / 70)           # 1.2857
    assert metrics["roi_royalty_adjusted_pct"] == pytest.approx(-33.75 / 70 * 100)  # (36.25 - 70) / 70 * 100 = -48.214
    assert metrics["roas_royalty_adjusted_ratio"] == pytest.approx(36.25 / 70)            # 0.5179
    report = MlflowClient(lab.settings.tracking_uri).download_artifacts(result.run_id, "report.md")
    assert "NOVA VANTA / PALE ORBIT" in Path(report).read_text()


def test_campaign_window_counts_only_overlapping_sale_months(lab, bedrot_lake):
    write_lake(bedrot_lake)  # window 2025-02-10..2025-03-20 overlaps sale months 2025-02 and 2025-03 only
    result = run_experiment(lab, "meta-ads", revenue_window="campaign")
    metrics = read_run(result.run_id, lab).data.metrics
    assert result.status == "FINISHED", result.error
    assert metrics["revenue_months"] == 2
    assert metrics["gross_revenue_usd"] == pytest.approx(70.0)             # 20 + 40 + 10
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(30.0)  # 20 * 0.5 + 40 * 0.25 + 10 * 1.0
    assert metrics["roi_gross_pct"] == pytest.approx(0.0)                  # (70 - 70) / 70 * 100
    assert metrics["roas_gross_ratio"] == pytest.approx(1.0)
    assert metrics["roi_royalty_adjusted_pct"] == pytest.approx(-40 / 70 * 100)  # (30 - 70) / 70 * 100 = -57.143
    assert metrics["roas_royalty_adjusted_ratio"] == pytest.approx(30 / 70)


def test_a_track_missing_from_the_catalog_keeps_the_default_share(lab, bedrot_lake):
    write_lake(bedrot_lake)
    result = run_experiment(lab, "meta-ads", default_share=50)
    metrics = read_run(result.run_id, lab).data.metrics
    # PALE ORBIT now counts 10 * 0.5 = 5 instead of 10: 36.25 - 10 + 5 = 31.25
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(31.25)
    assert metrics["roi_royalty_adjusted_pct"] == pytest.approx(-38.75 / 70 * 100)  # (31.25 - 70) / 70 * 100 = -55.357
    assert metrics["gross_revenue_usd"] == pytest.approx(90.0)                      # gross is untouched


def test_zero_spend_impressions_and_results_skip_the_ratios_with_reasons(lab, bedrot_lake):
    write_lake(bedrot_lake, ads=(ad("DRAFT AD7 - video", "NOVA VANTA - DRAFT", "0.00", 0, 0, ""),
                                 ad("DRAFT AD8 - video", "NOVA VANTA - DRAFT", "0", 0, 0, 0)))
    result = run_experiment(lab, "meta-ads")
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    metrics, tags = stored.data.metrics, stored.data.tags
    assert metrics["ad_spend_usd"] == 0 and metrics["ads"] == 2 and metrics["gross_revenue_usd"] == 90
    for name in ("cpm_usd", "cost_per_result_usd", "results_per_usd", "roi_gross_pct", "roas_gross_ratio",
                 "roi_royalty_adjusted_pct", "roas_royalty_adjusted_ratio"):
        assert name not in metrics
    assert tags["skipped.cpm_usd"] == "the export has no impressions"
    assert tags["skipped.cost_per_result_usd"] == "the export has no results"
    assert tags["skipped.results_per_usd"] == "the export has no spend"
    assert tags["skipped.roi_gross_pct"] == "no ad spend to return on"
    assert tags["skipped.roas_royalty_adjusted_ratio"] == "no ad spend to return on"
    assert table(lab, result.run_id, "top_creatives").empty  # nothing has a defined effectiveness


def test_spend_without_impressions_results_or_revenue(lab, bedrot_lake):
    write_lake(bedrot_lake, ads=(ad("SUNDIAL AD1 - video", "GLASS ORCHID - SUNDIAL", "12.50", 0, 0, 0),),
               statement=(sale("2025-02", "GLASS ORCHID", "SUNDIAL", 0.0),))
    result = run_experiment(lab, "meta-ads")
    stored = read_run(result.run_id, lab)
    metrics = stored.data.metrics
    assert result.status == "FINISHED", result.error
    assert metrics["results_per_usd"] == 0                              # 0 results / 12.50
    assert metrics["roi_gross_pct"] == pytest.approx(-100.0)          # (0 - 12.5) / 12.5 * 100
    assert metrics["roas_gross_ratio"] == 0 and metrics["roas_royalty_adjusted_ratio"] == 0
    assert "cpm_usd" not in metrics and "cost_per_result_usd" not in metrics
    assert stored.data.tags["skipped.cost_per_result_usd"] == "the export has no results"


def test_text_in_amount_spent_fails_naming_file_and_column(lab, bedrot_lake):
    write_lake(bedrot_lake, ads=(GOLDEN_ADS[0], ad("SUNDIAL AD2 - carousel", "GLASS ORCHID - X", "twelve", 10, 9, 1)))
    result = run_experiment(lab, "meta-ads")
    assert result.status == "FAILED"
    assert EXPORT_NAME in result.error and "column 'Amount spent (USD)'" in result.error
    assert "'twelve'" in result.error


def test_negative_spend_fails_naming_file_column_and_row(lab, bedrot_lake):
    write_lake(bedrot_lake, ads=(GOLDEN_ADS[0], ad("SUNDIAL AD2 - carousel", "GLASS ORCHID - X", "-5.00", 10, 9, 1)))
    result = run_experiment(lab, "meta-ads")
    assert result.status == "FAILED"
    assert EXPORT_NAME in result.error
    assert "column 'Amount spent (USD)' should be 0 or more, but data row 2 has -5" in result.error


def test_campaign_and_creative_parsing():
    spec = importlib.util.spec_from_file_location("meta_ads_under_test", REPO_PLUGINS / "meta_ads.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    adsets = pd.Series(["NOVA VANTA - STATIC HEARTS - BROAD", "LO-FI - BROAD", "  SPRING PROMO  ", "", " - X"],
                       dtype="string")
    assert list(module.campaign_label(adsets)) == ["NOVA VANTA", "LO-FI", "SPRING PROMO", "unknown", "unknown"]
    names = pd.Series(["STATIC HEARTS AD12 - 9x16", "Boosted post", "AD3 vs AD4", "ad5 lower case"], dtype="string")
    assert list(module.creative_code(names)) == ["AD12", "unknown", "AD3", "unknown"]


def test_on_the_sample_lake_every_number_is_positive(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    write_sample(lab.settings)
    result = run_experiment(lab, "meta-ads", revenue_window="campaign")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    for name in ("ad_spend_usd", "impressions", "reach", "results", "ads", "cpm_usd",
                 "cost_per_result_usd", "results_per_usd", "roas_gross_ratio", "roas_royalty_adjusted_ratio"):
        assert metrics[name] > 0, name
    assert metrics["impressions"] >= metrics["reach"]
    assert metrics["gross_revenue_usd"] > metrics["royalty_adjusted_revenue_usd"] > 0  # the sample has splits < 100 %
    assert metrics["campaigns"] >= 1 and metrics["creatives"] >= 1


def test_a_track_spelled_two_ways_is_one_track_missing_from_the_catalog(lab, bedrot_lake):
    write_lake(bedrot_lake, statement=(*GOLDEN_STATEMENT, sale("2025-04", "Nova  Vanta", "pale orbit ", 2.00)))
    result = run_experiment(lab, "meta-ads")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["tracks_not_in_catalog"] == 1
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(36.25 + 2.00)
    report = Path(MlflowClient(lab.settings.tracking_uri).download_artifacts(result.run_id, "report.md")).read_text()
    assert "Tracks missing from the catalog (1)" in report and "NOVA VANTA / PALE ORBIT." in report


def test_a_track_is_spelled_as_most_rows_spell_it_not_most_sale_months(lab, bedrot_lake):
    # PALE ORBIT: as "PALE ORBIT" in two sale months (the golden 2025-03 row and one of 1.00 in 2025-04),
    # as "Pale Orbit" in three rows of one, 2025-02 (1.00 each); ECHO, last and earning nothing, is missing too
    write_lake(bedrot_lake, statement=(*GOLDEN_STATEMENT, sale("2025-04", "NOVA VANTA", "PALE ORBIT", 1.00),
                                       *[sale("2025-02", "NOVA VANTA", "Pale Orbit", 1.00)] * 3,
                                       sale("2025-02", "GLASS ORCHID", "ECHO", 0.00)))
    result = run_experiment(lab, "meta-ads", revenue_window="campaign")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    # sale months 2025-02 and 2025-03: VELVET DYNAMO 20 (50 %), SUNDIAL 40 (25 %), PALE ORBIT 10 + 3 x 1 (100 %)
    assert metrics["revenue_months"] == 2
    assert metrics["gross_revenue_usd"] == pytest.approx(73.0)              # 20 + 40 + 13
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(33.0)   # 10 + 10 + 13
    assert metrics["tracks_not_in_catalog"] == 2
    report = Path(MlflowClient(lab.settings.tracking_uri).download_artifacts(result.run_id, "report.md")).read_text()
    assert "Tracks missing from the catalog (2)" in report
    assert "of their earnings: GLASS ORCHID / ECHO, NOVA VANTA / Pale Orbit." in report  # by artist and title
