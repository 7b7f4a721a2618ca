"""Group-by sums over a large CSV data set, streamed in parallel byte ranges in bounded memory.

A full read of a ten-million-row statement with pyarrow takes about 3 GB. Here the
file is cut at line ends into one byte range per core; each range is parsed by
pyarrow's streaming CSV reader (a few MB at a time, key columns dictionary
encoded) and every batch is reduced to its group sums at once, so memory holds
only the small partial results.

A line end may fall inside a quoted value, so the cuts are a guess that each range
checks as it reads: it counts the double quotes it reads (a search of each block that
costs nothing measurable when there are none). A cut with an odd number of quotes
before it is inside a quoted value; it moves to the next line end outside one, and
the two ranges beside it are read again. When a range fails on a file that has
quotes, the whole file is read again as one range before the error is reported, so
that a file pyarrow reads whole is never refused because of where it was cut.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .lake import (
    Dataset,
    _check_columns,
    _convert_options,
    _data_start,
    _growing_blocks,
    _parse_options,
    _read_error,
    _where,
    csv_header,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

BLOCK_SIZE = 2 << 20
QUOTE = b'"'


class _ByteRange(io.RawIOBase):
    """A read-only view of bytes ``[start, end)`` of an open file (positional reads,
    so several ranges of one file can be read by several threads at once) that
    counts the double quotes it reads."""

    def __init__(self, fd: int, start: int, end: int):
        self.fd, self.position, self.end, self.quotes = fd, start, end, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = min(len(buffer), self.end - self.position)
        if size <= 0:
            return 0
        data = os.pread(self.fd, size, self.position)
        if QUOTE in data:
            self.quotes += _count_quotes(data)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def count_to_end(self) -> int:
        """The quotes of the whole range, counting those pyarrow did not read (it stops at an error)."""
        while self.position < self.end:
            data = os.pread(self.fd, min(1 << 20, self.end - self.position), self.position)
            if not data:
                break
            self.quotes += _count_quotes(data)
            self.position += len(data)
        return self.quotes


def _count_quotes(data: bytes) -> int:
    """The double quotes in ``data``: numpy counts them three times as fast as
    ``bytes.count`` and lets the other ranges' threads run meanwhile."""
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(data, np.uint8) == QUOTE[0]))


@dataclass
class _Part:
    """What reading one byte range gave: its group sums, or the error pyarrow raised."""

    start: int
    end: int
    quotes: int
    tables: list[pa.Table] = field(default_factory=list)
    error: Exception | None = None


