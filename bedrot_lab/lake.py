"""The lake's named data sets: where each lives, its declared columns, and reading it."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from .config import Settings

#: declared column types and what they mean in the files
COLUMN_TYPES = {
    "string": "text",
    "int": "whole number",
    "float": "number",
    "bool": "true/false",
    "date": "YYYY-MM-DD",
    "month": "YYYY-MM",
    "datetime": "ISO date and time",
}
TIMESTAMP_FORMATS = ("%Y-%m-%d", "%Y-%m", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S")


class DatasetError(Exception):
    """A data set that cannot be read as declared; the message names file and column."""


@dataclass(frozen=True)
class Dataset:
    """A named data set of the lake.

    ``path`` is relative to its zone folder and may be a glob, in which case the
    newest match by name (the lake's files carry sortable timestamps) is read.
    ``columns`` maps each column the readers rely on to one of :data:`COLUMN_TYPES`;
    a file may hold more columns than declared. ``ranges`` gives the valid
    ``(low, high)`` of numeric columns, either end ``None`` for open; ``key`` the
    columns that identify a row; ``min_rows`` the fewest rows a valid file has.
    Together they are the data set's contract when a run's output is promoted.
    """

    name: str
    path: str
    zone: str = "curated"
    columns: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    delimiter: str = ","
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    key: tuple[str, ...] = ()
    min_rows: int = 0

    def __post_init__(self) -> None:
        unknown = {c: t for c, t in self.columns.items() if t not in COLUMN_TYPES}
        if unknown:
            column, kind = next(iter(unknown.items()))
            raise ValueError(
                f"data set {self.name!r}: column {column!r} has unknown type {kind!r}; "
                f"use one of {', '.join(COLUMN_TYPES)}"
            )

    @property
    def format(self) -> str:
        suffix = Path(self.path).suffix.lower().lstrip(".")
        return {"tsv": "csv", "txt": "csv"}.get(suffix, suffix)

    def locate(self, settings: Settings) -> Path:
        """The file this data set resolves to now; :class:`DatasetError` if none."""
        folder = settings.zone(self.zone)
        if any(ch in self.path for ch in "*?["):
            matches = sorted(folder.glob(self.path))
            if not matches:
                raise DatasetError(f"data set {self.name!r}: no file matches {folder / self.path}")
            return matches[-1]
        path = folder / self.path
        if not path.is_file():
            raise DatasetError(f"data set {self.name!r}: file not found: {path}")
        return path


def read_dataset(dataset: Dataset, path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read ``path`` as ``dataset`` declares it and return a pandas DataFrame.

    Only the declared columns (or ``columns``) are kept; dates become datetime64.
    A missing column or a value of the wrong type raises :class:`DatasetError`
    naming the file, the column and an example row.
    """
    table = read_arrow(dataset, path, columns)
    return table.to_pandas()


def read_arrow(dataset: Dataset, path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Like :func:`read_dataset`, as a pyarrow Table."""
    wanted = list(columns or dataset.columns)
    if dataset.format == "parquet":
        return _read_parquet(dataset, path, wanted)
    if dataset.format == "csv":
        return _read_csv(dataset, path, wanted)
    raise DatasetError(f"data set {dataset.name!r}: cannot read {path.suffix} files ({path})")


def iter_csv_batches(
    dataset: Dataset, path: Path, columns: Sequence[str] | None = None, block_size: int = 64 << 20
) -> Iterator[pa.RecordBatch]:
    """Stream a CSV data set as record batches, typed as declared, in bounded memory."""
    from pyarrow import csv as pacsv

    wanted = list(columns or dataset.columns)
    header = _csv_header(dataset, path)
    _check_columns(dataset, path, header, wanted)
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_size),
        parse_options=pacsv.ParseOptions(delimiter=dataset.delimiter),
        convert_options=_convert_options(dataset, wanted),
    )
    try:
        yield from reader
    except Exception as exc:
        raise _conversion_error(dataset, path, header, exc) from None


def _read_csv(dataset: Dataset, path: Path, wanted: list[str]) -> pa.Table:
    from pyarrow import csv as pacsv

    header = _csv_header(dataset, path)
    _check_columns(dataset, path, header, wanted)
    try:
        return pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=dataset.delimiter),
            convert_options=_convert_options(dataset, wanted),
        )
    except Exception as exc:
        raise _conversion_error(dataset, path, header, exc) from None


def _convert_options(dataset: Dataset, wanted: list[str]) -> Any:
    import pyarrow as pa
    from pyarrow import csv as pacsv

    arrow_types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "date": pa.timestamp("s"),
        "month": pa.timestamp("s"),
        "datetime": pa.timestamp("s"),
    }
    return pacsv.ConvertOptions(
        include_columns=wanted,
        column_types={c: arrow_types[t] for c, t in dataset.columns.items() if c in wanted},
        timestamp_parsers=list(TIMESTAMP_FORMATS),
        strings_can_be_null=False,
    )


def _csv_header(dataset: Dataset, path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return next(csv.reader(handle, delimiter=dataset.delimiter), [])
    except OSError as exc:
        raise DatasetError(f"data set {dataset.name!r}: cannot read {path} ({exc.strerror})") from None


def _check_columns(dataset: Dataset, path: Path, present: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DatasetError(
            f"{path}: data set {dataset.name!r} is missing column {missing[0]!r}"
            f" (has: {', '.join(present) or 'no header'})"
        )


_ARROW_ROW_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #(\d+): )?CSV conversion error to (\w+)[^']*'(.*)'")


def _conversion_error(
    dataset: Dataset, path: Path, header: list[str], exc: Exception, row_known: bool = True
) -> DatasetError:
    """Turn pyarrow's conversion error into one line naming the column and an example row.

    ``row_known`` is False when pyarrow's row number is relative to part of the file.
    """
    match = _ARROW_ROW_ERROR.search(str(exc))
    if not match:
        return DatasetError(f"{path}: data set {dataset.name!r} cannot be read: {exc}")
    index, row, _, value = match.groups()
    column = header[int(index)] if int(index) < len(header) else f"#{index}"
    kind = dataset.columns.get(column, "string")
    where = f"row {int(row) - 1}" if row and row_known else _find_row(path, dataset.delimiter, int(index), value)
    return DatasetError(
        f"{path}: column {column!r} of data set {dataset.name!r} should be {kind} "
        f"({COLUMN_TYPES[kind]}), but {where} has {value!r}"
    )


def _find_row(path: Path, delimiter: str, index: int, value: str) -> str:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter=delimiter)):
            if number and index < len(row) and row[index] == value:
                return f"data row {number}"
    return "a row"


def _read_parquet(dataset: Dataset, path: Path, wanted: list[str]) -> pa.Table:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    _check_columns(dataset, path, schema.names, wanted)
    table = pq.read_table(path, columns=wanted)
    for column in wanted:
        kind = dataset.columns.get(column)
        if kind and not _arrow_type_fits(table.schema.field(column).type, kind):
            raise DatasetError(
                f"{path}: column {column!r} of data set {dataset.name!r} should be {kind}, "
                f"but the file stores {table.schema.field(column).type}"
            )
    return table


def _arrow_type_fits(arrow_type: Any, kind: str) -> bool:
    import pyarrow.types as t

    checks = {
        "string": lambda x: t.is_string(x) or t.is_large_string(x) or t.is_dictionary(x),
        "int": t.is_integer,
        "float": lambda x: t.is_floating(x) or t.is_integer(x) or t.is_decimal(x),
        "bool": t.is_boolean,
        "date": lambda x: t.is_timestamp(x) or t.is_date(x),
        "month": lambda x: t.is_timestamp(x) or t.is_date(x) or t.is_string(x),
        "datetime": lambda x: t.is_timestamp(x) or t.is_date(x),
    }
    return checks[kind](arrow_type)


def cached_sha256(path: Path, cache_file: Path) -> str:
    """sha256 of ``path``, remembered in ``cache_file`` (JSON) by path, size, mtime and
    inode, so a large input is hashed once, not at every run that reads it."""
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    key = str(path.resolve())
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    digest = file_sha256(path)
    cache[key] = {"stamp": stamp, "sha256": digest}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(cache))
        os.replace(temporary, cache_file)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return digest


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
