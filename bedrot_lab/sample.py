"""A deterministic synthetic lake in the shapes of the real BEDROT data sets."""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .fsutil import replacing

if TYPE_CHECKING:
    import pyarrow as pa

    from .config import Settings

#: statement rows written when no ``scale`` is given
DEFAULT_STATEMENT_ROWS = 4_000
#: statement rows generated and written at a time, which bounds memory at any scale
BATCH_ROWS = 250_000

SNAPSHOT_TS = "20250701_120000"
SALE_MONTHS = np.arange("2024-01", "2025-07", dtype="datetime64[M]")
#: first calendar month a statement may be reported in; reports lag sale months by 1-3 months
FIRST_REPORT_MONTH = np.datetime64("2024-02", "M")
DAYS = np.arange("2024-07-01", "2025-07-01", dtype="datetime64[D]")
ADS_WINDOW = ("2025-01-01", "2025-05-31")

DK_HEADER = (
    "Reporting Date",
    "Sale Month",
    "Store",
    "Artist",
    "Title",
    "ISRC",
    "UPC",
    "Quantity",
    "Team Percentage",
    "Song/Album",
    "Country of Sale",
    "Songwriter Royalties Withheld",
    "Earnings (USD)",
)

#: store -> (share of statement rows, USD per stream); Spotify dominates, rates differ by platform
STORES: dict[str, tuple[float, float]] = {
    "Spotify": (0.65, 0.0031),
    "Apple Music": (0.12, 0.0068),
    "iTunes": (0.02, 0.0095),
    "YouTube (Ads)": (0.08, 0.0007),
    "YouTube (Red)": (0.04, 0.0052),
    "TikTok": (0.07, 0.0003),
    "Pandora": (0.04, 0.0013),
    "Amazon Unlimited (Streaming)": (0.05, 0.0041),
    "SoundCloud": (0.04, 0.0024),
    "Tencent": (0.02, 0.0005),
}

COUNTRIES: dict[str, float] = {
    "US": 0.55, "GB": 0.07, "CA": 0.06, "DE": 0.05, "AU": 0.04, "FR": 0.035, "BR": 0.035,
    "MX": 0.03, "NL": 0.025, "SE": 0.025, "JP": 0.02, "IN": 0.02, "ES": 0.02, "IT": 0.02,
    "PL": 0.015, "PH": 0.015, "ID": 0.015, "NO": 0.01, "NZ": 0.01, "IE": 0.01, "CL": 0.01,
    "AR": 0.01, "ZA": 0.01, "KR": 0.01, "BE": 0.01, "FI": 0.01,
}  # fmt: skip


@dataclass(frozen=True)
class _Act:
    name: str
    slug: str
    handle: str
    spotify_id: str
    listeners: float
    tiktok_views: float


ACTS = (
    _Act("NOVA VANTA", "nova_vanta", "novavanta", "3Xk9PqL2vN8wRt5YbZ1mCd", 900.0, 1400.0),
    _Act("GLASS ORCHID", "glass_orchid", "glassorchid", "6hT4sWq0JeM7uAa2FgK9rV", 600.0, 2100.0),
)


@dataclass(frozen=True)
class _Track:
    artist: str
    title: str
    isrc: str
    upc: str
    released: str
    release_type: str
    share: float
    popularity: float
    #: (artist, title) as the hand-kept catalog spells them, when not exactly as DistroKid does
    catalog_as: tuple[str, str] | None = None
    in_catalog: bool = True


