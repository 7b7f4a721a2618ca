"""revenue-per-stream against a hand-made statement whose expected numbers are worked out by hand."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import REPO_PLUGINS
from conftest import STATEMENT_HEADER as HEADER
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment


def line(store: str, quantity: int, earnings: float) -> str:
    return f"2025-03-01,2025-01,{store},NOVA VANTA,NIGHT DRIVE,QZABC2400001,123456789012,{quantity},100,Song,US,0,{earnings}\n"


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "revenue_per_stream.py", bedrot_lake / "plugins")
    return Lab.open(bedrot_lake)


def write_statement(lake, *rows: str) -> None:
    (lake / "4_curated" / "dk_bank_details.csv").write_text(HEADER + "".join(rows))


def test_revenue_per_stream_by_platform(lab, bedrot_lake):
    write_statement(
        bedrot_lake,
        line("Spotify", 1000, 3.00),
        line("Spotify", 1000, 4.00),       # Spotify: 2000 streams, 7.00 USD -> 0.0035
        line("Apple Music", 100, 0.80),
        line("iTunes", 100, 1.20),         # Apple: 200 streams, 2.00 USD -> 0.01
        line("TikTok", 500, 0.50),
        line("YouTube (Ads)", 300, -0.10),  # Other: 800 streams, 0.40 USD -> 0.0005
        line("Pandora", 0, 0.0),           # a store with no streams: its own rate is undefined
    )
    result = run_experiment(lab, "revenue-per-stream")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["streams"] == 3000
    assert metrics["gross_revenue_usd"] == pytest.approx(9.40)
    assert metrics["revenue_per_stream_usd"] == pytest.approx(9.40 / 3000)
    assert metrics["revenue_per_stream_spotify_usd"] == pytest.approx(0.0035)
    assert metrics["revenue_per_stream_apple_usd"] == pytest.approx(0.01)
    assert metrics["revenue_per_stream_other_usd"] == pytest.approx(0.0005)
    assert metrics["stores"] == 6

    client = MlflowClient(lab.settings.tracking_uri)
    by_store = pd.read_parquet(client.download_artifacts(result.run_id, "tables/by_store.parquet"))
    assert list(by_store["Store"][:2]) == ["Spotify", "TikTok"]  # sorted by streams
    pandora = by_store.set_index("Store").loc["Pandora"]
    assert pandora["streams"] == 0 and pd.isna(pandora["earnings_per_stream"])
    assert by_store.set_index("Store").loc["iTunes", "earnings_per_1000_streams"] == pytest.approx(12.0)
    assert by_store.set_index("Store").loc["iTunes", "platform"] == "Apple"


def test_min_streams_filters_the_table_not_the_totals(lab, bedrot_lake):
    write_statement(bedrot_lake, line("Spotify", 1000, 3.0), line("Tencent", 5, 0.01))
    result = run_experiment(lab, "revenue-per-stream", min_streams=10)
    client = MlflowClient(lab.settings.tracking_uri)
    by_store = pd.read_parquet(client.download_artifacts(result.run_id, "tables/by_store.parquet"))
    assert list(by_store["Store"]) == ["Spotify"]
    assert read_run(result.run_id, lab).data.metrics["streams"] == 1005


def test_no_streams_at_all_skips_the_rates_with_a_reason(lab, bedrot_lake):
    write_statement(bedrot_lake, line("Spotify", 0, 0.0))
    result = run_experiment(lab, "revenue-per-stream")
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED"
    assert "revenue_per_stream_usd" not in stored.data.metrics
    assert stored.data.tags["skipped.revenue_per_stream_usd"] == "the statement has no streams"
    assert stored.data.tags["skipped.revenue_per_stream_spotify_usd"] == "no Spotify streams"


def test_text_in_a_number_column_fails_with_file_column_and_row(lab, bedrot_lake):
    write_statement(bedrot_lake, line("Spotify", 10, 0.03), line("Spotify", 10, 0.03).replace(",10,", ",ten,"))
    result = run_experiment(lab, "revenue-per-stream")
    assert result.status == "FAILED"
    assert "dk_bank_details.csv: column 'Quantity'" in result.error
    assert "'ten'" in result.error and "row 2" in result.error


def test_a_missing_column_fails_naming_it(lab, bedrot_lake):
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text("Store,Earnings (USD)\nSpotify,1.0\n")
    result = run_experiment(lab, "revenue-per-stream")
    assert result.status == "FAILED"
    assert "is missing column 'Quantity'" in result.error and "dk_bank_details.csv" in result.error


def test_on_the_sample_lake_spotify_apple_and_other_all_have_rates(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    write_sample(lab.settings)
    result = run_experiment(lab, "revenue-per-stream")
    metrics = read_run(result.run_id, lab).data.metrics
    assert result.status == "FINISHED"
    assert metrics["revenue_per_stream_apple_usd"] > metrics["revenue_per_stream_spotify_usd"] > 0
    assert metrics["revenue_per_stream_other_usd"] > 0


def test_stores_are_summed_before_the_filter_and_ties_are_listed_by_name(lab, bedrot_lake):
    write_statement(
        bedrot_lake,
        line("Deezer", 100, 0.50),
        line("Tencent", 4, 0.01),
        line("Spotify", 1000, 3.00),
        line("Tencent", 4, 0.01),
        line("Amazon", 300, 1.20),
        line("Deezer", 200, 0.40),
        line("Tencent", 4, 0.01),
        line("Napster", 9, 0.09),
    )
    result = run_experiment(lab, "revenue-per-stream", min_streams=10)
    assert result.status == "FINISHED", result.error
    client = MlflowClient(lab.settings.tracking_uri)
    by_store = pd.read_parquet(client.download_artifacts(result.run_id, "tables/by_store.parquet"))
    # Tencent: no row reaches 10 streams, its 3 rows together do (12); Napster's one row of 9 does not.
    # Deezer (100 + 200) ties Amazon (300): by name, though Deezer comes first in the file.
    assert list(by_store["Store"]) == ["Spotify", "Amazon", "Deezer", "Tencent"]
    assert list(by_store["streams"]) == [1000, 300, 300, 12]
    assert list(by_store["earnings_per_1000_streams"]) == pytest.approx([3.0, 4.0, 3.0, 2.5])  # 0.90 / 300, 0.03 / 12
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["streams"] == 1621 and metrics["stores"] == 5  # 1000 + 300 + 300 + 12 + 9
    assert metrics["gross_revenue_usd"] == pytest.approx(5.22)        # 3.00 + 1.20 + 0.90 + 0.03 + 0.09
    assert metrics["revenue_per_stream_other_usd"] == pytest.approx(2.22 / 621)  # every store but Spotify
