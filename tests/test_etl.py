"""The lake's ETL prototypes as experiments: distrokid-staging2curated and metaads-staging2curated.

Golden tests on hand-made staging files (expected values worked out by hand), and
the path of issue 4 end to end with a real registry on the sample lake: run,
register, promote, change the staging input, run, promote again, roll back; the
analyses keep running on what was promoted; a contract refuses a bad output.
"""

from __future__ import annotations

import hashlib
import shutil

import pytest
from conftest import REPO_PLUGINS
from mlflow import MlflowClient

from bedrot_lab.builtin.datasets import CATALOG
from bedrot_lab.config import settings_from
from bedrot_lab.contracts import DataView, contract_for
from bedrot_lab.lab import Lab
from bedrot_lab.lake import read_dataset
from bedrot_lab.promotion import PromotionError, promote, read_lineage, register, rollback
from bedrot_lab.sample import write_sample
from bedrot_lab.testing import read_run, run_experiment

DISTROKID, METAADS = "distrokid-staging2curated", "metaads-staging2curated"
PLUGINS = ("distrokid_staging2curated.py", "metaads_staging2curated.py", "revenue_per_stream.py",
           "streaming_trends.py")
BY_NAME = {dataset.name: dataset for dataset in CATALOG}

BANK = (
    "Reporting Date,Sale Month,Store,Artist,Title,ISRC,UPC,Quantity,Team Percentage,Song/Album,"
    "Country of Sale,Songwriter Royalties Withheld,Earnings (USD)\n"
    "2025-03-04,2025-01,Spotify,NOVA VANTA,NIGHT DRIVE,QZABC2400001,012345678905,1200,100,Song,US,0,3.71946\n"
    '2025-03-04,2025-01,Apple Music,NOVA VANTA,"NIGHT DRIVE, PT. 2",QZABC2400002,012345678905,80,100,Song,GB,0.0,0.54\n'
    "2025-02-11,2024-12,YouTube (Ads),GLASS ORCHID,SUNDIAL,QZABC2400003,012345678912,7,50,Song,US,0,-0.00021\n"
)
STREAMS_HEADER = "date,spotify_streams,apple_streams,combined_streams\n"
STREAMS = (
    STREAMS_HEADER
    + "2025-01-03,300,40,340\n"
    + "2025-01-01,100,,100\n"   # Apple missing: 0
    + "2025-01-02,200,25,999\n"  # combined is recomputed: 225
)
TIDY_HEADER = "date,spotify_streams,apple_streams,combined_streams,source\n"
CURRENT_TIDY = (
    TIDY_HEADER
    + "2025-01-01,90,9,99,distrokid\n"  # stale DistroKid row: replaced
    + "2025-01-02,10,1,11,toolost\n"
    + "2025-01-01,20,2,22,toolost\n"
)
EXPECTED_TIDY = (
    TIDY_HEADER
    + "2025-01-01,100,0,100,distrokid\n"
    + "2025-01-02,200,25,225,distrokid\n"
    + "2025-01-03,300,40,340,distrokid\n"
    + "2025-01-01,20,2,22,toolost\n"
    + "2025-01-02,10,1,11,toolost\n"
)

ADS_HEADER = ("date_start,date_end,ad_name,adset_name,results,reach,impressions,spend_usd,cost_per_result,"
              "quality_ranking,engagement_ranking,conversion_ranking\n")