TRACKS = (
    _Track("GLASS ORCHID", "GARDEN OF WIRES", "QZGO72400311", "196871440312", "2024-10-11", "album", 100, 1.6),
    _Track("GLASS ORCHID", "GHOST FREQUENCY (feat. NOVA VANTA)", "QZGO72500512", "196871550514",
           "2025-05-30", "single", 90, 1.2),
    _Track("GLASS ORCHID", "IVORY STATIC (feat. KAI MERIDIAN)", "QZGO72400207", "196871330209",
           "2024-05-17", "single", 75, 1.0),
    _Track("GLASS ORCHID", "MIRROR FEVER (feat. SABLE ECHO)", "QZGO72400313", "196871440312",
           "2024-10-11", "album", 40, 1.1),
    _Track("GLASS ORCHID", "PAPER SATELLITES", "QZGO72300104", "196871110105", "2023-06-02", "single", 100, 2.2,
           ("glass orchid", "Paper Satellites")),
    _Track("GLASS ORCHID", "SLOW BLOOM", "QZGO72300155", "196871220153", "2023-12-01", "single", 100, 0.9,
           (" GLASS ORCHID", "SLOW BLOOM ")),
    _Track("GLASS ORCHID", "SOFT MACHINERY", "QZGO72400314", "196871440312", "2024-10-11", "album", 100, 0.8),
    _Track("GLASS ORCHID", "SUNDIAL", "QZGO72500421", "196871500426", "2025-03-21", "single", 100, 1.5),
    _Track("NOVA VANTA", "AFTERGLOW CIRCUIT", "QZNV52400102", "196871300101", "2024-03-08", "ep", 100, 1.3),
    _Track("NOVA VANTA", "CHROME LULLABY", "QZNV52400101", "196871300101", "2024-03-08", "ep", 100, 1.0),
    _Track("NOVA VANTA", "HOLLOW SKYLINE (feat. GLASS ORCHID)", "QZNV52500233", "196871500235",
           "2025-02-14", "single", 50, 1.7),
    _Track("NOVA VANTA", "LOW TIDE SIGNAL", "QZNV52300418", "196871220412", "2023-11-10", "single", 100, 0.7),
    _Track("NOVA VANTA", "MIDNIGHT ENGINE", "QZNV52300309", "196871110303", "2023-09-15", "single", 100, 2.4,
           ("Nova Vanta", "Midnight Engine")),
    _Track("NOVA VANTA", "NEON PILGRIM (feat. LUMEN ROW)", "QZNV52400103", "196871300101", "2024-03-08", "ep",
           60, 0.9),
    _Track("NOVA VANTA", "PALE ORBIT", "QZNV52300110", "196871000107", "2023-05-05", "single", 100, 0.6,
           in_catalog=False),
    _Track("NOVA VANTA", "STATIC HEARTS", "QZNV52400540", "196871440549", "2024-09-20", "single", 100, 1.4),
    _Track("NOVA VANTA", "VELVET DYNAMO", "QZNV52500301", "196871550309", "2025-04-25", "single", 100, 1.3),
)  # fmt: skip


@dataclass(frozen=True)
class _Campaign:
    artist: str
    track: str
    targeting: str
    first: str
    last: str
    budget: float

    @property
    def name(self) -> str:
        return f"{self.artist} - {self.track} - {self.targeting}"


CAMPAIGNS = (
    _Campaign("NOVA VANTA", "STATIC HEARTS", "BROAD", "2025-01-06", "2025-02-09", 5),
    _Campaign("GLASS ORCHID", "GARDEN OF WIRES", "INDIE POP", "2025-01-13", "2025-02-28", 5),
    _Campaign("GLASS ORCHID", "MIRROR FEVER", "ALT R&B", "2025-02-01", "2025-03-15", 4),
    _Campaign("NOVA VANTA", "HOLLOW SKYLINE", "BROAD SPOTIFY", "2025-02-14", "2025-03-31", 7),
    _Campaign("NOVA VANTA", "HOLLOW SKYLINE", "BROAD SPOTIFY - Copy", "2025-03-10", "2025-04-20", 5),
    _Campaign("GLASS ORCHID", "SUNDIAL", "DREAM POP", "2025-03-21", "2025-05-31", 4),
    _Campaign("NOVA VANTA", "VELVET DYNAMO", "SYNTHWAVE", "2025-04-25", "2025-05-31", 6),
    _Campaign("GLASS ORCHID", "GHOST FREQUENCY", "BROAD", "2025-05-19", "2025-05-31", 10),
)

