"""What an analysis needs to know of a CSV file to read it the way the lake's loader does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import lake

if TYPE_CHECKING:
    from pathlib import Path

    from ..lake import Dataset


def csv_header(dataset: Dataset, path: Path) -> list[str]:
    """The column names in the first row of ``path`` (a BOM left out); a header that is not
    UTF-8 is a :class:`~bedrot_lab.DatasetError` naming it."""
    return lake.csv_header(dataset, path)


def has_data_rows(path: Path) -> bool:
    """Whether ``path`` holds anything after its header, as the loader decides (a header whose
    quoted names hold line ends is one row)."""
    return lake._data_start(path) < path.stat().st_size


def max_block_size() -> int:
    """The largest block, in bytes, the loader reads a CSV file in (a row may be this long)."""
    return lake.MAX_BLOCK_SIZE