def _line_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges covering the data rows of ``path``, each ending at a line end."""
    size = path.stat().st_size
    first = _data_start(path)
    with path.open("rb") as handle:
        cuts = [first]
        for part in range(1, parts):
            handle.seek(max(first + (size - first) * part // parts - 1, cuts[-1]))
            handle.readline()
            cuts.append(max(handle.tell(), cuts[-1]))
        cuts.append(size)
    return [(start, end) for start, end in itertools.pairwise(cuts) if end > start]


def _outside_quotes(path: Path, parts: list[_Part]) -> list[tuple[int, int]]:
    """The ranges of ``parts`` with each cut that has an odd number of quotes before it
    moved to the next line end that has an even number, or dropped when the next cut
    comes first."""
    cuts, inside = [parts[0].start], False
    with path.open("rb") as handle:
        for part, following in itertools.pairwise(parts):
            inside ^= part.quotes % 2 == 1
            cut, moved = part.end, inside
            handle.seek(cut)
            while moved and cut < following.end:
                line = handle.readline()
                moved ^= line.count(QUOTE) % 2 == 1
                cut += len(line)
            if not moved and cut < following.end:
                cuts.append(cut)
    cuts.append(parts[-1].end)
    return list(itertools.pairwise(cuts))


def aggregate_csv(
    dataset: Dataset,
    path: Path,
    by: Sequence[str],
    sums: Sequence[str],
    *,
    threads: int | None = None,
    block_size: int = BLOCK_SIZE,
) -> pd.DataFrame:
    """Sum ``sums`` for each distinct combination of ``by`` over the CSV at ``path``.

    Columns are typed as ``dataset`` declares them (key columns are parsed once per
    distinct value, after the aggregation). The sums are those of a plain read of the
    whole file, whatever the number of ``threads``; a file that cannot be read raises
    the :class:`~bedrot_lab.lake.DatasetError` that :func:`~bedrot_lab.lake.read_dataset`
    raises. Returns a DataFrame with the ``by`` columns and the sums under their own names.
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    header = csv_header(dataset, path)
    _check_columns(dataset, path, header, [*by, *sums])
    convert = _convert_options(dataset, sums)
    convert.include_columns = [*by, *sums]
    convert.column_types = {**convert.column_types, **{key: pa.dictionary(pa.int32(), pa.string()) for key in by}}
    parse = _parse_options(dataset)

    def sum_range(byte_range: tuple[int, int]) -> _Part:
        fd = os.open(path, os.O_RDONLY)
        sources: list[_ByteRange] = []

        def read(size: int) -> list[pa.Table]:
            sources.append(_ByteRange(fd, *byte_range))
            reader = pacsv.open_csv(
                io.BufferedReader(sources[-1], buffer_size=1 << 20),
                read_options=pacsv.ReadOptions(column_names=header, block_size=size),
                parse_options=parse,
                convert_options=convert,
            )
            return [_decoded(_group_sum(pa.Table.from_batches([batch]), by, sums)) for batch in reader]

        try:
            try:
                tables, error = _growing_blocks(read, block_size), None
            except pa.ArrowInvalid as exc:
                tables, error = [], exc
            return _Part(*byte_range, quotes=sources[-1].count_to_end(), tables=tables, error=error)
        finally:
            os.close(fd)

    ranges = _line_ranges(path, threads or os.cpu_count() or 1)
    with ThreadPoolExecutor(max(len(ranges), 1), thread_name_prefix="bedrot-aggregate") as pool:
        parts = list(pool.map(sum_range, ranges))
        aligned = _outside_quotes(path, parts) if parts else []
        if aligned != ranges:
            read_once = {(part.start, part.end): part for part in parts}
            again = [byte_range for byte_range in aligned if byte_range not in read_once]
            read_once.update(zip(again, pool.map(sum_range, again)))
            parts = [read_once[byte_range] for byte_range in aligned]
    if len(parts) > 1 and any(part.error for part in parts) and any(part.quotes for part in parts):
        parts = [sum_range((parts[0].start, parts[-1].end))]
    error = next((part.error for part in parts if part.error), None)
    if error:
        raise _read_error(dataset, path, header, error)
    partials = [table for part in parts for table in part.tables]
    if partials:
        totals = _group_sum(pa.concat_tables(partials), by, sums, use_threads=True).to_pandas()
    else:
        totals = _empty(dataset, by, sums)
    return _typed_keys(dataset, path, totals, by)


def _group_sum(table: pa.Table, by: Sequence[str], sums: Sequence[str], use_threads: bool = False) -> pa.Table:
    grouped = table.group_by(list(by), use_threads=use_threads).aggregate([(c, "sum") for c in sums])
    return grouped.select([*by, *(f"{c}_sum" for c in sums)]).rename_columns([*by, *sums])


def _decoded(table: pa.Table) -> pa.Table:
    """Key columns as plain strings: every batch has dictionaries of its own."""
    import pyarrow as pa
    from pyarrow import types

    for index, column in enumerate(table.schema):
        if types.is_dictionary(column.type):
            table = table.set_column(index, column.name, table.column(index).cast(pa.string()))
    return table


def _typed_keys(dataset: Dataset, path: Path, frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Parse the (few) distinct key values as their declared types."""
    import pandas as pd

    from .lake import COLUMN_TYPES, DatasetError

    formats = {"date": "%Y-%m-%d", "month": "%Y-%m", "datetime": "ISO8601"}
    for key in by:
        kind = dataset.columns.get(key, "string")
        if kind == "string":
            continue
        values = frame[key]
        try:
            if kind in formats:
                frame[key] = pd.to_datetime(values, format=formats[kind])
            else:
                frame[key] = values.astype({"int": "int64", "float": "float64", "bool": "bool"}[kind])
        except (ValueError, TypeError):
            parsed = pd.to_datetime(values, format=formats[kind], errors="coerce") if kind in formats \
                else pd.to_numeric(values, errors="coerce")
            bad = values[parsed.isna() & values.notna()].iloc[0]
            index = list(csv_header(dataset, path)).index(key)
            raise DatasetError(
                f"{path}: column {key!r} of data set {dataset.name!r} should be {kind} "
                f"({COLUMN_TYPES[kind]}), but {_where(path, dataset.delimiter, index, bad)}"
            ) from None
    return frame


def _empty(dataset: Dataset, by: Sequence[str], sums: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    kinds = {"int": "int64", "float": "float64"}
    return pd.DataFrame({**{k: pd.Series([], dtype="object") for k in by},
                         **{s: pd.Series([], dtype=kinds.get(dataset.columns.get(s, "float"), "float64")) for s in sums}})
