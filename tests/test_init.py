"""``bedrot-lab init``: adopting an existing lake leaves every byte of it as it was, the specs
that come with bedrot-lab are written (never over a file), and --sample never writes over
the lake's own files."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import textwrap
import tomllib
from pathlib import Path

import pytest
from conftest import STATEMENT_HEADER
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.cli import CliError
from bedrot_lab.cli.run import _spec_path
from bedrot_lab.config import ZONES, load_settings
from bedrot_lab.lakeinit import SampleRefused, create_lake
from bedrot_lab.specs import packaged_specs

TS = "20250701_120000"

#: a lake as BEDROT's is laid out, with files of the real data sets' shapes (relative path -> bytes)
BEDROT_LAKE: dict[str, bytes] = {
    f"1_landing/distrokid/streams/dk_bank_details_{TS}.tsv": (
        STATEMENT_HEADER.replace(",", "\t")
        + "2025-06-15\t2025-04\tSpotify\tNOVA VANTA\tGLASS HARBOR\tQZES82500001\t197368000017\t412\t100\tSong\tUS\t0\t1.43820317\n"
        + "2025-06-15\t2025-04\tApple Music\tNOVA VANTA\tGLASS HARBOR (feat. KID ORBIT)\tQZES82500002\t197368000017\t38\t100"
          "\tSong\tDE\t0\t0.29412\n"
    ).encode(),
    f"1_landing/distrokid/streams/streams_stats_{TS}.html": (
        b'<script>var chart = {"id":"trend365day","dataProvider":[{"category":"2025-06-30","column-1":812}]};</script>\n'),
    f"1_landing/toolost/toolost_spotify_{TS}.json": b'{"streams": [{"date": "2025-06-30", "streams": 77}]}\n',
    "1_landing/BEDROT-ADS-Ads-Jan-1-2025-May-31-2025.csv": (
        b"Reporting starts,Reporting ends,Ad name,Amount spent (USD)\n2025-01-01,2025-05-31,GLASS HARBOR AD3,41.20\n"),
    "2_raw/tiktok/novavanta_followers_20250630.json": b'{"followers": 10452}\n',
    "3_staging/dk_bank_details.csv": STATEMENT_HEADER.encode(),
    "3_staging/daily_streams_distrokid.csv": b"date,spotify_streams,apple_streams,combined_streams\n2025-06-30,812,40,852\n",
    "4_curated/dk_bank_details.csv": STATEMENT_HEADER.encode()
        + b"2025-06-15,2025-04,Spotify,NOVA VANTA,GLASS HARBOR,QZES82500001,197368000017,412,100,Song,US,0,1.43820317\n",
    "4_curated/tidy_daily_streams.csv": b"date,spotify_streams,apple_streams,combined_streams,source\n"
                                        b"2025-06-30,812,40,852,distrokid\n",
    "4_curated/metaads_campaigns_daily.csv": b"campaign_id,campaign_name,total_spend_usd\n120212345678901234,"
                                             b"NOVA VANTA - GLASS HARBOR - BROAD,41.20\n",
    "4_curated/track_catalog_royalty_splits.csv": b"artist,title,your_revenue_share\nNOVA VANTA,GLASS HARBOR,100\n",
    "5_archive/dk_bank_details [ARCHIVED ON 2025-06-01_120000].csv": STATEMENT_HEADER.encode(),
    "5_archive/tiktok/tiktok_analytics_curated_20250101_000000.csv": b"artist,zone,date,Video Views\n"
                                                                      b"novavanta,novavanta,2025-01-01,1200\n",
    "sandbox/README.md": b"# Sandbox\nAn isolated exploration space. No production secrets.\n",
    "sandbox/analysis/analysis_bedrot_business_metrics.py": b'import pandas as pd\nCURATED = "../../4_curated"\n',
    "sandbox/analysis/analyze_royalty_adjusted_revenue.py": b"print('royalty-adjusted revenue')\n",
    "sandbox/verified/financial_analysis.ipynb": json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode(),
    "sandbox/experiments/meta_ads_api_fetcher.py": b"# fetches the Meta Ads API\n",
    "sandbox/notebooks/exploration.ipynb": b'{"cells": [], "nbformat": 4}\n',
    "src/archive_old_data.py": b"# moves files older than 7 days to 5_archive/\n",
    ".env": b"CURATED_ZONE=4_curated\n",
}


def make_bedrot_lake(root: Path) -> Path:
    for relative, data in BEDROT_LAKE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "2_raw" / "linktree").mkdir()  # an empty folder
    (root / "4_curated" / "latest_statement.csv").symlink_to("dk_bank_details.csv")
    (root / "sandbox" / "analysis" / "run_meta_ads_analysis.py").write_bytes(b"#!/usr/bin/env python\n")
    (root / "sandbox" / "analysis" / "run_meta_ads_analysis.py").chmod(0o755)
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file, link and folder under ``root``: a file's sha256, mode and modification time, a
    link's target, a folder's mode."""
    found = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            found[str(path.relative_to(root))] = ("link", os.readlink(path))
        elif path.is_dir():
            found[str(path.relative_to(root))] = ("folder", info.st_mode)
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = ("file", digest, info.st_mode, info.st_mtime_ns)
    return found


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in {v for _, v in ZONES.values()}}
    return {**env, "BEDROT_USER": "tester"}


