"""data-quality against hand-made files whose every expected count is worked out by hand."""

from __future__ import annotations

import importlib.util
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_PLUGINS
from mlflow import MlflowClient

from bedrot_lab.builtin.datasets import DK_BANK_COLUMNS
from bedrot_lab.lab import Lab
from bedrot_lab.lake import Dataset, read_text
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
    # a column's name in snake_case: "Earnings (USD)", "Country of Sale"
    assert "outliers.earnings_usd" in metrics and metrics["missing.country_of_sale"] == 0
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


# -- quoted line ends, a BOM and CRLF --------------------------------------------------------

# Data rows 1, 2 and 5 hold line ends in quoted values, so rows and lines differ from row 2 on.
QUOTED = (
    "\ufeffdate,spotify_streams,apple_streams,combined_streams,source\r\n"
    '2025-01-01,1,10,11,"distro\r\nkid"\r\n'          # row 1 (lines 2-3)
    '2025-01-02,2,10,12,"a ""quoted""\nvalue"\r\n'     # row 2 (lines 4-5)
    "2025-01-03,x3,10,13,distrokid\r\n"                 # row 3: spotify "x3" is no whole number
    '2025-01-04,4,,14,"two\r\nlines, and a comma"\r\n'  # row 4: apple is empty
    '2025-01-01,1,10,11,"distro\r\nkid"\r\n'          # row 5 repeats row 1
    "2025-01-06,6,10,16,\u3000\r\n"                    # row 6: source is only (ideographic) space
)


def test_row_numbers_count_data_rows_across_quoted_line_ends_a_bom_and_crlf(lab, bedrot_lake):
    write(bedrot_lake, "tidy_daily_streams.csv", QUOTED)
    result = run_experiment(lab, "data-quality", dataset="tidy_daily_streams", key="date,source")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["rows"] == 6 and metrics["missing_columns"] == 0
    assert metrics["type_violations.spotify_streams"] == 1 and metrics["missing.apple_streams"] == 1
    assert metrics["missing.source"] == 1 and metrics["duplicate_rows"] == 1 and metrics["duplicate_keys"] == 1
    table = findings(lab, result.run_id).set_index(["check", "column"])
    assert table.loc[("type_violations", "spotify_streams"), ["example_row", "example_value"]].tolist() == [3, "x3"]
    assert table.loc[("missing", "apple_streams"), ["example_row", "example_value"]].tolist() == [4, "(empty)"]
    assert table.loc[("missing", "source"), ["example_row", "example_value"]].tolist() == [6, "(empty)"]
    for check in ("duplicate_rows", "duplicate_keys"):
        duplicate = table.xs(check, level="check").iloc[0]
        assert duplicate["example_row"] == 5 and duplicate["detail"] == "same as row 1"
    assert table.loc[("duplicate_keys", "date, source"), "example_value"] == "date=2025-01-01, source=distro\r\nkid"


# -- DuckDB judges every value as pandas does ---------------------------------------------------

TRICKY = {
    "int": ["1", "+2", "-0", "007", " 3 ", "\u30004", "1.0", "1e3", "x", "", "NA", "nan", "\u0663", "\uff11",
            "9223372036854775808", "+12345678901234567890", "1_000", "-17", "120", "+0"],
    "float": ["1.5", "+1.5", ".5", "5.", "-inf", "Infinity", "NAN", "nan", "1e309", "+.5e-3", "1_0", "0x1",
              "\xa02.5\xa0", "4.9e-324", "1e", "1,5", "+inf", "0.30000000000000004", "+0.1234567890123456789", "-2"],
    "bool": ["true", "FALSE", "1", "0", "yes", " true ", "TRUE\u3000", "tru", "NULL"],
    "date": ["2024-02-29", "2023-02-29", "2024-2-01", "0000-01-01", "9999-12-31", "\uff12\uff10\uff12\uff14-01-01",
             "\u0662\u0660\u0662\u0664-01-01", "2024-13-01", "2024-01-01T00:00", " 2024-03-01 "],
    "month": ["2024-01", "2024-13", "2024-1", "\uff12\uff10\uff12\uff14-01", "0000-01", "2024-01-01", "n/a"],
    "datetime": ["2024-01-01", "2024-01-01T10:00:00", "2024-01-01 10:00", "20240101", "2024", "x",
                 "2024-01-01T25:00", "2024-01-01T10:00:00.5", "NaT"],
    "string": ["a", "", " ", "\u3000", "NA", "x y", "\u0085b\u0085"],
}