ADS = (
    ADS_HEADER
    + "2025-01-01,2025-01-31,NIGHT DRIVE AD1 - 9x16 video,NOVA VANTA - NIGHT DRIVE - BROAD,10,800,1000,12.50,1.25,"
      "Average,Average,Average\n"
    + "2025-01-01,2025-01-31,NIGHT DRIVE AD2 - 1x1 static,NOVA VANTA - NIGHT DRIVE - INDIE,,300,500,2.50,,-,-,-\n"
    + "2025-01-01,2025-01-31,SUNDIAL AD3 - carousel,GLASS ORCHID - SUNDIAL - BROAD,30,2500,3000,30.00,1.0,"
      "Above average,Average,Average\n"
    + "2025-01-01,2025-01-31,TEST AD4,LO-FI TEST,0,0,0,0,0,-,-,-\n"
)
#: by spend; CPM = spend / impressions x 1000 (0 without impressions); blank results and cost 0
EXPECTED_ADS = (
    "campaign_name,adset_name,ad_name,spend_usd,impressions,reach,results,cpm,cost_per_result,"
    "quality_ranking,engagement_ranking,conversion_ranking\n"
    "GLASS ORCHID,GLASS ORCHID - SUNDIAL - BROAD,SUNDIAL AD3 - carousel,30.0,3000,2500,30,10.0,1.0,"
    "Above average,Average,Average\n"
    "NOVA VANTA,NOVA VANTA - NIGHT DRIVE - BROAD,NIGHT DRIVE AD1 - 9x16 video,12.5,1000,800,10,12.5,1.25,"
    "Average,Average,Average\n"
    "NOVA VANTA,NOVA VANTA - NIGHT DRIVE - INDIE,NIGHT DRIVE AD2 - 1x1 static,2.5,500,300,0,5.0,0.0,-,-,-\n"
    "LO-FI TEST,LO-FI TEST,TEST AD4,0.0,0,0,0,0.0,0.0,-,-,-\n"
)
#: NOVA VANTA: 12.50 + 2.50 = 15.00 USD, 1500 impressions -> CPM 10.00; 10 results -> 1.50 per result
EXPECTED_CAMPAIGNS = (
    "campaign_name,spend_usd,impressions,reach,results,ads,cpm,cost_per_result\n"
    "GLASS ORCHID,30.0,3000,2500,30,1,10.0,1.0\n"
    "NOVA VANTA,15.0,1500,1100,10,2,10.0,1.5\n"
    "LO-FI TEST,0.0,0,0,0,1,0.0,0.0\n"
)


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
def lab(bedrot_lake):
    for name in PLUGINS:
        shutil.copy(REPO_PLUGINS / name, bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def finished(lab, name: str, **params) -> str:
    result = run_experiment(lab, name, **params)
    assert result.status == "FINISHED", result.error
    return result.run_id


def output_bytes(lab, run_id: str, name: str) -> bytes:
    client = MlflowClient(lab.settings.tracking_uri)
    with open(client.download_artifacts(run_id, f"outputs/{name}.csv"), "rb") as handle:
        return handle.read()


def write(lake, relative: str, text: str) -> None:
    path = lake / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def input_digests(lab, run_id: str) -> dict[str, str]:
    run = read_run(run_id, lab)
    return {d.dataset.name: next(t.value for t in d.tags if t.key == "sha256") for d in run.inputs.dataset_inputs}


# -- distrokid-staging2curated: golden --------------------------------------------------


def test_distrokid_golden(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/dk_bank_details.csv", BANK)
    write(bedrot_lake, "3_staging/daily_streams_distrokid.csv", STREAMS)
    write(bedrot_lake, "4_curated/tidy_daily_streams.csv", CURRENT_TIDY)
    run_id = finished(lab, DISTROKID)

    # a byte copy: leading zeros, "0.0", a quoted comma and tiny negative earnings as staging has them
    assert output_bytes(lab, run_id, "dk_bank_details") == BANK.encode()
    assert output_bytes(lab, run_id, "tidy_daily_streams").decode() == EXPECTED_TIDY
    run = read_run(run_id, lab)
    assert run.data.metrics == pytest.approx({**run.data.metrics,
        "bank_rows_in": 3, "bank_rows_out": 3, "bank_byte_copy": 1,
        "streams_rows_in": 3, "streams_rows_out": 5, "streams_rows_kept": 2, "sources_kept": 1,
        "streams_days": 3, "streams_filled_zero": 1, "streams_combined_fixed": 1, "streams_duplicate_keys": 0,
    })
    tags = run.data.tags
    assert tags["streams.date_range"] == "2025-01-01..2025-01-03"
    assert tags["streams.sources_kept"] == "toolost"
    assert tags["bank.sale_months"] == "2024-12..2025-01"
    assert tags["bank.reporting_dates"] == "2025-02-11..2025-03-04"
    assert set(input_digests(lab, run_id)) == {"dk_bank_details_staging", "daily_streams_distrokid",
                                                "tidy_daily_streams"}
    client = MlflowClient(lab.settings.tracking_uri)
    with open(client.download_artifacts(run_id, "report.md")) as handle:
        report = handle.read()
    assert "toolost (2 rows)" in report and "1 missing stream counts were set to 0" in report


def test_distrokid_without_a_curated_file_or_other_sources(lab, bedrot_lake):
    # dates written with a time of day: read as dates, written back as YYYY-MM-DD, so no byte copy
    write(bedrot_lake, "3_staging/dk_bank_details.csv",
          BANK.replace("2025-02-11,2024-12", "2025-02-11 00:00:00,2024-12"))
    write(bedrot_lake, "3_staging/daily_streams_distrokid.csv", STREAMS)
    run_id = finished(lab, DISTROKID)
    assert output_bytes(lab, run_id, "dk_bank_details") == BANK.encode()
    assert read_run(run_id, lab).data.metrics["bank_byte_copy"] == 0
    distrokid_only = "".join(line for line in EXPECTED_TIDY.splitlines(keepends=True) if "toolost" not in line)
    assert output_bytes(lab, run_id, "tidy_daily_streams").decode() == distrokid_only
    assert "tidy_daily_streams" not in input_digests(lab, run_id)

    write(bedrot_lake, "4_curated/tidy_daily_streams.csv", CURRENT_TIDY)
    run_id = finished(lab, DISTROKID, keep_other_sources=False)
    assert output_bytes(lab, run_id, "tidy_daily_streams").decode() == distrokid_only
    metrics = read_run(run_id, lab).data.metrics
    assert (metrics["streams_rows_kept"], metrics["sources_kept"]) == (0, 0)


def test_distrokid_bad_staging_value_fails_naming_file_and_column(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/dk_bank_details.csv", BANK.replace(",1200,", ",12OO,"))
    write(bedrot_lake, "3_staging/daily_streams_distrokid.csv", STREAMS)
    result = run_experiment(lab, DISTROKID)
    assert result.status == "FAILED"
    assert "dk_bank_details.csv" in result.error and "'Quantity'" in result.error


# -- metaads-staging2curated: golden ----------------------------------------------------


def test_metaads_golden(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/metaads/metaads_staging_latest.csv", ADS)
    run_id = finished(lab, METAADS)
    assert output_bytes(lab, run_id, "metaads_ad_performance").decode() == EXPECTED_ADS
    assert output_bytes(lab, run_id, "metaads_campaign_summary").decode() == EXPECTED_CAMPAIGNS
    run = read_run(run_id, lab)
    assert run.data.metrics == pytest.approx({**run.data.metrics,
        "rows_in": 4, "ads_out": 4, "campaigns_out": 3, "ad_spend_usd": 45.0, "impressions": 4500,
        "reach": 3600, "results": 40, "cpm_usd": 10.0, "cost_per_result_usd": 1.125, "duplicate_ads": 0,
        "unknown_campaign_ads": 0,
    })
    assert run.data.tags["metaads.window"] == "2025-01-01..2025-01-31"


def test_metaads_campaign_parts(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/metaads/metaads_staging_latest.csv", ADS)
    run_id = finished(lab, METAADS, campaign_parts=2)
    summary = output_bytes(lab, run_id, "metaads_campaign_summary").decode().splitlines()
    assert [line.split(",")[0] for line in summary[1:]] == ["GLASS ORCHID - SUNDIAL", "NOVA VANTA - NIGHT DRIVE",
                                                            "LO-FI TEST"]


def test_metaads_outputs_have_contracts_from_the_catalog(lab):
    for path, key in (("metaads/campaign_summary_latest.csv", ("campaign_name",)),
                      ("metaads/ad_performance_latest.csv", ("adset_name", "ad_name"))):
        contract = contract_for(lab, path)
        assert contract is not None, path
        assert contract.unique == key and contract.not_null == key and contract.min_rows == 1
        assert contract.ranges["spend_usd"] == (0, None)


# -- contracts of the curated data sets the analyses read ---------------------------------


KEYS = {
    "tidy_daily_streams": ("source", "date"),
    "metaads_campaigns_daily": ("campaign_id",),
    "metaads_campaigns_performance_log": ("date", "campaign_id"),
    "spotify_audience": ("artist_name", "date"),
    "track_catalog": ("artist", "title"),
    "linktree_analytics": ("date",),
    "tiktok_analytics": ("artist", "date"),
}


@pytest.fixture(scope="module")
def sample_settings(tmp_path_factory):
    settings = settings_from(tmp_path_factory.mktemp("sample"), {}, None, env={})
    write_sample(settings)
    return settings


def test_curated_data_sets_declare_keys_and_min_rows():
    curated = {d.name: d for d in CATALOG if d.zone == "curated"}
    assert {name: d.key for name, d in curated.items() if d.key} == KEYS
    # no key for the statement: at benchmark scale the synthetic statement repeats its grain
    assert curated["dk_bank_details"].key == ()
    assert all(d.min_rows == 1 for d in curated.values())


@pytest.mark.parametrize("name", sorted(KEYS))
def test_the_sample_lake_satisfies_every_key(sample_settings, name):
    dataset = BY_NAME[name]
    frame = read_dataset(dataset, dataset.locate(sample_settings))
    assert len(frame) >= dataset.min_rows
    key = list(dataset.key)
    assert frame[key].notna().all().all(), name
    assert not frame.duplicated(key).any(), frame[frame.duplicated(key, keep=False)].head()


@pytest.mark.parametrize("name", [d.name for d in CATALOG if d.zone == "curated"])
def test_the_sample_lake_satisfies_every_whole_contract(sample_settings, name, bedrot_lab):
    from bedrot_lab.contracts import contract_from_dataset

    dataset = BY_NAME[name]
    contract = contract_from_dataset(dataset)
    assert contract.check(DataView(dataset.locate(sample_settings), "csv", contract)) == []


# -- the path of issue 4, end to end on the sample lake -----------------------------------


def test_register_promote_change_promote_again_and_roll_back(lab, bedrot_lake):
    write_sample(lab.settings)
    staging, curated = bedrot_lake / "3_staging", bedrot_lake / "4_curated"
    target = curated / "tidy_daily_streams.csv"
    never_promoted = target.read_bytes()
    client = MlflowClient(lab.settings.tracking_uri)
    name = "curated.tidy_daily_streams"

    first = finished(lab, DISTROKID)
    version = register(lab, first, "tidy_daily_streams", "tidy_daily_streams.csv")
    assert (version["name"], version["version"], version["rows"]) == (name, "1", "730")

    # the sample's file was never promoted: without lineage it is archived as "unknown", and the run goes on
    promoted = promote(lab, name)
    assert (promoted.status, promoted.version, promoted.replaced["version"]) == ("promote", "1", None)
    unknown = bedrot_lake / promoted.replaced["archived_to"]
    assert unknown.parent == bedrot_lake / "5_archive" / "curated" / "tidy_daily_streams.csv"
    assert unknown.name.endswith("-unknown.csv") and unknown.read_bytes() == never_promoted
    v1 = target.read_bytes()
    assert v1 == never_promoted  # the cleaner reproduces the sample's curated file byte for byte
    assert promote(lab, name).status == "already current"

    history = read_lineage(lab, "tidy_daily_streams.csv")
    assert [(e["action"], e["version"], e["run_id"]) for e in history] == [("promote", "1", first)]
    assert history[0]["sha256"] == sha256(v1) and history[0]["experiment"] == DISTROKID
    assert history[0]["replaced"]["sha256"] == sha256(never_promoted)
    staging_streams = (staging / "daily_streams_distrokid.csv").read_bytes()
    assert {i["name"]: i["sha256"] for i in history[0]["inputs"]} == {
        "dk_bank_details_staging": sha256((staging / "dk_bank_details.csv").read_bytes()),
        "daily_streams_distrokid": sha256(staging_streams),
        "tidy_daily_streams": sha256(never_promoted),
    }

    # DistroKid restates its last day
    changed = staging_streams.replace(b"\n2025-06-30,", b"\n2025-06-30,9")
    assert changed != staging_streams
    (staging / "daily_streams_distrokid.csv").write_bytes(changed)
    second = finished(lab, DISTROKID)
    assert register(lab, second, "tidy_daily_streams", "tidy_daily_streams.csv")["version"] == "2"
    again = promote(lab, name)
    assert (again.version, again.replaced["version"]) == ("2", "1")
    archived_v1 = bedrot_lake / again.replaced["archived_to"]
    assert archived_v1.name.endswith("-v1.csv") and archived_v1.read_bytes() == v1
    v2 = target.read_bytes()
    old_day = next(line for line in v1.decode().splitlines() if line.startswith("2025-06-30,"))
    spotify, apple = (int(x) for x in old_day.split(",")[1:3])
    new_spotify = int(f"9{spotify}")
    assert f"2025-06-30,{new_spotify},{apple},{new_spotify + apple},distrokid" in v2.decode()
    toolost = [line for line in v1.decode().splitlines() if line.endswith(",toolost")]
    assert [line for line in v2.decode().splitlines() if line.endswith(",toolost")] == toolost  # untouched
    inputs = {i["name"]: i["sha256"] for i in read_lineage(lab, "tidy_daily_streams.csv")[1]["inputs"]}
    assert inputs["daily_streams_distrokid"] == sha256(changed)
    assert inputs["tidy_daily_streams"] == sha256(v1)  # the second run read what the first promoted

    # the analyses run on what was promoted
    trends = finished(lab, "streaming-trends", source="daily")
    assert input_digests(lab, trends)["tidy_daily_streams"] == sha256(v2)
    finished(lab, "revenue-per-stream")

    back = rollback(lab, name)
    assert (back.status, back.version, back.replaced["version"]) == ("rollback", "1", "2")
    assert target.read_bytes() == v1
    assert (bedrot_lake / back.replaced["archived_to"]).read_bytes() == v2
    assert str(client.get_model_version_by_alias(name, "curated").version) == "1"
    history = read_lineage(lab, "tidy_daily_streams.csv")
    assert [(e["action"], e["version"], e["run_id"]) for e in history] == [
        ("promote", "1", first), ("promote", "2", second), ("rollback", "1", first)]
    archive = sorted(p.name.split("-", 1)[1] for p in unknown.parent.iterdir())
    assert archive == ["unknown.csv", "v1.csv", "v2.csv"]
    trends = finished(lab, "streaming-trends", source="daily")
    assert input_digests(lab, trends)["tidy_daily_streams"] == sha256(v1)


def test_the_promoted_statement_feeds_the_analyses(lab, bedrot_lake):
    write_sample(lab.settings)
    run_id = finished(lab, DISTROKID)
    register(lab, run_id, "dk_bank_details", "dk_bank_details.csv")
    promoted = promote(lab, "curated.dk_bank_details")
    statement = (bedrot_lake / "4_curated" / "dk_bank_details.csv").read_bytes()
    assert statement == (bedrot_lake / "3_staging" / "dk_bank_details.csv").read_bytes()
    assert promoted.replaced["version"] is None  # the sample's own copy, archived as unknown
    for analysis in ("revenue-per-stream", "streaming-trends"):
        assert input_digests(lab, finished(lab, analysis))["dk_bank_details"] == sha256(statement)


def test_meta_ads_outputs_promote_into_the_metaads_folder(lab, bedrot_lake):
    write_sample(lab.settings)
    run_id = finished(lab, METAADS)
    for output, path in (("metaads_campaign_summary", "metaads/campaign_summary_latest.csv"),
                         ("metaads_ad_performance", "metaads/ad_performance_latest.csv")):
        version = register(lab, run_id, output, path)
        result = promote(lab, version["name"])
        assert (result.status, result.replaced) == ("promote", None)
        assert (bedrot_lake / "4_curated" / path).read_bytes() == output_bytes(lab, run_id, output)
        assert read_lineage(lab, path)[0]["run_id"] == run_id
    summary = (bedrot_lake / "4_curated" / "metaads" / "campaign_summary_latest.csv").read_text().splitlines()
    assert summary[0] == "campaign_name,spend_usd,impressions,reach,results,ads,cpm,cost_per_result"
    assert {line.split(",")[0] for line in summary[1:]} == {"NOVA VANTA", "GLASS ORCHID"}


# -- contracts refuse bad outputs ------------------------------------------------------------


def test_a_duplicate_source_and_date_is_refused_naming_the_key(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/dk_bank_details.csv", BANK)
    write(bedrot_lake, "3_staging/daily_streams_distrokid.csv", STREAMS + "2025-01-02,201,25,226\n")
    write(bedrot_lake, "4_curated/tidy_daily_streams.csv", CURRENT_TIDY)
    run_id = finished(lab, DISTROKID)
    assert read_run(run_id, lab).data.metrics["streams_duplicate_keys"] == 1
    register(lab, run_id, "tidy_daily_streams", "tidy_daily_streams.csv")
    with pytest.raises(PromotionError) as refused:
        promote(lab, "curated.tidy_daily_streams")
    assert refused.value.problems == [
        "contract (data set 'tidy_daily_streams'): key (source, date) has 1 duplicate rows"]
    assert (bedrot_lake / "4_curated" / "tidy_daily_streams.csv").read_text() == CURRENT_TIDY
    assert read_lineage(lab, "tidy_daily_streams.csv") == []
    assert not list((bedrot_lake / "5_archive").rglob("*.csv"))


def test_an_empty_or_repeated_meta_ads_output_is_refused(lab, bedrot_lake):
    write(bedrot_lake, "3_staging/metaads/metaads_staging_latest.csv", ADS + ADS.splitlines(keepends=True)[1])
    run_id = finished(lab, METAADS)
    assert read_run(run_id, lab).data.metrics["duplicate_ads"] == 1
    register(lab, run_id, "metaads_ad_performance", "metaads/ad_performance_latest.csv")
    with pytest.raises(PromotionError) as refused:
        promote(lab, "curated.metaads.ad_performance_latest")
    assert refused.value.problems == [
        "contract (data set 'metaads_ad_performance'): key (adset_name, ad_name) has 1 duplicate rows"]

    write(bedrot_lake, "3_staging/metaads/metaads_staging_latest.csv", ADS_HEADER)
    run_id = finished(lab, METAADS)
    register(lab, run_id, "metaads_campaign_summary", "metaads/campaign_summary_latest.csv")
    with pytest.raises(PromotionError) as refused:
        promote(lab, "curated.metaads.campaign_summary_latest")
    assert ("contract (data set 'metaads_campaign_summary'): has 0 rows, fewer than the 1 required"
            in refused.value.problems)
    assert not list((bedrot_lake / "4_curated" / "metaads").glob("*"))  # (promote leaves the empty folder)
