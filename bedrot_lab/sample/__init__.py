"""A deterministic synthetic lake in the shapes of the real BEDROT data sets: which files, where, never overwritten."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import replacing
from .activity import STAGING_ADS_HEADER, Activity
from .catalog import ADS_WINDOW, SNAPSHOT_TS, catalog_rows
from .sandbox import write_notebook, write_script
from .statement import DEFAULT_STATEMENT_ROWS, write_statement

if TYPE_CHECKING:
    from ..config import Settings

#: copies of the Meta Ads ad sets written between two progress messages (some 15,000 rows)
AD_COPIES_PER_MESSAGE = 500


@dataclass
class SampleReport:
    """What :func:`write_sample` did: the files it created and the existing ones it left alone."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)


def write_sample(
    settings: Settings,
    *,
    seed: int = 7,
    scale: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> SampleReport:
    """Write a synthetic lake into the curated, landing and staging zones of ``settings``.

    Existing files are never overwritten: they are listed in ``skipped``. Each file is
    written under a temporary name and moved into place, so an interruption leaves no
    partial file. The same ``seed`` gives byte-identical files.

    ``scale`` sizes the files the ETL experiments read, for benchmarks: the DistroKid
    statement, curated and staged, gets ``scale`` rows (written in batches of
    :data:`.statement.BATCH_ROWS`), and the staged Meta Ads export one copy of its ad
    sets per :data:`.statement.DEFAULT_STATEMENT_ROWS` rows (see :func:`ad_set_copies`).
    The daily streams keep their year: they have one row per day, the key of
    ``tidy_daily_streams``, and DistroKid reports a rolling 365 days. The other files
    keep their size.
    ``progress`` is called as the statements and the staged ads are written, with each
    file's path relative to the lake; the files are the report's to list.
    """
    if scale is not None and scale < 0:
        raise ValueError(f"scale must be zero or positive, got {scale}")
    report = SampleReport()
    for path, write in _sample_files(settings, seed, scale, progress):
        if path.exists():
            report.skipped.append(path)
            continue
        _publish(path, write)
        report.written.append(path)
    return report


def sample_paths(settings: Settings) -> list[Path]:
    """The files :func:`write_sample` writes into the lake of ``settings``."""
    return [path for path, _ in _sample_files(settings, 7, None, None)]


def ad_set_copies(scale: int | None) -> int:
    """Copies of the Meta Ads ad sets staged at ``scale``: one per :data:`DEFAULT_STATEMENT_ROWS`
    rows of the statement, at least one.

    The export has 31 ads, so the staged file grows with the statement at about 1/130 of
    its rows: at size, a file of ads well under a tenth of the statement's rows.
    """
    return 1 if scale is None else max(1, scale // DEFAULT_STATEMENT_ROWS)


def _sample_files(
    settings: Settings, seed: int, scale: int | None, progress: Callable[[str], None] | None
) -> list[tuple[Path, Callable[[Path], None]]]:
    activity = Activity(seed)
    curated, landing, staging, sandbox = (settings.zone(key) for key in ("curated", "landing", "staging", "sandbox"))
    start, end = (_export_day(day) for day in ADS_WINDOW)
    def table(make: Callable[[], tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> Callable[[Path], None]:
        return lambda path: _write_rows(path, *make())

    def statement(path: Path) -> Callable[[Path], None]:
        rows = None if progress is None else _rows_progress(progress, _shown(path, settings.root))
        return lambda temporary: write_statement(temporary, seed, scale, rows)

    staged_ads = staging / "metaads" / "metaads_staging_latest.csv"
    ads_progress = None if progress is None else _copies_progress(progress, _shown(staged_ads, settings.root))
    return [
        (curated / "dk_bank_details.csv", statement(curated / "dk_bank_details.csv")),
        (curated / "tidy_daily_streams.csv", table(activity.tidy_streams)),
        (curated / "metaads_campaigns_daily.csv", table(activity.campaign_summary)),
        (curated / "metaads_campaigns_performance_log.csv", table(activity.performance_log)),
        (curated / f"spotify_audience_curated_{SNAPSHOT_TS}.csv", table(activity.audience)),
        (curated / "track_catalog_royalty_splits.csv", table(catalog_rows)),
        (curated / "linktree_analytics.csv", table(activity.linktree)),
        (curated / f"tiktok_analytics_curated_{SNAPSHOT_TS}.csv", table(activity.tiktok)),
        (landing / f"BEDROT-ADS-Ads-{start}-{end}.csv", table(activity.ads_export)),
        (staging / "dk_bank_details.csv", statement(staging / "dk_bank_details.csv")),
        (staging / "daily_streams_distrokid.csv", table(activity.distrokid_streams)),
        (staged_ads, lambda path: _write_staged_ads(path, activity, ad_set_copies(scale), ads_progress)),
        (sandbox / "notebooks" / "streams_by_store.ipynb", write_notebook),
        (sandbox / "analysis" / "revenue_report.py", write_script),
    ]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _rows_progress(progress: Callable[[str], None], name: str) -> Callable[[int, int], None]:
    """``progress`` of a file written in batches, named as it will be called, not as its temporary file."""
    return lambda done, total: progress(f"{name}: {done:,} of {total:,} rows")


def _copies_progress(progress: Callable[[str], None], name: str) -> Callable[[int, int, int], None]:
    """``progress`` of the staged ads, written a copy of the ad sets at a time, named as the file will be."""
    return lambda done, total, rows: progress(f"{name}: {rows:,} rows, {done:,} of {total:,} copies of the ad sets")


def _publish(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, durable=False) as temporary:  # sample data is cheap to make again: no fsync
        write(temporary)


def _export_day(day: str) -> str:
    """``2025-01-01`` -> ``Jan-1-2025``, as in Meta Ads Manager export names."""
    year, month, dom = (int(part) for part in day.split("-"))
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return f"{months[month - 1]}-{dom}-{year}"


def _write_staged_ads(
    path: Path, activity: Activity, copies: int, progress: Callable[[int, int, int], None] | None
) -> None:
    """The staged Meta Ads export with ``copies`` copies of its ad sets, written a copy at a time
    (which bounds memory), calling ``progress`` every :data:`AD_COPIES_PER_MESSAGE` copies and at the end."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(STAGING_ADS_HEADER)
        rows = 0
        for done, ads in enumerate(activity.staged_ad_copies(copies), 1):
            writer.writerows(ads)
            rows += len(ads)
            if progress and (done % AD_COPIES_PER_MESSAGE == 0 or done == copies):
                progress(done, copies, rows)


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))
