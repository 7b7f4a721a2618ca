"""Group-by sums over a large CSV data set, streamed in parallel byte ranges in bounded memory.

A full read of a ten-million-row statement with pyarrow takes about 3 GB. Here the
file is cut at line ends into one byte range per core; each range is parsed by
pyarrow's streaming CSV reader (a few MB at a time, key columns dictionary
encoded) and every batch is reduced to its group sums at once, so memory holds
only the small partial results.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from .lake import Dataset, _check_columns, _conversion_error, _convert_options, _csv_header

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

BLOCK_SIZE = 2 << 20


class _ByteRange(io.RawIOBase):
    """A read-only view of bytes ``[start, end)`` of an open file (positional reads,
    so several ranges of one file can be read by several threads at once)."""

    def __init__(self, fd: int, start: int, end: int):
        self.fd, self.position, self.end = fd, start, end

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        size = min(len(buffer), self.end - self.position)
        if size <= 0:
            return 0
        data = os.pread(self.fd, size, self.position)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def _line_ranges(path: Path, parts: int) -> list[tuple[int, int]]:
    """``parts`` byte ranges covering the data rows of ``path``, each ending at a line end."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.readline()
        first = handle.tell()
        cuts = [first]
        for part in range(1, parts):
            handle.seek(max(first + (size - first) * part // parts - 1, cuts[-1]))
            handle.readline()
            cuts.append(max(handle.tell(), cuts[-1]))
        cuts.append(size)
    return [(start, end) for start, end in zip(cuts, cuts[1:]) if end > start]


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
    distinct value, after the aggregation); a missing column or a value of the
    wrong type raises :class:`~bedrot_lab.lake.DatasetError` naming the file, the
    column and an example row. Returns a DataFrame with the ``by`` columns and the
    sums under their own names.
    """
    import pyarrow as pa
    from pyarrow import csv as pacsv

    header = _csv_header(dataset, path)
    _check_columns(dataset, path, header, [*by, *sums])
    convert = _convert_options(dataset, sums)
    convert.include_columns = [*by, *sums]
    convert.column_types = {**convert.column_types, **{key: pa.dictionary(pa.int32(), pa.string()) for key in by}}
    read = pacsv.ReadOptions(column_names=header, block_size=block_size)
    parse = pacsv.ParseOptions(delimiter=dataset.delimiter)

    def scan(byte_range: tuple[int, int]) -> list[pa.Table]:
        fd = os.open(path, os.O_RDONLY)
        try:
            source = io.BufferedReader(_ByteRange(fd, *byte_range), buffer_size=1 << 20)
            reader = pacsv.open_csv(source, read_options=read, parse_options=parse, convert_options=convert)
            return [_decoded(_group_sum(pa.Table.from_batches([batch]), by, sums)) for batch in reader]
        except pa.ArrowInvalid as exc:
            raise _conversion_error(dataset, path, header, exc, row_known=False) from None
        finally:
            os.close(fd)

    ranges = _line_ranges(path, threads or os.cpu_count() or 1)
    with ThreadPoolExecutor(max(len(ranges), 1), thread_name_prefix="bedrot-scan") as pool:
        partials = [table for tables in pool.map(scan, ranges) for table in tables]
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
    import pyarrow.types as types

    for index, field in enumerate(table.schema):
        if types.is_dictionary(field.type):
            table = table.set_column(index, field.name, table.column(index).cast(pa.string()))
    return table


def _typed_keys(dataset: Dataset, path: Path, frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Parse the (few) distinct key values as their declared types."""
    import pandas as pd

    from .lake import COLUMN_TYPES, DatasetError, _find_row

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
            index = list(_csv_header(dataset, path)).index(key)
            raise DatasetError(
                f"{path}: column {key!r} of data set {dataset.name!r} should be {kind} "
                f"({COLUMN_TYPES[kind]}), but {_find_row(path, dataset.delimiter, index, bad)} has {bad!r}"
            ) from None
    return frame


def _empty(dataset: Dataset, by: Sequence[str], sums: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    kinds = {"int": "int64", "float": "float64"}
    return pd.DataFrame({**{k: pd.Series([], dtype="object") for k in by},
                         **{s: pd.Series([], dtype=kinds.get(dataset.columns.get(s, "float"), "float64")) for s in sums}})
