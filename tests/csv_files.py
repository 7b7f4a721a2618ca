"""DistroKid statements written to disk in the shapes the lake meets, and a plain read to check readers against."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bedrot_lab.builtin.datasets import CATALOG, DK_BANK_COLUMNS
from bedrot_lab.lake import Dataset

if TYPE_CHECKING:
    import pandas as pd

    from bedrot_lab.query import QueryEngine

DK_BANK = next(dataset for dataset in CATALOG if dataset.name == "dk_bank_details")
HEADER = list(DK_BANK_COLUMNS)
STORES = ["Spotify", "Apple Music", "YouTube (Ads)", "TikTok", "Amazon Unlimited (Streaming)"]
TITLES = ["PAPER SATELLITES", "IVORY STATIC (feat. KAI MERIDIAN)", "SONG, PT. 2", 'THE "LONG" GOODBYE', "ÉTÉ, ÇA VA"]


def statement_rows(count: int, *, multiline: float = 0.0, newline: str = "\n", seed: int = 7) -> list[list[str]]:
    """``count`` statement rows; a share ``multiline`` of them has a title of two lines, the first long."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        title = rng.choice(TITLES)
        if rng.random() < multiline:
            title = f"{title} {'~' * 1500}{newline}(LIVE)"
        rows.append([
            "2025-03-11", rng.choice(["2025-01", "2025-02"]), rng.choice(STORES), rng.choice(["GLASS ORCHID", "NOVA VANTA"]),
            title, "QZGO72300104", "196871110105", str(rng.randint(0, 50)), "100", "Song", rng.choice(["US", "DE", "BR"]),
            "0", f"{rng.uniform(-0.002, 0.05):.8f}",
        ])
    return rows


def write_statement(path: Path, rows: Sequence[Sequence[str]], *, newline: str = "\n", bom: bool = False,
                    trailing_newline: bool = True) -> Path:
    """Write ``rows`` under the catalog's header as a CSV quoted the way pandas and Excel quote it."""
    text = io.StringIO()
    csv.writer(text, lineterminator=newline).writerows([HEADER, *rows])
    body = text.getvalue() if trailing_newline else text.getvalue()[: -len(newline)]
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode())
    return path


def plain_read(path: Path) -> list[dict[str, str]]:
    """Every row of the CSV at ``path``, read whole by the csv module."""
    limit = csv.field_size_limit(1 << 30)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    finally:
        csv.field_size_limit(limit)


def plain_sums(path: Path, by: Sequence[str], sums: Sequence[str]) -> dict[tuple[str, ...], list[float]]:
    """Sums of ``sums`` per distinct ``by`` from :func:`plain_read`."""
    totals: dict[tuple[str, ...], list[float]] = {}
    for row in plain_read(path):
        total = totals.setdefault(tuple(row[key] for key in by), [0.0] * len(sums))
        for index, column in enumerate(sums):
            total[index] += float(row[column])
    return totals


def line_of(body: bytes, marker: bytes) -> int:
    """The line number (from 1) on which ``marker`` starts."""
    return body[: body.index(marker)].count(b"\n") + 1


def frame_sums(frame: pd.DataFrame, by: Sequence[str], sums: Sequence[str]) -> dict[tuple[str, ...], list[float]]:
    """The same shape as :func:`plain_sums`, from an aggregated DataFrame."""
    return {tuple(row[:len(by)]): list(row[len(by):]) for row in frame[[*by, *sums]].itertuples(index=False)}


def assert_same_sums(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, values in expected.items():
        assert actual[key] == pytest.approx(values, rel=1e-9, abs=1e-9), key


def engine_for(dataset: Dataset, path: Path, *, threads: int = 0, memory_limit: str = "50%",
               progress: Callable[[str | None], None] | None = None) -> QueryEngine:
    """A query engine whose catalog is ``dataset``, read from the file at ``path``, outside a run."""
    from dataclasses import replace

    from bedrot_lab.config import Settings
    from bedrot_lab.query import QueryEngine

    settings = Settings(root=path.parent, config_file=None, zones={"curated": path.parent}, tracking_uri="",
                        artifact_root=path.parent, threads=threads, memory_limit=memory_limit)
    return QueryEngine(settings, {dataset.name: replace(dataset, path=path.name, zone="curated")}, progress)


def aggregate(dataset: Dataset, path: Path, by: Sequence[str], sums: Sequence[str], *, threads: int = 0,
              memory_limit: str = "50%") -> pd.DataFrame:
    """``ctx.aggregate`` over the file at ``path`` read as ``dataset``, outside a run."""
    engine = engine_for(dataset, path, threads=threads, memory_limit=memory_limit)
    try:
        return engine.aggregate(dataset.name, by, sums)
    finally:
        engine.close()
