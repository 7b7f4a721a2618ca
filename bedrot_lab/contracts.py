"""Contracts of curated data sets: what a file must satisfy before it may enter 4_curated/."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .lake import COLUMN_TYPES

if TYPE_CHECKING:
    import pyarrow as pa

    from .lab import Lab

CONTRACTS_DIR = "_contracts"
CONTRACT_KEYS = {"columns", "not_null", "unique", "ranges", "min_rows"}


@dataclass(frozen=True)
class Contract:
    """Rules for one curated file: typed columns, non-null columns, unique key
    columns, value ranges and a minimum row count."""

    path: str
    columns: Mapping[str, str] = field(default_factory=dict)
    not_null: tuple[str, ...] = ()
    unique: tuple[str, ...] = ()
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)
    min_rows: int = 0
    source: str = ""

    def check(self, data: DataView) -> list[str]:
        """Every way ``data`` breaks this contract, one line each (empty when it complies)."""
        problems = []
        names = set(data.schema.names)
        for column, kind in self.columns.items():
            if column not in names:
                problems.append(f"column {column!r} is missing")
            elif not _fits(data.schema.field(column).type, kind):
                problems.append(f"column {column!r} should be {kind}, but is {data.schema.field(column).type}")
        if data.num_rows < self.min_rows:
            problems.append(f"has {data.num_rows} rows, fewer than the {self.min_rows} required")
        for column in self.not_null:
            nulls = data.stats(column)[0] if column in names else 0
            if nulls:
                problems.append(f"column {column!r} has {nulls} empty values")
        for column, (low, high) in self.ranges.items():
            if column not in names or data.num_rows == 0:
                continue
            _, smallest, largest = data.stats(column)
            if low is not None and smallest is not None and smallest < low:
                problems.append(f"column {column!r} has values below {low} (smallest {smallest})")
            if high is not None and largest is not None and largest > high:
                problems.append(f"column {column!r} has values above {high} (largest {largest})")
        if self.unique and all(c in names for c in self.unique):
            keys = data.columns(self.unique)
            distinct = keys.group_by(list(self.unique)).aggregate([]).num_rows
            if distinct < keys.num_rows:
                problems.append(f"key ({', '.join(self.unique)}) has {keys.num_rows - distinct} duplicate rows")
        return problems

    def needed_columns(self) -> list[str]:
        return list(dict.fromkeys([*self.columns, *self.not_null, *self.unique, *self.ranges]))


class DataView:
    """What a contract check needs of a file: schema, row count, per-column null
    count, min and max, and the key columns. Parquet answers most from its footer
    statistics without reading the data; CSV is read once, only the needed columns."""

    def __init__(self, path: Path, file_format: str, contract: Contract):
        import pyarrow.parquet as pq

        self.path = path
        self._table: pa.Table | None = None
        if file_format == "parquet":
            self._parquet = pq.ParquetFile(path)
            self.schema = self._parquet.schema_arrow
            self.num_rows = self._parquet.metadata.num_rows
        else:
            import pyarrow as pa
            from pyarrow import csv as pacsv

            from .lake import Dataset, csv_header, read_csv_table

            dataset = Dataset(path.name, path.name)
            header = csv_header(dataset, path)
            wanted = [c for c in contract.needed_columns() if c in header]
            self._parquet = None
            # text columns stay text: an all-digit UPC or campaign id is not a number
            text = {c: pa.string() for c, kind in contract.columns.items() if kind in ("string", "month") and c in wanted}
            self._table = read_csv_table(dataset, path, pacsv.ConvertOptions(
                include_columns=wanted, column_types=text, strings_can_be_null=True, null_values=[""]), header)
            self.schema = self._table.schema
            self.num_rows = self._table.num_rows

    def columns(self, names: tuple[str, ...] | list[str]) -> pa.Table:
        if self._table is not None:
            return self._table.select(list(names))
        return self._parquet.read(columns=list(names))

    def stats(self, column: str) -> tuple[int, Any, Any]:
        """(null count, min, max) of ``column``."""
        if self._parquet is not None:
            from_footer = _footer_stats(self._parquet, column)
            if from_footer is not None:
                return from_footer
        import pyarrow.compute as pc

        values = self.columns([column]).column(0)
        bounds = pc.min_max(values)
        return values.null_count, bounds["min"].as_py(), bounds["max"].as_py()


def _footer_stats(parquet: Any, column: str) -> tuple[int, Any, Any] | None:
    """Null count, min and max from the row groups' statistics; None when a row group lacks them."""
    index = parquet.schema_arrow.get_field_index(column)
    nulls, smallest, largest = 0, None, None
    for group in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count or (not stats.has_min_max and stats.num_values):
            return None
        nulls += stats.null_count
        if stats.has_min_max:
            smallest = stats.min if smallest is None else min(smallest, stats.min)
            largest = stats.max if largest is None else max(largest, stats.max)
    return nulls, smallest, largest