RANKINGS = (
    "Average",
    "Above average",
    "Below average - Bottom 35% of ads",
    "Below average - Bottom 20% of ads",
    "-",
)
AD_VARIANTS = ("9x16 video", "1x1 static", "4x5 video", "carousel")

META_EXPORT_TO_STAGING = {
    "Reporting starts": "date_start",
    "Reporting ends": "date_end",
    "Ad name": "ad_name",
    "Ad delivery": "ad_delivery_status",
    "Ad Set Name": "adset_name",
    "Bid": "bid",
    "Bid type": "bid_type",
    "Ad set budget": "adset_budget",
    "Ad set budget type": "budget_type",
    "Last significant edit": "last_edit",
    "Attribution setting": "attribution_setting",
    "Results": "results",
    "Result indicator": "result_indicator",
    "Reach": "reach",
    "Impressions": "impressions",
    "Cost per results": "cost_per_result",
    "Quality ranking": "quality_ranking",
    "Engagement rate ranking": "engagement_ranking",
    "Conversion rate ranking": "conversion_ranking",
    "Amount spent (USD)": "spend_usd",
    "Ends": "campaign_end_status",
}


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
    partial file. The same ``seed`` gives byte-identical files. ``scale`` sets the number
    of rows of the curated ``dk_bank_details.csv`` (written in batches of
    :data:`BATCH_ROWS`, calling ``progress`` after each with the file's path relative to
    the lake); the other files keep their size. The files are the report's to list.
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


def _sample_files(
    settings: Settings, seed: int, scale: int | None, progress: Callable[[str], None] | None
) -> list[tuple[Path, Callable[[Path], None]]]:
    world = _World(seed)
    curated, landing, staging = (settings.zone(key) for key in ("curated", "landing", "staging"))
    start, end = (_export_day(day) for day in ADS_WINDOW)
    def table(make: Callable[[], tuple[Sequence[str], Sequence[Sequence[Any]]]]) -> Callable[[Path], None]:
        return lambda path: _write_rows(path, *make())

    statement = curated / "dk_bank_details.csv"
    rows = None if progress is None else _rows_progress(progress, _shown(statement, settings.root))
    return [
        (statement, lambda path: _write_statement(path, seed, scale, rows)),
        (curated / "tidy_daily_streams.csv", table(world.tidy_streams)),
        (curated / "metaads_campaigns_daily.csv", table(world.campaign_summary)),
        (curated / "metaads_campaigns_performance_log.csv", table(world.performance_log)),
        (curated / f"spotify_audience_curated_{SNAPSHOT_TS}.csv", table(world.audience)),
        (curated / "track_catalog_royalty_splits.csv", table(_catalog)),
        (curated / "linktree_analytics.csv", table(world.linktree)),
        (curated / f"tiktok_analytics_curated_{SNAPSHOT_TS}.csv", table(world.tiktok)),
        (landing / f"BEDROT-ADS-Ads-{start}-{end}.csv", table(world.ads_export)),
        (staging / "dk_bank_details.csv", lambda path: _write_statement(path, seed, None, None)),
        (staging / "daily_streams_distrokid.csv", table(world.distrokid_streams)),
        (staging / "metaads" / "metaads_staging_latest.csv", table(world.ads_staging)),
    ]


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _rows_progress(progress: Callable[[str], None], name: str) -> Callable[[int, int], None]:
    """``progress`` of a file written in batches, named as it will be called, not as its temporary file."""
    return lambda done, total: progress(f"{name}: {done:,} of {total:,} rows")


def _publish(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary file in the same folder, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, durable=False) as temporary:  # sample data is cheap to make again: no fsync
        write(temporary)


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent generator per file, so skipping one file never changes another."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


def _export_day(day: str) -> str:
    """``2025-01-01`` -> ``Jan-1-2025``, as in Meta Ads Manager export names."""
    year, month, dom = (int(part) for part in day.split("-"))
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return f"{months[month - 1]}-{dom}-{year}"