# -- adopting an existing lake --------------------------------------------------------------------


def test_init_adopts_a_bedrot_lake_and_leaves_every_byte_as_it_was(tmp_path, bedrot_env):
    lake = make_bedrot_lake(tmp_path / "bedrot-data-lake")
    before = snapshot(lake)

    done = bedrot("init", str(lake), env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = snapshot(lake)
    assert {path: after.get(path) for path in before} == before
    created = sorted(set(after) - set(before))
    specs = sorted(f"experiments/{name}" for name in packaged_specs())
    assert created == sorted(["bedrot-lab.toml", "sandbox/users", "plugins", "experiments", *specs, ".bedrot-lab",
                              ".bedrot-lab/.gitignore", "mlruns", "mlruns/mlflow.db", "mlruns/mlflow.db.lock"])

    out = done.stdout.splitlines()
    for zone, (folder, _) in ZONES.items():
        assert f"found    {folder}  (zone {zone})" in out
    assert "created  bedrot-lab.toml" in out
    assert f"created  experiments/*.toml  ({len(specs)} specs that come with bedrot-lab)" in out
    assert [line for line in out if line.startswith("left as it was")] == [
        "left as it was (7): ., 1_landing, 2_raw, 3_staging, 4_curated, 5_archive, sandbox"]
    config = tomllib.loads((lake / "bedrot-lab.toml").read_text())
    assert config["zones"] == {zone: folder for zone, (folder, _) in ZONES.items()}
    assert config["lake"]["name"] == "bedrot-data-lake"

    again = create_lake(lake, env={})
    assert (again.created, again.found) == ([], {})
    assert {path: value for path, value in snapshot(lake).items() if not path.startswith("mlruns/mlflow.db")} == {
        path: value for path, value in after.items() if not path.startswith("mlruns/mlflow.db")}


def test_init_finds_zones_where_the_historic_variables_point_and_older_names(tmp_path, bedrot_env):
    lake = tmp_path / "lake"
    for folder in ("data/landing_zone", "staging", "curated"):
        (lake / folder).mkdir(parents=True)
    (lake / "curated" / "dk_bank_details.csv").write_text(STATEMENT_HEADER)
    elsewhere = tmp_path / "archive-disk" / "archive"
    elsewhere.mkdir(parents=True)
    before = snapshot(tmp_path)
    env = {"LANDING_ZONE": "data/landing_zone", "ARCHIVE_ZONE": str(elsewhere)}

    report = create_lake(lake, env=env)
    assert {zone: (str(folder.relative_to(tmp_path)), by) for zone, (folder, by) in report.found.items()} == {
        "landing": ("lake/data/landing_zone", "LANDING_ZONE"), "staging": ("lake/staging", "folder"),
        "curated": ("lake/curated", "folder"), "archive": ("archive-disk/archive", "ARCHIVE_ZONE")}
    zones = tomllib.loads((lake / "bedrot-lab.toml").read_text())["zones"]
    assert zones == {"landing": "data/landing_zone", "raw": "2_raw", "staging": "staging", "curated": "curated",
                     "archive": str(elsewhere), "sandbox": "sandbox"}
    assert (lake / "2_raw").is_dir() and (lake / "sandbox" / "users").is_dir()
    assert not (lake / "4_curated").exists() and not (lake / "5_archive").exists()
    settings = load_settings(lake, env={})
    assert settings.zone("curated") == lake / "curated" and settings.zone("archive") == elsewhere
    after = snapshot(tmp_path)
    assert {path: after.get(path) for path in before if after[path][0] != "folder"} == {
        path: value for path, value in before.items() if value[0] != "folder"}


def test_init_report_as_json_says_what_it_found(tmp_path, bedrot_env):
    lake = make_bedrot_lake(tmp_path / "lake")
    report = json.loads(json.dumps(create_lake(lake, env={}).to_dict()))
    assert report["found"]["curated"] == {"path": str(lake / "4_curated"), "by": "folder"}
    assert str(lake / "bedrot-lab.toml") in report["created"]


# -- specs --------------------------------------------------------------------------------------


def test_init_writes_the_specs_and_never_over_the_lakes_own(tmp_path, bedrot_env):
    lake = tmp_path / "lake"
    own = lake / "experiments" / "revenue-per-stream.toml"
    own.parent.mkdir(parents=True)
    own.write_text('experiment = "revenue-per-stream"\nname = "ours"\n')
    report = create_lake(lake, env={})
    specs = packaged_specs()
    assert sorted(p.name for p in (lake / "experiments").glob("*.toml")) == sorted(specs)
    assert own.read_text() == 'experiment = "revenue-per-stream"\nname = "ours"\n'
    assert own in report.existing and own not in report.created
    for name in set(specs) - {own.name}:
        assert (lake / "experiments" / name).read_bytes() == specs[name].read_bytes()


def test_run_falls_back_on_a_packaged_spec_the_lake_has_none_of(bedrot_lake):
    specs_dir = bedrot_lake / "experiments"
    packaged = packaged_specs()["revenue-per-stream.toml"]
    assert _spec_path("revenue-per-stream.toml", specs_dir) == packaged
    assert _spec_path("experiments/revenue-per-stream.toml", specs_dir) == packaged
    (specs_dir / "revenue-per-stream.toml").write_text('experiment = "revenue-per-stream"\n')
    assert _spec_path("revenue-per-stream.toml", specs_dir) == specs_dir / "revenue-per-stream.toml"
    for elsewhere in ("other/revenue-per-stream.toml", "no-such-spec.toml"):
        with pytest.raises(CliError, match=f"spec file not found: {elsewhere}"):
            _spec_path(elsewhere, specs_dir)


# -- --sample never over the lake's own files -----------------------------------------------------


def test_sample_refuses_to_write_over_a_lakes_files_and_changes_nothing(tmp_path, bedrot_env):
    lake = make_bedrot_lake(tmp_path / "lake")
    before = snapshot(lake)
    refused = bedrot("init", str(lake), "--sample", env=clean_env(), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("Error: --sample would write over files already in the lake: 4_curated/dk_bank_details.csv, ")
    for name in ("4_curated/tidy_daily_streams.csv", "3_staging/daily_streams_distrokid.csv",
                 "1_landing/BEDROT-ADS-Ads-Jan-1-2025-May-31-2025.csv"):
        assert name in line
    assert "linktree" not in line
    assert snapshot(lake) == before  # not even bedrot-lab.toml


def test_sample_again_leaves_its_own_files_and_refuses_once_one_is_edited(tmp_path, bedrot_env):
    lake = tmp_path / "lake"
    first = create_lake(lake, sample=True, env={})
    written = [p for p in first.created if p.suffix == ".csv"]
    assert len(written) == 12
    again = create_lake(lake, sample=True, env={})
    assert not [p for p in again.created if p.suffix == ".csv"] and set(written) <= set(again.existing)

    edited = lake / "4_curated" / "linktree_analytics.csv"
    edited.write_text("date,totalViews\n2025-01-01,1\n")
    with pytest.raises(SampleRefused, match=r"over files already in the lake: 4_curated/linktree_analytics\.csv;"):
        create_lake(lake, sample=True, env={})
    assert edited.read_text() == "date,totalViews\n2025-01-01,1\n"


def test_a_lake_plugin_folder_with_bedrots_analyses_copied_in_by_hand_still_works(tmp_path, bedrot_env):
    """The old README copied plugins/*.py into the lake: those copies are the installed plugins."""
    from conftest import REPO_PLUGINS

    lake = tmp_path / "lake"
    create_lake(lake, env={})
    for plugin in REPO_PLUGINS.glob("[!_]*.py"):
        (lake / "plugins" / plugin.name).write_bytes(plugin.read_bytes())
    env = {**clean_env(), "BEDROT_LAKE": str(lake)}
    env.pop("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD")
    listed = bedrot("plugins", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    plugins = {info["name"]: info for info in json.loads(listed.stdout)}
    assert plugins["revenue_per_stream"]["source"] == "entry point"
    assert not [name for name in plugins if name.startswith("lake:")]
    assert textwrap.dedent(listed.stderr).strip() == ""