def _fits(arrow_type: Any, kind: str) -> bool:
    import pyarrow.types as types

    from .lake import _arrow_type_fits

    return types.is_null(arrow_type) or _arrow_type_fits(arrow_type, kind)  # null: a column with no values


def contract_from_dataset(dataset: Any) -> Contract:
    """The contract a curated catalog data set implies: its columns, ranges, key and minimum rows."""
    return Contract(
        path=dataset.path,
        columns=dict(dataset.columns),
        not_null=tuple(dataset.key),
        unique=tuple(dataset.key),
        ranges=dict(dataset.ranges),
        min_rows=dataset.min_rows,
        source=f"data set {dataset.name!r}",
    )


def read_contract_file(path: Path, curated_path: str) -> Contract:
    """A contract from ``4_curated/_contracts/<curated path>.toml``; errors name the file and key."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read contract ({exc})", path) from None
    unknown = sorted(set(data) - CONTRACT_KEYS)
    if unknown:
        raise ConfigError(f"unknown key; a contract takes {', '.join(sorted(CONTRACT_KEYS))}", path, unknown[0])
    columns = data.get("columns", {})
    if not isinstance(columns, dict) or any(kind not in COLUMN_TYPES for kind in columns.values()):
        raise ConfigError(f"a table of column = type, types: {', '.join(COLUMN_TYPES)}", path, "columns")
    ranges = {}
    for column, bounds in data.get("ranges", {}).items():
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise ConfigError("a range is [low, high]; use \"\" for an open end", path, f"ranges.{column}")
        ranges[column] = tuple(None if b == "" else float(b) for b in bounds)
    for key in ("not_null", "unique"):
        if not isinstance(data.get(key, []), list):
            raise ConfigError("must be a list of column names", path, key)
    if not isinstance(data.get("min_rows", 0), int):
        raise ConfigError("must be a whole number", path, "min_rows")
    return Contract(curated_path, columns, tuple(data.get("not_null", ())), tuple(data.get("unique", ())),
                    ranges, data.get("min_rows", 0), source=str(path))


def contract_for(lab: Lab, curated_path: str) -> Contract | None:
    """The contract of ``curated_path`` (relative to 4_curated/): a file under
    ``_contracts/`` wins over the data set catalog; None when there is neither."""
    curated = lab.settings.zone("curated")
    contract_file = curated / CONTRACTS_DIR / f"{curated_path}.toml"
    if contract_file.is_file():
        return read_contract_file(contract_file, curated_path)
    for dataset in lab.datasets.values():
        if dataset.zone == "curated" and _matches(dataset.path, curated_path):
            return contract_from_dataset(dataset)
    return None


def _matches(pattern: str, path: str) -> bool:
    from fnmatch import fnmatchcase

    return pattern == path or (any(ch in pattern for ch in "*?[") and fnmatchcase(path, pattern))
