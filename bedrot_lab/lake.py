"""The lake's named data sets: where each lives, its declared columns, and reading it."""

from __future__ import annotations

import csv
import json
import re
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import BedrotLabError
from .fsutil import atomic_write, file_sha256

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
#: the layout of a digest cache (see :func:`cached_sha256`); a cache without a version is version 1
DIGESTS_VERSION = 1
T = TypeVar("T")


class DatasetError(BedrotLabError):
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
    A file that cannot be read raises :class:`DatasetError` naming the file, the
    column, an example row and its line: a missing column, a value of the wrong
    type, bytes that are not UTF-8 (shown), a row with too few or too many fields,
    a row longer than :data:`MAX_BLOCK_SIZE`.
    """
    table = read_arrow(dataset, path, columns)
    return table.to_pandas()


def read_text(dataset: Dataset, path: Path) -> pd.DataFrame:
    """Every column of the file behind ``dataset`` as the text it holds (CSV: nothing
    parsed, an empty value as ``""``), so that a checker can count bad values instead
    of failing on the first; errors as :func:`read_dataset`'s. Parquet is read as stored."""
    if dataset.format == "parquet":
        import pandas as pd

        return pd.read_parquet(path)
    if dataset.format != "csv":
        raise DatasetError(f"data set {dataset.name!r}: cannot read {path.suffix} files ({path})")
    header = csv_header(dataset, path)
    as_text = replace(dataset, columns=dict.fromkeys(header, "string"))
    return _read_csv(as_text, path, header).to_pandas()


