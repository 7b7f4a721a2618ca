"""data-quality against hand-made files whose every expected count is worked out by hand."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import REPO_PLUGINS
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

# tidy_daily_streams declares date (date), spotify_streams, apple_streams, combined_streams (int,
# all with range [0, open)) and source (string). Data rows are numbered from 1 after the header.
STREAMS = """\
date,spotify_streams,apple_streams,combined_streams,source
2025-01-01,1,10,11,distrokid
2025-01-02,2,10,12,distrokid
2025-01-03,3,10,13,distrokid
2025-01-04,4,10,14,distrokid
2025-01-05,5,,5,distrokid
2025-01-06,6,NA,6,distrokid
2025-01-07,7,10,17,
2025-01-08,100,10,110,distrokid
2025-01-09,-3,10,7,toolost
2025-13-01,ten,10,10,toolost
2025-01-01,1,10,11,distrokid
"""
# row 5: apple empty, row 6: apple "NA" -> missing.apple_streams = 2 (first: row 5)
# row 7: source empty -> missing.source = 1 (a text column: only the empty value is missing)
# row 9: spotify -3 < 0 -> out_of_range.spotify_streams = 1
# row 10: date "2025-13-01" (no month 13) and spotify "ten" -> type_violations 1 each
# row 11 repeats row 1 -> duplicate_rows = 1; with key date,source also duplicate_keys = 1
#
# IQR, quartiles by linear interpolation (position p * (n - 1) in the sorted values):
# spotify_streams parsed: 1 2 3 4 5 6 7 100 -3 1 ("ten" is not a number), n = 10
#   sorted: -3 1 1 2 3 4 5 6 7 100
#   Q1 at 0.25 * 9 = 2.25 -> 1 + 0.25 * (2 - 1) = 1.25;  Q3 at 6.75 -> 5 + 0.75 * (6 - 5) = 5.75
#   IQR 4.5, fences 1.25 - 6.75 = -5.5 and 5.75 + 6.75 = 12.5 -> only 100 (row 8); -3 is inside
# apple_streams parsed: nine 10s -> IQR 0, fences [10, 10] -> no outlier
# combined_streams: 11 12 13 14 5 6 17 110 7 10 11, n = 11
#   sorted: 5 6 7 10 11 11 12 13 14 17 110
#   Q1 at 2.5 -> 7 + 0.5 * (10 - 7) = 8.5;  Q3 at 7.5 -> 13 + 0.5 * (14 - 13) = 13.5
#   IQR 5, fences 8.5 - 7.5 = 1 and 13.5 + 7.5 = 21 -> only 110 (row 8)


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "data_quality.py", bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def write(lake, name: str, text: str) -> None:
    (lake / "4_curated" / name).write_text(text)


def findings(lab, run_id: str) -> pd.DataFrame:
    client = MlflowClient(lab.settings.tracking_uri)
    return pd.read_parquet(client.download_artifacts(run_id, "tables/findings.parquet"))


def test_every_check_counts_what_was_planted(lab, bedrot_lake):
    write(bedrot_lake, "tidy_daily_streams.csv", STREAMS)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", key="date, source")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    expected = {
        "rows": 11, "columns": 5, "missing_columns": 0, "duplicate_rows": 1, "duplicate_keys": 1,
        "missing.date": 0, "missing.spotify_streams": 0, "missing.apple_streams": 2,
        "missing.combined_streams": 0, "missing.source": 1,
        "type_violations.date": 1, "type_violations.spotify_streams": 1, "type_violations.apple_streams": 0,
        "type_violations.combined_streams": 0,
        "out_of_range.spotify_streams": 1, "out_of_range.apple_streams": 0, "out_of_range.combined_streams": 0,
        "outliers.spotify_streams": 1, "outliers.apple_streams": 0, "outliers.combined_streams": 1,
        # 3 missing, 2 type violations, 1 out of range, 2 outliers
        "total.missing": 3, "total.type_violations": 2, "total.out_of_range": 1, "total.outliers": 2,
        # 2 missing + 2 type + 1 range + 2 outlier findings + duplicate rows + duplicate keys
        "findings": 9,
    }
    assert {k: metrics.get(k) for k in expected} == expected
    assert "type_violations.source" not in metrics  # text cannot violate its type

    table = findings(lab, result.run_id).set_index(["check", "column"])
    assert len(table) == 9
    assert table.loc[("missing", "apple_streams"), ["count", "example_row"]].tolist() == [2, 5]
    assert table.loc[("missing", "apple_streams"), "example_value"] == "(empty)"
    assert table.loc[("type_violations", "date"), ["example_row", "example_value"]].tolist() == [10, "2025-13-01"]
    assert table.loc[("type_violations", "spotify_streams"), "example_value"] == "ten"
    assert table.loc[("out_of_range", "spotify_streams"), ["example_row", "example_value"]].tolist() == [9, "-3"]
    assert table.loc[("outliers", "spotify_streams"), ["example_row", "example_value"]].tolist() == [8, "100"]
    assert "[-5.5, 12.5]" in table.loc[("outliers", "spotify_streams"), "detail"]
    assert "[1, 21]" in table.loc[("outliers", "combined_streams"), "detail"]
    duplicate = table.loc[("duplicate_rows", "(all columns)")]
    assert duplicate["example_row"] == 11 and duplicate["detail"] == "same as row 1"
    assert table.loc[("duplicate_keys", "date, source"), "example_row"] == 11

    client = MlflowClient(lab.settings.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert artifacts == {"figures/findings_by_column.png"}
    with open(client.download_artifacts(result.run_id, "report.md")) as handle:
        report = handle.read()
    assert "**9 findings.**" in report and "| outliers | spotify_streams | 1 |" in report


@pytest.mark.parametrize(("rule", "count", "row"), [
    ("spotify_streams > 6", 2, 7),       # 7 (row 7) and 100 (row 8)
    ("spotify_streams>=100", 1, 8),      # 100 only
    ("spotify_streams < 0", 1, 9),       # -3 only; "ten" is a type violation, not compared
    ("spotify_streams <= 1.5", 3, 1),    # 1 (row 1), -3 (row 9), 1 (row 11)
])
def test_a_threshold_rule_checks_its_column_only(lab, bedrot_lake, rule, count, row):
    write(bedrot_lake, "tidy_daily_streams.csv", STREAMS)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", outlier_rule=rule)
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["outliers.spotify_streams"] == count
    assert "outliers.combined_streams" not in metrics and "outliers.apple_streams" not in metrics
    assert findings(lab, result.run_id).set_index(["check", "column"]).loc[
        ("outliers", "spotify_streams"), "example_row"] == row


def test_a_wider_iqr_factor_keeps_the_outlier_out(lab, bedrot_lake):
    # spotify: Q3 + 25 * 4.5 = 5.75 + 112.5 = 118.25 > 100; combined: 13.5 + 25 * 5 = 138.5 > 110
    write(bedrot_lake, "tidy_daily_streams.csv", STREAMS)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", outlier_rule="iqr:25")
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["outliers.spotify_streams"] == 0 and metrics["outliers.combined_streams"] == 0


@pytest.mark.parametrize(("rule", "message"), [
    ("iqr:wide", "cannot read rule 'iqr:wide'"),
    ("spotify_streams >> 5", "cannot read rule 'spotify_streams >> 5'"),
    ("spotify_streams = 5", "cannot read rule 'spotify_streams = 5'"),
    ("__import__('os') > 1", "not a numeric column"),
    ("source > 1", "rule 'source > 1' names 'source', which is not a numeric column"),
])
def test_a_bad_rule_fails_naming_it(lab, bedrot_lake, rule, message):
    write(bedrot_lake, "tidy_daily_streams.csv", STREAMS)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", outlier_rule=rule)
    assert result.status == "FAILED"
    assert "ParamError" in result.error and "outlier_rule" in result.error and message in result.error


def test_a_missing_column_is_a_finding_not_a_crash(lab, bedrot_lake):
    # no apple_streams column; the three rows are otherwise clean
    write(bedrot_lake, "tidy_daily_streams.csv",
          "date,spotify_streams,combined_streams,source\n"
          "2025-01-01,1,1,distrokid\n2025-01-02,2,2,distrokid\n2025-01-03,3,3,toolost\n")
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams")
    assert result.status == "FINISHED", result.error
    stored = read_run(result.run_id, lab)
    assert stored.data.metrics["missing_columns"] == 1
    assert stored.data.metrics["findings"] == 1
    assert stored.data.metrics["rows"] == 3
    assert "missing.apple_streams" not in stored.data.metrics
    assert stored.data.tags["skipped.missing.apple_streams"] == "column 'apple_streams' is not in the file"
    assert "skipped.outliers.apple_streams" in stored.data.tags
    # 3 values are fewer than the 4 the quartiles need
    assert "at least 4" in stored.data.tags["skipped.outliers.spotify_streams"]
    table = findings(lab, result.run_id)
    assert table[["check", "column", "count"]].values.tolist() == [["missing_column", "apple_streams", 1]]


def test_unknown_data_set_fails_listing_the_known_ones(lab, bedrot_lake):
    result = run_experiment(lab, "data-quality", dataset="nope")
    assert result.status == "FAILED"
    assert "no data set named 'nope'" in result.error and "dk_bank_details" in result.error


def test_an_unknown_key_column_fails_naming_it(lab, bedrot_lake):
    write(bedrot_lake, "tidy_daily_streams.csv", STREAMS)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", key="date,day")
    assert result.status == "FAILED" and "'day' is not a declared column" in result.error


def test_type_rules_for_month_bool_and_float(lab, bedrot_lake):
    # metaads_campaigns_daily: is_currently_active bool, total_spend_usd float, first_seen_date date
    header = ("campaign_id,campaign_name,first_seen_date,last_seen_date,total_spend_usd,total_impressions,"
              "total_clicks,max_daily_reach,is_currently_active,data_source,api_version,avg_cpc,avg_ctr,"
              "total_days_active\n")
    rows = [
        "1,A,2025-01-01,2025-01-05,10.5,1000,10,900.0,true,x,v18.0,1.05,1.0,5\n",
        "2,B,2025-01-01,2025-01-05,1e1,1000,10,900.0,FALSE,x,v18.0,1.0,1.0,5\n",     # 1e1 is a float
        "3,C,2025-01,2025-01-05,$10,1000,10,900.0,yes,x,v18.0,1.0,1.0,5\n",          # 3 violations
        "4,D,2025-01-01,2025-01-05,NULL,1000,10,900.0,0,x,v18.0,1.0,150.0,0\n",      # NULL missing
    ]
    write(bedrot_lake, "metaads_campaigns_daily.csv", header + "".join(rows))
    result = run_experiment(lab, "data-quality", dataset="metaads_campaigns_daily")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["type_violations.first_seen_date"] == 1      # "2025-01" is a month, not a date
    assert metrics["type_violations.total_spend_usd"] == 1      # "$10"
    assert metrics["type_violations.is_currently_active"] == 1  # "yes"; true, FALSE and 0 are booleans
    assert metrics["missing.total_spend_usd"] == 1              # NULL
    assert metrics["out_of_range.avg_ctr"] == 1                 # 150 > 100 (a percentage)
    assert metrics["out_of_range.total_days_active"] == 1       # 0 < 1


def test_on_the_sample_lake_every_data_set_is_checked(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    write_sample(lab.settings)
    result = run_experiment(lab, "data-quality")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["rows"] == 4000 and metrics["missing_columns"] == 0
    assert metrics["total.type_violations"] == 0 and metrics["total.missing"] == 0
    assert "outliers.Earnings USD" in metrics  # "Earnings (USD)": MLflow takes no brackets in a name
    for name in lab.datasets:
        other = run_experiment(lab, "data-quality", dataset=name)
        assert other.status == "FINISHED", (name, other.error)


def test_a_parquet_data_set_of_a_plugin_is_checked_by_its_stored_types(lab, bedrot_lake, write_plugin):
    write_plugin("plays_catalog", """
        from bedrot_lab import Dataset, hookimpl

        @hookimpl
        def register_datasets(register):
            register(Dataset("plays", "plays.parquet", columns={"day": "date", "plays": "int", "share": "float",
                                                                 "label": "string", "rate": "float"},
                             ranges={"share": (0, 1)}))
        """)
    pd.DataFrame({
        "day": pd.to_datetime(["2025-01-01", "2025-01-02", None, "2025-01-04"]),
        "plays": [1.0, 2.5, 3.0, None],        # 2.5 is not a whole number; None is missing
        "share": [0.1, 0.2, 1.5, 0.3],         # 1.5 > 1
        "label": ["a", "b", "c", "d"],
        "rate": ["0.1", "x", "0.3", "0.4"],    # stored as text: "x" is not a number
    }).to_parquet(bedrot_lake / "4_curated" / "plays.parquet")
    result = run_experiment(Lab.open(bedrot_lake), "data-quality", dataset="plays", outlier_rule="share > 0.25")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["missing.day"] == 1 and metrics["missing.plays"] == 1
    assert metrics["type_violations.plays"] == 1 and metrics["type_violations.rate"] == 1
    assert metrics["out_of_range.share"] == 1
    assert metrics["outliers.share"] == 2  # 1.5 and 0.3