def _num(value: float, places: int) -> str:
    return repr(round(float(value), places))


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))


# -- the DistroKid statement ------------------------------------------------------------


def _write_statement(
    path: Path, seed: int, scale: int | None, progress: Callable[[int, int], None] | None
) -> None:
    import pyarrow as pa
    from pyarrow import csv as pacsv

    total = DEFAULT_STATEMENT_ROWS if scale is None else scale
    header = io.StringIO()
    csv.writer(header, lineterminator="\n").writerow(DK_HEADER)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write(header.getvalue().encode("utf-8"))
        writer = None
        for done, batch in _statement_batches(seed, total):
            if writer is None:
                writer = pacsv.CSVWriter(sink, batch.schema, write_options=options)
            writer.write_table(batch)
            if progress:
                progress(done, total)
        if writer is not None:
            writer.close()


def _statement_batches(seed: int, total: int) -> Iterator[tuple[int, pa.Table]]:
    """Statement rows in order of reporting date, sale month, artist and title.

    How many rows each (reporting date, sale month, track) gets is drawn once for the
    whole file, so each batch maps its row numbers onto those groups without looking back.
    """
    import pyarrow as pa

    rng = _rng(seed, "dk_bank_details")
    report_months = np.arange(FIRST_REPORT_MONTH, SALE_MONTHS[-1] + 4)
    report_days = report_months.astype("datetime64[D]") + rng.integers(2, 27, len(report_months))
    released = np.array([np.datetime64(t.released[:7], "M") for t in TRACKS])
    groups, weights = [], []
    for sale_index, month in enumerate(SALE_MONTHS):
        growth = 1.0 + 0.05 * sale_index
        for lag, lag_weight in ((1, 0.6), (2, 0.3), (3, 0.1)):
            report_index = int(((month + lag) - FIRST_REPORT_MONTH).astype(np.int64))
            for track_index, track in enumerate(TRACKS):
                age = int((month - released[track_index]).astype(np.int64))
                if age < 0:
                    continue
                fresh = 2.5 if age < 3 else 1.0
                groups.append((report_index, sale_index, track_index))
                weights.append(track.popularity * growth * lag_weight * fresh)
    order = sorted(range(len(groups)), key=lambda i: groups[i])
    group_array = np.array([groups[i] for i in order], dtype=np.int64)
    p = np.array([weights[i] for i in order])
    ends = np.cumsum(rng.multinomial(total, p / p.sum()))
    starts = np.concatenate(([0], ends[:-1]))

    report_text = pa.array(np.datetime_as_string(report_days, unit="D"))
    month_text = pa.array(np.datetime_as_string(SALE_MONTHS, unit="M"))
    artist_text = pa.array([t.artist for t in TRACKS])
    title_text = pa.array([t.title for t in TRACKS])
    isrc_text = pa.array([t.isrc for t in TRACKS])
    upc_text = pa.array([t.upc for t in TRACKS])
    store_text = pa.array(list(STORES))
    store_p = np.array([share for share, _ in STORES.values()])
    store_rate = np.array([rate for _, rate in STORES.values()])
    itunes = list(STORES).index("iTunes")
    country_text = pa.array(list(COUNTRIES))
    country_p = np.array(list(COUNTRIES.values()))
    us = list(COUNTRIES).index("US")
    kind_text = pa.array(["Song", "Album"])
    # A group's first rows take distinct (store, country) cells, drawn by weight without
    # replacement, so the statement keeps its grain until a group outgrows the cells.
    cell_p = np.outer(store_p, country_p).ravel()
    cell_p /= cell_p.sum()
    cells = len(cell_p)
    cell_order = np.argsort(np.log(rng.random((len(groups), cells))) / -cell_p, axis=1, kind="stable")

    for start in range(0, total, BATCH_ROWS):
        size = min(BATCH_ROWS, total - start)
        rows = np.arange(start, start + size)
        index = np.searchsorted(ends, rows, side="right")
        group = group_array[index]
        position = rows - starts[index]
        cell = np.where(
            position < cells,
            cell_order[index, np.minimum(position, cells - 1)],
            rng.choice(cells, size, p=cell_p),
        )
        store, country = np.divmod(cell, len(COUNTRIES))
        quantity = np.floor(rng.lognormal(1.7, 1.1, size)).astype(np.int64) + 1
        viral = rng.random(size) < 0.002
        quantity[viral] = rng.integers(1_000, 6_000, int(viral.sum()))
        download = store == itunes
        quantity[download] = 1 + (rng.random(int(download.sum())) < 0.1)
        album = download & (rng.random(size) < 0.15)
        team = np.where(rng.random(size) < 0.003, 50.0, 100.0)
        rate = np.clip(store_rate[store] * rng.lognormal(0.0, 0.2, size), 0.0003, 0.01)
        gross = quantity * rate * team / 100.0
        withheld = np.where((country == us) & (rng.random(size) < 0.01), np.round(gross * 0.09, 8), 0.0)
        earnings = np.round(gross - withheld, 8)
        adjustment = rng.random(size)
        earnings[adjustment < 0.004] = 0.0
        earnings[adjustment > 0.998] *= -1.0
        track = pa.array(group[:, 2])
        yield start + size, pa.table(
            {
                "Reporting Date": report_text.take(pa.array(group[:, 0])),
                "Sale Month": month_text.take(pa.array(group[:, 1])),
                "Store": store_text.take(pa.array(store)),
                "Artist": artist_text.take(track),
                "Title": title_text.take(track),
                "ISRC": isrc_text.take(track),
                "UPC": upc_text.take(track),
                "Quantity": pa.array(quantity),
                "Team Percentage": pa.array(team),
                "Song/Album": kind_text.take(pa.array(album.astype(np.int64))),
                "Country of Sale": country_text.take(pa.array(country)),
                "Songwriter Royalties Withheld": pa.array(withheld),
                "Earnings (USD)": pa.array(earnings + 0.0),
            }
        )


