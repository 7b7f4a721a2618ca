"""The DistroKid statement: its stores and countries, drawn in batches that bound memory at any --scale."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .catalog import TRACKS, random_stream

if TYPE_CHECKING:
    import pyarrow as pa

#: statement rows written when no ``scale`` is given
DEFAULT_STATEMENT_ROWS = 4_000
#: statement rows generated and written at a time, which bounds memory at any scale
BATCH_ROWS = 250_000

SALE_MONTHS = np.arange("2024-01", "2025-07", dtype="datetime64[M]")
#: first calendar month a statement may be reported in; reports lag sale months by 1-3 months
FIRST_REPORT_MONTH = np.datetime64("2024-02", "M")

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


def write_statement(
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

    rng = random_stream(seed, "dk_bank_details")
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