def load_plugin():
    spec = importlib.util.spec_from_file_location("data_quality_under_test", REPO_PLUGINS / "data_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def plain(checked) -> list:
    """A FileCheck as plain values that compare equal when alike (numbers by their repr, NaN too)."""
    def number(value):
        return repr(float(value)) if isinstance(value, float) else value  # numpy's float64 is a float
    columns = [(c.column, c.kind, {k: (f.count, f.row, f.value) for k, f in c.found.items()}, c.details,
                {k: number(v) for k, v in c.stats.items()}) for c in checked.columns]
    return [checked.rows, checked.header, columns, checked.duplicate_rows, checked.duplicate_keys]


@pytest.mark.parametrize(("rule", "key"), [("iqr:1.5", ["string"]), ("iqr:0", []), ("int >= 2", ["date", "int"]),
                                           ("float < 0.5", [])])
def test_duckdb_judges_every_value_as_pandas_does(tmp_path, rule, key):
    import csv

    import duckdb

    plugin = load_plugin()
    rng = random.Random(1)
    rows = [[rng.choice(TRICKY[kind]) for kind in TRICKY] for _ in range(400)]
    rows += [list(row) for row in rng.sample(rows, 20)]  # some duplicates
    with (tmp_path / "tricky.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([list(TRICKY), *rows])
    dataset = Dataset("tricky", "tricky.csv", columns={kind: kind for kind in TRICKY},
                      ranges={"int": (0, 100), "float": (None, 1e300)})
    parsed_rule = plugin.parse_rule(rule)
    in_pandas = plugin.checks_in_pandas(read_text(dataset, tmp_path / "tricky.csv"), dataset, parsed_rule, key)
    in_duckdb = plugin.CsvChecks(duckdb.connect(), dataset, tmp_path / "tricky.csv", list(TRICKY), parsed_rule,
                                 key).run()
    assert plain(in_duckdb) == plain(in_pandas)
    assert in_duckdb.columns[0].found["type_violations"].count > 0  # the values are tricky indeed


@pytest.mark.parametrize(("column", "key"), [
    ("Country of Sale", "country_of_sale"), ("Earnings (USD)", "earnings_usd"), ("ISRC", "isrc"),
    ("total_spend_usd", "total_spend_usd"), ("Café  Plays / Day", "cafe_plays_day"), ("???", "column"),
])
def test_a_column_becomes_a_lower_snake_case_word_of_the_metric_name(column, key):
    assert load_plugin().metric_key(column) == key


def test_columns_that_read_alike_get_keys_of_their_own(lab, bedrot_lake, write_plugin):
    write_plugin("plays", """
        from bedrot_lab import Dataset, hookimpl

        @hookimpl
        def register_datasets(register):
            register(Dataset("plays", "plays.csv", columns={"Sale Month": "month", "sale_month": "month"}))
    """)
    write(bedrot_lake, "plays.csv", "Sale Month,sale_month\n2025-01,2025-13\n")
    result = run_experiment(Lab.open(bedrot_lake), "data-quality", dataset="plays")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert (metrics["type_violations.sale_month"], metrics["type_violations.sale_month_1"]) == (0, 1)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf, in pandas too
def test_quartiles_are_those_pandas_interpolates():
    plugin = load_plugin()
    rng = random.Random(2)
    for count in (4, 5, 6, 7, 9, 10, 11, 101, 1002):
        numbers = pd.Series([rng.choice([rng.uniform(-1e6, 1e6), rng.random(), 3.0, float("inf")]) for _ in range(count)])
        ordered = sorted(numbers)
        expected = numbers.quantile([0.25, 0.75]).tolist()
        actual = [plugin.interpolate(ordered[below], ordered[above], weight)
                  for below, above, weight in plugin.quartile_neighbours(count).values()]
        assert [repr(x) for x in actual] == [repr(float(x)) for x in expected], count
        assert all(math.isnan(x) == math.isnan(y) for x, y in zip(actual, expected))


# -- memory: the statement's text is never held -------------------------------------------

MEMORY_SCRIPT = """
import re
import sys
from pathlib import Path

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

lab = Lab.open(Path(sys.argv[1]))
for name in sys.argv[2:]:
    result = run_experiment(lab, "data-quality", dataset=name)
    rows = read_run(result.run_id, lab).data.metrics["rows"] if result.status == "FINISHED" else result.error
    # this image's peak (run.peak_rss_mb, getrusage's, counts the parent's memory at the fork too)
    peak = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)
    print(result.status, rows, int(peak) / 1024, sep="\\t")
"""


def wide_statement(path: Path, rows: int) -> Path:
    """``rows`` distinct statement rows with titles of 800 characters, every tenth over two lines."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    rng = np.random.default_rng(rows)

    def pick(*values: str) -> pa.Array:
        return pc.take(pa.array(values), pa.array(rng.integers(0, len(values), rows)))

    number = pa.array(np.arange(rows)).cast(pa.string())
    live = pc.if_else(pa.array(np.arange(rows) % 10 == 0), "LIVE\n", "")
    columns = [pick("2025-03-11", "2025-04-11"), pick("2025-01", "2025-02"), pick("Spotify", "Apple Music", "TikTok"),
               pick("GLASS ORCHID", "NOVA VANTA"), pc.binary_join_element_wise(live, "TITLE ", number, "~" * 800, ""),
               pick("QZGO72300104"), pick("196871110105"), pa.array(rng.integers(0, 60, rows)).cast(pa.string()),
               pick("100"), pick("Song"), pick("US", "DE", "BR"), pick("0"),
               pa.array(rng.uniform(0, 0.05, rows)).cast(pa.string())]
    pacsv.write_csv(pa.table(columns, names=list(DK_BANK_COLUMNS)), path)
    return path


def test_a_large_statement_is_checked_without_holding_its_text(lab, bedrot_lake):
    """From a statement of 30,000 rows to one of 300,000 (some 250 MB more text, which the checks
    held several times over when they read it into pandas) the run's peak memory grows by a small
    part of that text: DuckDB keeps a few bytes of each row, not its text. Measured in a process of
    its own, where the first, smaller run has started everything a run starts."""
    small = wide_statement(bedrot_lake / "3_staging" / "dk_bank_details.csv", 30_000)
    large = wide_statement(bedrot_lake / "4_curated" / "dk_bank_details.csv", 300_000)
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(bedrot_lake), "dk_bank_details_staging",
                           "dk_bank_details"], capture_output=True, text=True, timeout=300, check=True)
    runs = [line.split("\t") for line in done.stdout.splitlines()]
    assert [(status, float(rows)) for status, rows, _ in runs] == [("FINISHED", 30_000), ("FINISHED", 300_000)], runs
    growth = float(runs[1][2]) - float(runs[0][2])
    more_text = (large.stat().st_size - small.stat().st_size) / 2**20
    assert growth < more_text / 3, f"{growth:.0f} MB more at peak for {more_text:.0f} MB more text"