def _catalog() -> tuple[Sequence[str], list[list[str]]]:
    header = (
        "artist",
        "title",
        "your_revenue_share",
        "isrc",
        "upc",
        "release_date",
        "release_type",
        "royalty_percentage",
    )
    rows = []
    for track in sorted(TRACKS, key=lambda t: (t.released, t.title)):
        if not track.in_catalog:
            continue
        artist, title = track.catalog_as or (track.artist, track.title)
        share = f"{track.share:g}"
        # the hand-kept file lacks a release date for one old single
        released = "" if track.title == "LOW TIDE SIGNAL" else track.released
        rows.append([artist, title, share, track.isrc, track.upc, released, track.release_type, share])
    return header, rows


# -- everything else, which shares one model of campaigns and audiences ----------------------


class _World:
    """The day-by-day model behind the small files, each drawn from its own random stream."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    @cached_property
    def campaign_days(self) -> list[dict[str, Any]]:
        """One record per campaign and day of delivery, sorted by date then campaign."""
        rng = _rng(self.seed, "campaigns")
        records = []
        for campaign in CAMPAIGNS:
            campaign_id = "1202" + "".join(str(d) for d in rng.integers(0, 10, 14))
            for day in np.arange(campaign.first, np.datetime64(campaign.last) + 1, dtype="datetime64[D]"):
                spend = round(campaign.budget * rng.uniform(0.7, 1.0), 2)
                impressions = int(spend / rng.uniform(5.0, 11.0) * 1000)
                clicks = int(rng.binomial(impressions, rng.uniform(0.008, 0.025)))
                reach = float(int(impressions / rng.uniform(1.05, 1.5)))
                views = int(rng.binomial(clicks, 0.35))
                carts = int(rng.binomial(views, 0.05))
                pixel = {
                    "ViewContent": views,
                    "AddToCart": carts,
                    "Purchase": int(rng.binomial(carts, 0.3)),
                    "LinkClick": clicks,
                    "PostEngagement": int(rng.binomial(impressions, 0.002)),
                }
                records.append(
                    {
                        "date": str(day),
                        "campaign": campaign,
                        "campaign_id": campaign_id,
                        "spend": spend,
                        "impressions": impressions,
                        "clicks": clicks,
                        "reach": reach,
                        "cpc": round(spend / clicks, 6) if clicks else 0.0,
                        "pixel": {k: v for k, v in pixel.items() if v} if rng.random() > 0.05 else {},
                    }
                )
        records.sort(key=lambda r: (r["date"], r["campaign_id"]))
        return records

    def spend_by_act(self) -> dict[str, np.ndarray]:
        """Daily ad spend per act over :data:`DAYS`."""
        spend = {act.name: np.zeros(len(DAYS)) for act in ACTS}
        for record in self.campaign_days:
            index = int((np.datetime64(record["date"]) - DAYS[0]).astype(np.int64))
            spend[record["campaign"].artist][index] += record["spend"]
        return spend

    def campaign_summary(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "campaign_id",
            "campaign_name",
            "first_seen_date",
            "last_seen_date",
            "total_spend_usd",
            "total_impressions",
            "total_clicks",
            "max_daily_reach",
            "is_currently_active",
            "data_source",
            "api_version",
            "avg_cpc",
            "avg_ctr",
            "total_days_active",
        )
        rows = []
        for campaign in CAMPAIGNS:
            days = [r for r in self.campaign_days if r["campaign"] is campaign]
            spend = round(sum(r["spend"] for r in days), 2)
            impressions = sum(r["impressions"] for r in days)
            clicks = sum(r["clicks"] for r in days)
            first, last = days[0]["date"], days[-1]["date"]
            active = last == ADS_WINDOW[1]
            rows.append(
                [
                    days[0]["campaign_id"],
                    campaign.name,
                    first,
                    last,
                    _num(spend, 2),
                    impressions,
                    clicks,
                    _num(max(r["reach"] for r in days), 1),
                    "true" if active else "false",
                    "meta_daily_campaigns_extractor",
                    "v18.0",
                    _num(spend / clicks if clicks else 0.0, 4),
                    _num(clicks / impressions * 100 if impressions else 0.0, 3),
                    len(days),
                ]
            )
        return header, rows

    def performance_log(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "date",
            "campaign_id",
            "campaign_name",
            "reach",
            "cpc",
            "spend_usd",
            "impressions",
            "clicks",
            "meta_pixel_events",
        )
        newest = max(np.datetime64(r["date"]) for r in self.campaign_days)
        since = str(newest - 28)
        rows = [
            [
                r["date"],
                r["campaign_id"],
                r["campaign"].name,
                _num(r["reach"], 1),
                _num(r["cpc"], 6),
                _num(r["spend"], 2),
                r["impressions"],
                r["clicks"],
                json.dumps(r["pixel"]),
            ]
            for r in self.campaign_days
            if r["date"] >= since
        ]
        return header, rows

    @cached_property
    def ads(self) -> list[list[Any]]:
        """Rows of the Ads Manager export: each campaign's totals split over its ads."""
        rng = _rng(self.seed, "ads_export")
        rows: list[list[Any]] = []
        number = 0
        for campaign in CAMPAIGNS:
            days = [r for r in self.campaign_days if r["campaign"] is campaign]
            active = days[-1]["date"] == ADS_WINDOW[1]
            targetings = [campaign.targeting]
            if rng.random() < 0.5:
                targetings.append(str(rng.choice(["BROAD", "LOOKALIKE 1%", "INTEREST STACK"])))
            ads = [(t, int(rng.integers(2, 4))) for t in targetings]
            count = sum(n for _, n in ads)
            split = rng.dirichlet(np.full(count, 2.0))
            spend = np.round(sum(r["spend"] for r in days) * split, 2)
            impressions = np.round(sum(r["impressions"] for r in days) * split).astype(int)
            results = rng.multinomial(sum(r["pixel"].get("ViewContent", 0) for r in days), split)
            budget_type = "Lifetime" if campaign.targeting == "INDIE POP" else "Daily"
            budget = int(campaign.budget * len(days) if budget_type == "Lifetime" else campaign.budget)
            edit = str(np.datetime64(campaign.first) + int(rng.integers(0, len(days))))
            index = 0
            for targeting, n in ads:
                adset = f"{campaign.artist} - {campaign.track} - {targeting}"
                for _ in range(n):
                    number += 1
                    variant = AD_VARIANTS[int(rng.integers(len(AD_VARIANTS)))]
                    delivery = "active" if active else "inactive"
                    if active and rng.random() < 0.2:
                        delivery = "not_delivering"
                    got = int(results[index])
                    rankings = [RANKINGS[int(i)] for i in rng.integers(0, len(RANKINGS), 3)]
                    if impressions[index] < 500:
                        rankings = ["-", "-", "-"]
                    rows.append(
                        [
                            ADS_WINDOW[0],
                            ADS_WINDOW[1],
                            f"{campaign.track} AD{number} - {variant}",
                            delivery,
                            adset,
                            0,
                            "ABSOLUTE_OCPM",
                            budget,
                            budget_type,
                            edit if rng.random() < 0.7 else "0",
                            "7-day click, 1-day view, or 1-day engaged-view",
                            got if got else "",
                            "actions:offsite_conversion.fb_pixel_view_content",
                            int(impressions[index] / rng.uniform(1.05, 1.5)),
                            int(impressions[index]),
                            _num(spend[index] / got, 6) if got else "",
                            *rankings,
                            _num(spend[index], 2),
                            "Ongoing" if active else campaign.last,
                        ]
                    )
                    index += 1
        return rows

    def ads_export(self) -> tuple[Sequence[str], list[list[Any]]]:
        return tuple(META_EXPORT_TO_STAGING), self.ads

    def ads_staging(self) -> tuple[Sequence[str], list[list[Any]]]:
        columns = list(META_EXPORT_TO_STAGING)
        results, cost, spend, impressions = (
            columns.index(c) for c in ("Results", "Cost per results", "Amount spent (USD)", "Impressions")
        )
        rows = []
        for row in self.ads:
            row = list(row)
            row[results] = row[results] or 0
            row[cost] = row[cost] or 0.0
            cpm = float(row[spend]) / row[impressions] * 1000 if row[impressions] else 0.0
            rows.append([*row, _num(cpm, 4)])
        return (*META_EXPORT_TO_STAGING.values(), "cpm"), rows

    def audience(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "date",
            "listeners",
            "streams",
            "followers",
            "artist_id",
            "artist_name",
            "extracted_at",
            "processed_at",
            "source_file",
            "data_source",
        )
        rng = _rng(self.seed, "spotify_audience")
        spend = self.spend_by_act()
        rows = []
        decay = 0.93 ** np.arange(60)
        for act in ACTS:
            trend = act.listeners * (1 + 0.9 * np.arange(len(DAYS)) / len(DAYS))
            weekly = 1 + 0.07 * np.sin(2 * np.pi * np.arange(len(DAYS)) / 7)
            lift = np.convolve(spend[act.name], decay)[: len(DAYS)] * 9.0
            listeners = np.round(trend * weekly * rng.lognormal(0, 0.06, len(DAYS)) + lift).astype(int)
            streams = np.round(listeners * rng.uniform(1.4, 2.1, len(DAYS))).astype(int)
            followers = 1800 + np.cumsum(rng.poisson(listeners * 0.012))
            source = f"spotify_audience_{act.spotify_id}_{SNAPSHOT_TS}.csv"
            for i, day in enumerate(DAYS):
                rows.append(
                    [
                        str(day),
                        listeners[i],
                        streams[i],
                        followers[i],
                        act.spotify_id,
                        act.slug,
                        "2025-07-01T11:58:03",
                        "2025-07-01T12:00:00",
                        source,
                        "spotify_audience",
                    ]
                )
        return header, rows

    @cached_property
    def streams(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Daily (spotify, apple) streams per distributor."""
        rng = _rng(self.seed, "daily_streams")
        t = np.arange(len(DAYS)) / len(DAYS)
        result = {}
        for source, spotify_base, apple_share in (("distrokid", 700.0, 0.12), ("toolost", 90.0, 0.2)):
            spotify = np.round(spotify_base * (1 + 0.8 * t) * rng.lognormal(0, 0.18, len(DAYS))).astype(int)
            apple = np.round(spotify * apple_share * rng.lognormal(0, 0.3, len(DAYS))).astype(int)
            apple[rng.random(len(DAYS)) < 0.03] = 0
            result[source] = (spotify, apple)
        return result

    def distrokid_streams(self) -> tuple[Sequence[str], list[list[Any]]]:
        header, rows = self.tidy_streams()
        return header[:-1], [row[:-1] for row in rows if row[-1] == "distrokid"]

    def tidy_streams(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = ("date", "spotify_streams", "apple_streams", "combined_streams", "source")
        rows = []
        for source in ("distrokid", "toolost"):
            spotify, apple = self.streams[source]
            for i, day in enumerate(DAYS):
                rows.append([str(day), spotify[i], apple[i], spotify[i] + apple[i], source])
        return header, rows

    def linktree(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = ("date", "totalViews", "uniqueViews", "totalClicks", "uniqueClicks", "clickThroughRate")
        rng = _rng(self.seed, "linktree")
        spend = sum(self.spend_by_act().values())
        views = rng.poisson(70 * (1 + 0.5 * np.arange(len(DAYS)) / len(DAYS)) + spend * 6)
        views[rng.random(len(DAYS)) < 0.01] = 0
        unique_views = rng.binomial(views, 0.8)
        clicks = rng.binomial(views, 0.45)
        unique_clicks = rng.binomial(clicks, 0.85)
        rows = [
            [
                str(day),
                views[i],
                unique_views[i],
                clicks[i],
                unique_clicks[i],
                _num(clicks[i] / views[i] if views[i] else 0.0, 4),
            ]
            for i, day in enumerate(DAYS)
        ]
        return header, rows

    def tiktok(self) -> tuple[Sequence[str], list[list[Any]]]:
        header = (
            "artist",
            "zone",
            "date",
            "Video Views",
            "Profile Views",
            "Likes",
            "Comments",
            "Shares",
            "Year",
            "engagement_rate",
            "Followers",
            "new_followers",
        )
        rng = _rng(self.seed, "tiktok")
        rows = []
        for act in ACTS:
            views = np.round(act.tiktok_views * rng.lognormal(0, 0.8, len(DAYS))).astype(int)
            views[rng.random(len(DAYS)) < 0.02] = 0
            profile = rng.binomial(views, 0.03)
            likes = rng.binomial(views, 0.06)
            comments = rng.binomial(views, 0.004)
            shares = rng.binomial(views, 0.005)
            # one follower count per 28-day export, applied to each of its rows
            exports = np.arange(len(DAYS)) // 28
            snapshots = 3000 + np.cumsum(rng.integers(-20, 400, exports.max() + 1))
            followers = snapshots[exports]
            gained = np.maximum(np.diff(followers, prepend=followers[0]), 0)
            for i, day in enumerate(DAYS):
                engagement = (likes[i] + comments[i] + shares[i]) / (views[i] or 1)
                rows.append(
                    [
                        act.handle,
                        act.handle,
                        str(day),
                        views[i],
                        profile[i],
                        likes[i],
                        comments[i],
                        shares[i],
                        str(day)[:4],
                        _num(engagement, 4),
                        followers[i],
                        gained[i],
                    ]
                )
        return header, rows