def read_arrow(dataset: Dataset, path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """Like :func:`read_dataset`, as a pyarrow Table."""
    wanted = list(columns or dataset.columns)
    if dataset.format == "parquet":
        return _read_parquet(dataset, path, wanted)
    if dataset.format == "csv":
        return _read_csv(dataset, path, wanted)
    raise DatasetError(f"data set {dataset.name!r}: cannot read {path.suffix} files ({path})")


#: the largest block, in bytes, pyarrow may parse a CSV file in. A block must hold whole
#: rows (a row up to a block long is always read), so a reader that meets a longer row
#: starts again with blocks four times larger, up to this size.
MAX_BLOCK_SIZE = 256 << 20


def _read_csv(dataset: Dataset, path: Path, wanted: list[str]) -> pa.Table:
    header = csv_header(dataset, path)
    _check_columns(dataset, path, header, wanted)
    return read_csv_table(dataset, path, _convert_options(dataset, wanted), header)


def read_csv_table(dataset: Dataset, path: Path, convert: Any, header: list[str] | None = None) -> pa.Table:
    """The CSV file ``path`` of ``dataset`` read whole with pyarrow's ConvertOptions
    ``convert``: values may hold line ends, rows up to :data:`MAX_BLOCK_SIZE` are read,
    and an error names the file, the column, the row and its line (:class:`DatasetError`)."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    header = header if header is not None else csv_header(dataset, path)
    wanted = list(convert.include_columns) or header
    if _data_start(path) >= path.stat().st_size:
        return _empty_table(convert, wanted)

    def read(block_size: int) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=block_size),
            parse_options=_parse_options(dataset),
            convert_options=convert,
        )

    try:
        return _growing_blocks(read, 1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise _read_error(dataset, path, header, exc) from None


def _growing_blocks(read: Callable[[int], T], block_size: int) -> T:
    """``read(block_size)``, called again with blocks four times larger while pyarrow
    meets a row longer than a block, up to :data:`MAX_BLOCK_SIZE`."""
    import pyarrow as pa

    while True:
        try:
            return read(block_size)
        except pa.ArrowInvalid as exc:
            if not _row_too_long(exc) or block_size >= MAX_BLOCK_SIZE:
                raise
            block_size = min(4 * block_size, MAX_BLOCK_SIZE)


def _row_too_long(exc: Exception) -> bool:
    return "straddling object straddles" in str(exc)


def _parse_options(dataset: Dataset) -> Any:
    from pyarrow import csv as pacsv

    # quoted values may hold line ends; on files without quotes this costs nothing measurable
    return pacsv.ParseOptions(delimiter=dataset.delimiter, newlines_in_values=True)


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


def _empty_table(convert: Any, wanted: list[str]) -> pa.Table:
    """What pyarrow reads from a file with a header and no rows (it refuses one without a final line end)."""
    import pyarrow as pa

    return pa.schema([(c, convert.column_types.get(c, pa.null())) for c in wanted]).empty_table()


def csv_header(dataset: Dataset, path: Path) -> list[str]:
    """The column names in the first row of the CSV file ``path`` (a BOM left out)."""
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            header = next(csv.reader(handle, delimiter=dataset.delimiter), [])
    except OSError as exc:
        raise DatasetError(f"data set {dataset.name!r}: cannot read {path} ({exc.strerror})") from None
    bad = next((name for name in header if not _is_utf8(name)), None)
    if bad is not None:
        raw = bad.encode("utf-8", "surrogateescape")
        raise DatasetError(f"{path}: the header (line 1) of data set {dataset.name!r} has bytes that are not "
                           f"UTF-8: {_shown_bytes(raw)}; {_utf8_advice(raw)}")
    return header


def _data_start(path: Path) -> int:
    """The offset of the first data row: past the header line, and past the line ends a
    quoted column name may hold."""
    with path.open("rb") as handle:
        inside = False
        while line := handle.readline():
            inside ^= line.count(b'"') % 2 == 1
            if not inside:
                break
        return handle.tell()


def _check_columns(dataset: Dataset, path: Path, present: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], list(present), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DatasetError(
            f"{path}: data set {dataset.name!r} is missing column {missing[0]!r}{hint}"
            f" (has: {', '.join(present) or 'no header'})"
        )


_ARROW_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to [^:]+: (?:invalid value '(.*)'|invalid UTF8 data)",
    re.DOTALL,
)
_ARROW_FIELD_COUNT_ERROR = re.compile(r"Expected \d+ columns, got \d+")


def _read_error(dataset: Dataset, path: Path, header: list[str], exc: Exception) -> DatasetError:
    """Turn what pyarrow could not read into one line naming the column, an example row and its line.

    pyarrow numbers no rows when values may hold line ends, so the row is found again
    with the csv module.
    """
    if _row_too_long(exc):
        return long_row_error(dataset, path, header)
    match = _ARROW_CONVERSION_ERROR.search(str(exc))
    if match:
        index, value = int(match.group(1)), match.group(2)
        if value is not None:
            return type_error(dataset, path, header, index, value)
        return utf8_error(dataset, path, header, [index])
    if _ARROW_FIELD_COUNT_ERROR.search(str(exc)):
        found = field_count_error(dataset, path, header)
        if found:
            return found
    return DatasetError(f"{path}: data set {dataset.name!r} cannot be read: {exc}")


def type_error(dataset: Dataset, path: Path, header: list[str], index: int, value: str) -> DatasetError:
    """Column ``index`` holds ``value``, which is not of its declared type: one line naming
    the file, the column, the data row and its line."""
    column = header[index] if index < len(header) else f"#{index}"
    kind = dataset.columns.get(column, "string")
    return DatasetError(f"{path}: column {column!r} of data set {dataset.name!r} should be {kind} "
                        f"({COLUMN_TYPES[kind]}), but {_where(path, dataset.delimiter, index, value)}")


def utf8_error(dataset: Dataset, path: Path, header: list[str], indexes: Sequence[int] | None = None) -> DatasetError:
    """The first field (of the columns at ``indexes``, else of any) whose bytes are not UTF-8,
    shown with its column, data row and line, and how to convert the file."""
    wanted = range(len(header)) if indexes is None else indexes
    found = _first_row(path, dataset.delimiter,
                       lambda row: any(i < len(row) and not _is_utf8(row[i]) for i in wanted))
    if not found:
        return DatasetError(f"{path}: data set {dataset.name!r} has bytes that are not UTF-8")
    number, line, row = found
    index = next(i for i in wanted if i < len(row) and not _is_utf8(row[i]))
    column = header[index] if index < len(header) else f"#{index}"
    raw = row[index].encode("utf-8", "surrogateescape")
    return DatasetError(f"{path}: column {column!r} of data set {dataset.name!r} should be UTF-8 text, but data "
                        f"row {number} has {_shown_bytes(raw)} (line {line}); {_utf8_advice(raw)}")


def field_count_error(dataset: Dataset, path: Path, header: list[str]) -> DatasetError | None:
    """The first data row whose number of fields differs from the header's, if any."""
    found = _first_row(path, dataset.delimiter, lambda row: len(row) != len(header))
    if not found:
        return None
    number, line, row = found
    return DatasetError(
        f"{path}: data row {number} (line {line}) of data set {dataset.name!r} has {len(row)} fields, the header "
        f"{len(header)}; a value that holds the delimiter {dataset.delimiter!r} or a line end must be in "
        'double quotes (and a double quote in it doubled: "")'
    )


def _where(path: Path, delimiter: str, index: int, value: str) -> str:
    """``data row N has 'value' (line L)``: the first row whose field ``index`` is ``value``
    as the reader shows it (bytes that are not UTF-8 shown as U+FFFD by pyarrow, as ``?`` by DuckDB)."""

    def same(row: list[str]) -> bool:
        if index >= len(row):
            return False
        field = row[index]
        if field == value or _is_utf8(field):
            return field == value
        lossy = field.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return value in (lossy, lossy.replace("\ufffd", "?"))

    found = _first_row(path, delimiter, same)
    if not found:
        return f"a row has {value!r}"
    number, line, row = found
    return f"data row {number} has {_shown(row[index])} (line {line})"


def long_row_error(dataset: Dataset, path: Path, header: list[str]) -> DatasetError:
    """The first row longer than :data:`MAX_BLOCK_SIZE`: its line, size and widest column."""
    limit = MAX_BLOCK_SIZE

    def too_long(row: list[str]) -> bool:
        return 4 * sum(map(len, row)) > limit and _row_bytes(row) > limit

    found = _first_row(path, dataset.delimiter, too_long)
    advice = "keep values this large out of the CSV, for example in files of their own named in the column"
    if not found:
        return DatasetError(f"{path}: data set {dataset.name!r} has a row of more than {limit / 2**20:.1f} MiB, "
                            f"the most a row may take; {advice}")
    number, line, row = found
    sizes = [len(field.encode("utf-8", "surrogateescape")) for field in row]
    widest = max(range(len(row)), key=sizes.__getitem__)
    column = header[widest] if widest < len(header) else f"#{widest}"
    return DatasetError(
        f"{path}: data row {number} (line {line}) of data set {dataset.name!r} is {_row_bytes(row) / 2**20:.1f} MiB, "
        f"more than the {limit / 2**20:.1f} MiB a row may take (column {column!r} holds "
        f"{sizes[widest] / 2**20:.1f} MiB of it); {advice}"
    )


def _row_bytes(row: list[str]) -> int:
    return sum(len(field.encode("utf-8", "surrogateescape")) for field in row) + len(row)


_FIELD_LIMIT = threading.Lock()


def _first_row(path: Path, delimiter: str, test: Callable[[list[str]], bool]) -> tuple[int, int, list[str]] | None:
    """The first data row whose fields pass ``test``, as (data row number, line number, fields);
    bytes that are not UTF-8 come as surrogates (``errors="surrogateescape"``). Empty lines
    are not rows, as for pyarrow and pandas."""
    with _FIELD_LIMIT, path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        # the limit (128 KiB by default) is the csv module's, for the whole process: put it back
        limit = csv.field_size_limit(sys.maxsize)
        try:
            reader = csv.reader(handle, delimiter=delimiter)
            next(reader, None)
            number, line = 0, reader.line_num + 1
            for row in reader:
                if row:
                    number += 1
                    if test(row):
                        return number, line, row
                line = reader.line_num + 1
        finally:
            csv.field_size_limit(limit)
    return None


def _is_utf8(text: str) -> bool:
    """False when ``text`` holds bytes that were not UTF-8 (read with ``errors="surrogateescape"``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: str) -> str:
    """A field as the file has it: its text, or its bytes when they are not UTF-8; long ones cut."""
    if not _is_utf8(value):
        return _shown_bytes(value.encode("utf-8", "surrogateescape"))
    return repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value):,} characters)"


def _shown_bytes(raw: bytes) -> str:
    """``raw`` as a bytes literal; a long one cut around its first byte that is not UTF-8."""
    shown = _around_bad_byte(raw)
    if shown == raw:
        return repr(raw)
    start = raw.index(shown)
    return f"{'...' if start else ''}{shown!r}... ({len(raw):,} bytes)"


def _around_bad_byte(raw: bytes) -> bytes:
    if len(raw) <= 80:
        return raw
    try:
        raw.decode()
        start = 0
    except UnicodeDecodeError as exc:
        start = max(exc.start - 20, 0)
    return raw[start:start + 40]


def _utf8_advice(raw: bytes) -> str:
    return (f"the lake's files are UTF-8; as Latin-1 these bytes read {_around_bad_byte(raw).decode('latin-1')!r}: "
            "if the file was saved as Latin-1 or Windows-1252, convert it (for example `iconv -f cp1252 -t utf-8`)")


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
    inode, so a large input is hashed once, not at every run that reads it.

    The cache holds ``"version"`` (:data:`DIGESTS_VERSION`) and an entry per absolute
    path. One written by a newer bedrot-lab is neither used nor overwritten.
    """
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    key = str(path.resolve())
    cache = _read_digests(cache_file)
    entry = cache.get(key) if cache is not None else None
    if isinstance(entry, dict) and entry.get("stamp") == stamp:
        return str(entry["sha256"])
    digest = file_sha256(path)
    if cache is not None:
        cache[key] = {"stamp": stamp, "sha256": digest}
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, json.dumps({"version": DIGESTS_VERSION, **cache}).encode())
        except OSError:
            pass  # a cache that cannot be written only costs time
    return digest


def _read_digests(cache_file: Path) -> dict[str, Any] | None:
    """The entries of digest cache ``cache_file`` ({} when it is missing or unreadable),
    or None when a newer bedrot-lab wrote it."""
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict):
        return {}
    version = cache.pop("version", 1)
    if not isinstance(version, int):
        return {}
    return cache if version <= DIGESTS_VERSION else None
