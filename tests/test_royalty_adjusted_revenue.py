"""royalty-adjusted-revenue against a hand-made statement and catalog, numbers worked out by hand."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import REPO_PLUGINS
from conftest import STATEMENT_HEADER as HEADER
from mlflow import MlflowClient

from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run, run_experiment

CATALOG = """artist,title,your_revenue_share,isrc,upc,release_date,release_type,royalty_percentage
NOVA VANTA,NIGHT DRIVE,100,,,,single,100
 glass orchid ,mirror fever (feat. sable echo),40,,,,single,100
NOVA VANTA,HOLLOW SKYLINE (feat. GLASS ORCHID),50,,,,single,100
"""


def line(month, store, artist, title, quantity, earnings):
    return f"2025-05-01,{month},{store},{artist},{title},QZ0000000001,123456789012,{quantity},100,Song,US,0,{earnings}\n"


STATEMENT = [
    line("2025-01", "Spotify", "NOVA VANTA", "NIGHT DRIVE", 1000, 4.00),
    line("2025-03", "Apple Music", "NOVA VANTA", "NIGHT DRIVE", 100, 1.00),
    line("2025-01", "Spotify", "GLASS ORCHID", "MIRROR FEVER (feat. SABLE ECHO)", 500, 2.00),  # 40% kept
    line("2025-03", "Spotify", "NOVA VANTA", "HOLLOW SKYLINE (feat. GLASS ORCHID)", 200, 1.00),  # 50% kept
    line("2025-01", "TikTok", "GLASS ORCHID", "PALE ORBIT", 300, 0.30),  # not in the catalog
]


@pytest.fixture
def lab(bedrot_lake):
    shutil.copy(REPO_PLUGINS / "royalty_adjusted_revenue.py", bedrot_lake / "plugins")
    (bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(CATALOG)
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(HEADER + "".join(STATEMENT))
    return Lab.open(bedrot_lake)


def table(lab, run_id, name):
    return pd.read_parquet(MlflowClient(lab.settings.tracking_uri).download_artifacts(run_id, f"tables/{name}.parquet"))


def test_gross_actual_and_royalties_by_artist_track_month_and_platform(lab):
    result = run_experiment(lab, "royalty-adjusted-revenue")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    # gross 4 + 1 + 2 + 1 + 0.30 = 8.30; kept 4 + 1 + 0.4 x 2 + 0.5 x 1 + 0.30 = 6.60
    assert metrics["gross_revenue_usd"] == pytest.approx(8.30)
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(6.60)
    assert metrics["royalties_paid_usd"] == pytest.approx(1.70)
    assert metrics["retention_rate"] == pytest.approx(6.60 / 8.30)
    assert metrics["streams"] == 2100
    assert (metrics["tracks"], metrics["tracks_with_splits"], metrics["tracks_not_in_catalog"]) == (4, 2, 1)

    artists = table(lab, result.run_id, "by_artist").set_index("Artist")
    # NOVA VANTA: 4 + 1 + 1 gross, 4 + 1 + 0.5 kept; GLASS ORCHID: 2 + 0.3 gross, 0.8 + 0.3 kept
    assert artists.loc["NOVA VANTA", ["gross_usd", "actual_usd", "streams"]].tolist() == pytest.approx([6.0, 5.5, 1300])
    assert artists.loc["GLASS ORCHID", ["gross_usd", "actual_usd", "streams"]].tolist() == pytest.approx([2.3, 1.1, 800])

    months = table(lab, result.run_id, "by_month")
    assert months["Sale Month"].dt.strftime("%Y-%m").tolist() == ["2025-01", "2025-02", "2025-03"]
    # 2025-01: 4 + 2 + 0.3 gross, 4 + 0.8 + 0.3 kept; 2025-02 has no data; 2025-03: 1 + 1 gross, 1 + 0.5 kept
    assert months["gross_usd"].tolist() == pytest.approx([6.3, 0.0, 2.0])
    assert months["actual_usd"].tolist() == pytest.approx([5.1, 0.0, 1.5])
    assert months["streams"].tolist() == [1800, 0, 300]

    platforms = table(lab, result.run_id, "by_platform").set_index("Store")
    assert platforms.loc["Spotify", ["gross_usd", "actual_usd"]].tolist() == pytest.approx([7.0, 5.3])
    assert platforms.loc["TikTok", "royalties_paid_usd"] == pytest.approx(0.0)

    splits = table(lab, result.run_id, "tracks_with_splits")
    assert sorted(zip(splits["Title"], splits["share"])) == [
        ("HOLLOW SKYLINE (feat. GLASS ORCHID)", 0.5), ("MIRROR FEVER (feat. SABLE ECHO)", 0.4)]
    tracks = table(lab, result.run_id, "by_track").set_index("Title")
    assert tracks.loc["MIRROR FEVER (feat. SABLE ECHO)", "royalties_paid_usd"] == pytest.approx(1.2)


def test_tracks_missing_from_the_catalog_keep_the_default_share(lab):
    result = run_experiment(lab, "royalty-adjusted-revenue", default_share=80)
    # PALE ORBIT keeps 80% of 0.30 = 0.24 instead of 0.30: 6.60 - 0.30 + 0.24
    assert read_run(result.run_id, lab).data.metrics["royalty_adjusted_revenue_usd"] == pytest.approx(6.54)


def test_zero_gross_skips_the_retention_rate(lab, bedrot_lake):
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(
        HEADER + line("2025-01", "Spotify", "NOVA VANTA", "NIGHT DRIVE", 10, 0.0))
    result = run_experiment(lab, "royalty-adjusted-revenue")
    stored = read_run(result.run_id, lab)
    assert result.status == "FINISHED"
    assert "retention_rate" not in stored.data.metrics
    assert stored.data.tags["skipped.retention_rate"] == "gross revenue is zero"


def test_a_statement_without_rows_gives_empty_tables_and_zero_totals(lab, bedrot_lake):
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(HEADER)
    result = run_experiment(lab, "royalty-adjusted-revenue")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    assert (metrics["gross_revenue_usd"], metrics["streams"], metrics["tracks"]) == (0, 0, 0)


def test_bad_statement_fails_naming_file_column_and_row(lab, bedrot_lake):
    bad = [*STATEMENT[:2], line("2025-01", "Spotify", "NOVA VANTA", "NIGHT DRIVE", 1, "12 cents")]
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(HEADER + "".join(bad))
    result = run_experiment(lab, "royalty-adjusted-revenue")
    assert result.status == "FAILED"
    assert "dk_bank_details.csv: column 'Earnings (USD)'" in result.error and "'12 cents'" in result.error
    assert "data row 3" in result.error


def test_same_numbers_as_the_row_by_row_original_on_the_sample_lake(lab, bedrot_lake):
    from bedrot_lab.sample import write_sample

    for name in ("dk_bank_details.csv", "track_catalog_royalty_splits.csv"):
        (bedrot_lake / "4_curated" / name).unlink()
    write_sample(lab.settings)
    result = run_experiment(lab, "royalty-adjusted-revenue")
    statement = pd.read_csv(bedrot_lake / "4_curated" / "dk_bank_details.csv")
    catalog = pd.read_csv(bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv")
    shares = {(a.strip().upper(), t.strip().upper()): s / 100 for a, t, s in
              zip(catalog["artist"], catalog["title"], catalog["your_revenue_share"])}
    # the lake's original approach, row by row: an independent check of the streamed computation
    actual = statement.apply(lambda r: r["Earnings (USD)"] * shares.get((r["Artist"].upper(), r["Title"].upper()), 1.0),
                             axis=1).sum()
    assert read_run(result.run_id, lab).data.metrics["royalty_adjusted_revenue_usd"] == pytest.approx(actual)


def test_a_track_spelled_several_ways_is_one_track_shown_as_most_rows_spell_it(lab, bedrot_lake):
    # The catalog spells HOLLOW SKYLINE with inner spaces and none before "(": it must still match.
    (bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(CATALOG.replace(
        "NOVA VANTA,HOLLOW SKYLINE (feat. GLASS ORCHID)", "nova  vanta,hollow  skyline(feat. glass orchid)"))
    variants = [
        line("2025-03", "Spotify", "GLASS ORCHID", "MIRROR FEVER (feat. SABLE ECHO)", 100, 1.00),
        line("2025-03", "Apple Music", "Glass Orchid", "Mirror Fever (feat. Sable Echo)", 100, 1.00),
        line("2025-03", "TikTok", " glass  orchid ", "MIRROR FEVER ( feat.  SABLE ECHO )", 100, 1.00),
        line("2025-01", "Spotify", "GLASS ORCHID", "GLASS/GAMMA", 10, 0.10),
        line("2025-03", "Spotify", "GLASS ORCHID", "GLASS/GAMMA", 10, 0.10),
        line("2025-03", "Apple Music", "glass orchid", "glass /gamma", 10, 0.10),
    ]
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(HEADER + "".join(STATEMENT + variants))
    result = run_experiment(lab, "royalty-adjusted-revenue")
    assert result.status == "FINISHED", result.error
    metrics = read_run(result.run_id, lab).data.metrics
    # NIGHT DRIVE, MIRROR FEVER, HOLLOW SKYLINE, PALE ORBIT, GLASS/GAMMA; the last two not in the catalog
    assert (metrics["tracks"], metrics["tracks_with_splits"], metrics["tracks_not_in_catalog"]) == (5, 2, 2)
    # MIRROR FEVER: 2 + 3 x 1 = 5 gross, 40% kept = 2; HOLLOW SKYLINE 1 at 50%; the rest kept whole
    assert metrics["gross_revenue_usd"] == pytest.approx(8.30 + 3.30)
    assert metrics["royalty_adjusted_revenue_usd"] == pytest.approx(4 + 1 + 2 + 0.5 + 0.30 + 0.30)

    tracks = table(lab, result.run_id, "by_track")
    assert sorted(zip(tracks["Artist"], tracks["Title"])) == [
        ("GLASS ORCHID", "GLASS/GAMMA"), ("GLASS ORCHID", "MIRROR FEVER (feat. SABLE ECHO)"),
        ("GLASS ORCHID", "PALE ORBIT"), ("NOVA VANTA", "HOLLOW SKYLINE (feat. GLASS ORCHID)"),
        ("NOVA VANTA", "NIGHT DRIVE")]
    mirror = tracks.set_index("Title").loc["MIRROR FEVER (feat. SABLE ECHO)"]
    assert mirror[["streams", "gross_usd", "actual_usd"]].tolist() == pytest.approx([800, 5.0, 2.0])
    assert tracks.set_index("Title").loc["GLASS/GAMMA", "streams"] == 30
    artists = table(lab, result.run_id, "by_artist").set_index("Artist")
    assert sorted(artists.index) == ["GLASS ORCHID", "NOVA VANTA"]
    assert artists.loc["GLASS ORCHID", ["streams", "gross_usd"]].tolist() == pytest.approx([1130, 5.6])
    splits = table(lab, result.run_id, "tracks_with_splits").set_index("Title")
    assert splits["share"].to_dict() == {"MIRROR FEVER (feat. SABLE ECHO)": 0.4, "HOLLOW SKYLINE (feat. GLASS ORCHID)": 0.5}
    assert splits["gross_usd"].tolist() == pytest.approx([5.0, 1.0])
