"""Data quality of any catalog data set: missing values, type violations, duplicates, ranges, outliers.

A CSV data set is checked in DuckDB (:class:`CsvChecks`). pyarrow reads the file as the lake's
loader does, a batch at a time; DuckDB keeps a compact table of what the checks need of each row
(whether each value is missing, the value, a hash of the row), and the counts, quartiles and first
offending rows are queries of it that hand back a row each: a 10-million-row statement is checked
in well under a GB, where its text read into pandas took 13. The SQL reads each value as
:func:`parse_values` does in pandas; the values whose pandas reading it does not reproduce (a
number written with a leading ``+``, a date with non-ASCII characters, any datetime) are handed to
:func:`parse_values` itself, a batch at a time. A Parquet data set, and a CSV file whose reading
pandas decides as a whole (datetimes in more than one zone, ...), is read whole and checked in pandas.
"""

from __future__ import annotations

import contextlib
import math
import re
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrot_lab import Param, ParamError, experiment, hookimpl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import duckdb
    import pandas as pd
    import pyarrow as pa

    from bedrot_lab import Dataset

__version__ = "1.1.0"

NUMERIC_KINDS = ("int", "float")
#: what the lake's loader (pyarrow) reads as null in a typed column; in a text column only
#: an empty value counts as missing, since "NA" is also Namibia's country code
NULL_TOKENS = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                         "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})
DATE_SHAPES = {"date": (r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), "month": (r"\d{4}-\d{2}", "%Y-%m")}
BOOL_VALUES = {"true": True, "1": True, "false": False, "0": False}
#: the minimum of values the quartiles of the IQR rule are computed from
IQR_MIN_VALUES = 4
QUARTILES = (0.25, 0.75)
#: how many row hashes DuckDB groups at once to find the repeated ones
HASHES_AT_ONCE = 1_000_000
CHECKS = ("missing", "type_violations", "out_of_range", "outliers")
RULE_HELP = ("write iqr:<factor> (e.g. iqr:1.5) or '<column> <op> <number>' with op one of > >= < <= "
             "(e.g. 'engagement_rate > 0.5')")
#: what ``str.strip()`` removes: the characters Python counts as whitespace
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")

_IQR_RULE = re.compile(r"\s*iqr\s*:\s*(?P<factor>\d+(?:\.\d*)?|\.\d+)\s*", re.IGNORECASE)
_THRESHOLD_RULE = re.compile(
    r"\s*(?P<column>[^<>]*[^<>\s])\s*(?P<op>>=|<=|>|<)\s*(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)
_NOT_KEY = re.compile(r"[^a-z0-9]+")
_OPERATORS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}

# The values the SQL reads as pandas does (RE2 patterns; pandas' own rules are in parse_values).
#: a whole number, unsigned or with "-": the double DuckDB reads is the one pandas reads
_SQL_INT = "-?[0-9]+"
#: one with "+", which pandas reads as a float with a parser of its own, not always to the nearest double
_SQL_PLUS_INT = r"\+[0-9]+"
#: a number pandas reads with fast_float, as DuckDB does (one with a leading "+" is left to pandas)
_SQL_FLOAT = r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|(?i:-?inf(?:inity)?)"
_SQL_NOT_ASCII = r"[^\x00-\x7F]"


@dataclass(frozen=True)
class OutlierRule:
    """``iqr`` with ``factor``, or a ``threshold``: values of ``column`` for which ``op number`` holds."""

    text: str
    kind: str
    factor: float = 1.5
    column: str = ""
    op: str = ""
    number: float = 0.0

    def describe(self) -> str:
        if self.kind == "iqr":
            return f"below Q1 - {self.factor:g}·IQR or above Q3 + {self.factor:g}·IQR"
        return f"{self.column} {self.op} {self.number:g}"


def parse_rule(text: str) -> OutlierRule:
    """The outlier rule of param ``outlier_rule``; :class:`ParamError` naming it if it cannot be read."""
    if match := _IQR_RULE.fullmatch(text):
        return OutlierRule(text, "iqr", factor=float(match["factor"]))
    if match := _THRESHOLD_RULE.fullmatch(text):
        return OutlierRule(text, "threshold", column=match["column"], op=match["op"], number=float(match["number"]))
    raise ParamError(f"param 'outlier_rule': cannot read rule {text!r}; {RULE_HELP}")


def metric_key(column: str) -> str:
    """``column`` as a word of a metric name, in lower snake_case: accents dropped, every run of
    other characters one ``_`` (``Country of Sale`` -> ``country_of_sale``, ``Earnings (USD)`` ->
    ``earnings_usd``)."""
    plain = unicodedata.normalize("NFKD", column).encode("ascii", "ignore").decode().lower()
    return _NOT_KEY.sub("_", plain).strip("_") or "column"


# -- what the checks find -------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """What one check found in one column: how many rows, and the first of them."""

    count: int
    row: int | None = None  # numbered from 1 after the header, as load errors number them
    value: str = ""  # its value as the file holds it, "(empty)" for an empty one


@dataclass
class ColumnCheck:
    """What the checks found in one declared column, with the numbers they were judged by."""

    column: str
    kind: str
    found: dict[str, Found]
    details: dict[str, str]
    stats: dict[str, Any]


@dataclass
class FileCheck:
    """What the checks found in the whole file."""

    rows: int
    header: list[str]
    columns: list[ColumnCheck]  # the declared columns the file has, in declaration order
    duplicate_rows: tuple[int, dict[str, Any] | None]
    duplicate_keys: tuple[int, dict[str, Any] | None] | None  # None: no key, or one not in the file


def found_example(raw: str) -> str:
    """A first offending value as a finding shows it."""
    return raw if raw.strip() else "(empty)"


def fences(q1: float, q3: float, factor: float) -> tuple[float, float]:
    """The IQR rule's bounds: Q1 - factor·IQR and Q3 + factor·IQR."""
    return q1 - factor * (q3 - q1), q3 + factor * (q3 - q1)


def iqr_stats(q1: float, q3: float, factor: float) -> dict[str, float]:
    low, high = fences(q1, q3, factor)
    return {"q1": q1, "q3": q3, "lower_fence": low, "upper_fence": high}


def too_few_numbers(count: int) -> str:
    return f"the IQR rule needs at least {IQR_MIN_VALUES} numeric values, column has {count}"


def detail(check: str, kind: str, declared_range: tuple[Any, Any] | None, rule: OutlierRule,
           stats: dict[str, Any]) -> str:
    """The detail text of a finding of ``check`` in a column of ``kind``."""
    if check == "missing":
        return "empty" if kind == "string" else "empty or a null marker (NA, NULL, ...)"
    if check == "type_violations":
        return f"not a {kind} value"
    if check == "out_of_range":
        low, high = declared_range
        return f"outside the declared range [{_end(low)}, {_end(high)}]"
    if rule.kind == "threshold":
        return f"rule {rule.describe()}"
    low, high = stats["lower_fence"], stats["upper_fence"]
    return (f"outside [Q1 - {rule.factor:g}·IQR, Q3 + {rule.factor:g}·IQR] = [{low:.6g}, {high:.6g}]"
            + ("; the IQR is 0, so any value other than the typical one counts" if stats["q3"] == stats["q1"] else ""))


def _end(value: Any) -> str:
    return "open" if value is None else f"{value:g}"


def duplicate_finding(check: str, label: str, count: int, row: int, first: int, columns: list[str],
                      values: list[str]) -> dict[str, Any]:
    """The finding of ``count`` rows repeating an earlier one on ``columns``: the first such
    ``row``, the values of its first four columns, and the ``first`` row it repeats."""
    example = ", ".join(f"{c}={v}" for c, v in zip(columns[:4], values)) + (", ..." if len(columns) > 4 else "")
    return {"check": check, "column": label, "count": count, "example_row": row,
            "example_value": example[:200], "detail": f"same as row {first}"}


# -- in pandas: a Parquet file, or a CSV file whose reading pandas decides as a whole ---------


def text_of(values: pd.Series) -> pd.Series:
    """``values`` as stripped text, a missing value as the empty string."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def parse_values(values: pd.Series, kind: str) -> tuple[pd.Series, pd.Series]:
    """(missing, parsed): which values are absent, and the values as ``kind`` (NaN/NaT where
    a present value does not parse, which makes it a type violation)."""
    import numpy as np
    import pandas as pd

    if _stored_as(values, kind):
        parsed = values.astype("float64") if kind in NUMERIC_KINDS else values
        if kind == "int":
            parsed = parsed.where(np.isclose(parsed % 1, 0))
        return values.isna(), parsed
    text = text_of(values)
    missing = text.eq("")
    if kind == "string":
        return missing, text
    missing |= text.isin(NULL_TOKENS)
    present = text.where(~missing)
    if kind == "int":
        parsed = pd.to_numeric(present.where(present.str.fullmatch(r"[+-]?\d+").fillna(False).astype(bool)),
                               errors="coerce").astype("float64")
    elif kind == "float":
        parsed = pd.to_numeric(present, errors="coerce").astype("float64")
    elif kind == "bool":
        parsed = present.str.lower().map(BOOL_VALUES)
    elif kind in DATE_SHAPES:
        shape, layout = DATE_SHAPES[kind]
        shaped = present.where(present.str.fullmatch(shape).fillna(False).astype(bool))
        parsed = pd.to_datetime(shaped, format=layout, errors="coerce")
    else:
        parsed = pd.to_datetime(present, format="ISO8601", errors="coerce")
    return missing, parsed


def _stored_as(values: pd.Series, kind: str) -> bool:
    """Whether a (Parquet) column already holds ``kind`` values, which then need no parsing."""
    from pandas.api import types

    if types.is_bool_dtype(values.dtype):
        return kind == "bool"
    if kind in NUMERIC_KINDS:
        return types.is_numeric_dtype(values.dtype)
    return kind in ("date", "month", "datetime") and types.is_datetime64_any_dtype(values.dtype)


def check_column(column: str, values: pd.Series, kind: str, declared_range: tuple[Any, Any] | None,
                 rule: OutlierRule) -> ColumnCheck:
    """Missing values, type violations, values outside the declared range and outliers of one column."""
    missing, parsed = parse_values(values, kind)
    masks = {"missing": missing}
    stats: dict[str, Any] = {}
    if kind != "string":
        masks["type_violations"] = ~missing & parsed.isna()
    if declared_range is not None and kind in NUMERIC_KINDS:
        low, high = declared_range
        below = parsed.lt(low) if low is not None else False
        above = parsed.gt(high) if high is not None else False
        masks["out_of_range"] = parsed.notna() & (below | above)
        stats.update(range_low=low, range_high=high)
    if kind in NUMERIC_KINDS and rule.kind == "iqr":
        numbers = parsed.dropna()
        if len(numbers) >= IQR_MIN_VALUES:
            q1, q3 = numbers.quantile(list(QUARTILES))
            low, high = fences(q1, q3, rule.factor)
            masks["outliers"] = parsed.lt(low) | parsed.gt(high)
            stats.update(iqr_stats(q1, q3, rule.factor))
        else:
            stats["outliers_skipped"] = too_few_numbers(len(numbers))
    elif rule.kind == "threshold" and column == rule.column:
        masks["outliers"] = getattr(parsed, _OPERATORS[rule.op])(rule.number)
    found = {check: _found(mask.fillna(False).astype(bool), values) for check, mask in masks.items()}
    return ColumnCheck(column, kind, found, {check: detail(check, kind, declared_range, rule, stats) for check in found},
                       stats)


def _found(mask: pd.Series, values: pd.Series) -> Found:
    """How many rows ``mask`` marks; the first of them (numbered from 1 after the header) and its value."""
    import pandas as pd

    count = int(mask.sum())
    if not count:
        return Found(0)
    position = int(mask.to_numpy().argmax())
    value = values.iloc[position]
    return Found(count, position + 1, "(empty)" if pd.isna(value) else found_example(str(value)))


def _duplicates(frame: pd.DataFrame, columns: list[str], check: str, label: str) -> tuple[int, dict[str, Any] | None]:
    """Rows repeating an earlier row on ``columns``: their count and a finding with an example."""
    duplicated = frame.duplicated(subset=columns, keep="first")
    count = int(duplicated.sum())
    if not count:
        return 0, None
    position = int(duplicated.to_numpy().argmax())
    text = frame[columns].astype(object).where(frame[columns].notna(), "").astype(str)
    same = text.eq(text.iloc[position]).all(axis=1).to_numpy()
    first = int(same.argmax())
    values = [text.iloc[position][c] for c in columns[:4]]
    return count, duplicate_finding(check, label, count, position + 1, first + 1, columns, values)


def checks_in_pandas(frame: pd.DataFrame, dataset: Dataset, rule: OutlierRule, key: list[str]) -> FileCheck:
    """The checks of a file read whole into ``frame`` (every column as text, or as Parquet stores it)."""
    header = list(frame.columns)
    columns = [check_column(column, frame[column], kind, dataset.ranges.get(column), rule)
               for column, kind in dataset.columns.items() if column in frame.columns]
    duplicate_keys = None
    if key and all(c in frame.columns for c in key):
        duplicate_keys = _duplicates(frame, key, "duplicate_keys", ", ".join(key))
    return FileCheck(len(frame), header, columns, _duplicates(frame, header, "duplicate_rows", "(all columns)"),
                     duplicate_keys)


# -- in DuckDB: a CSV file ------------------------------------------------------------------


class PandasOnly(Exception):
    """A file, or values in it, the SQL would not judge as pandas does: check it in pandas."""


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _double(value: float) -> str:
    """``value`` as an SQL DOUBLE, bit for bit (inf and nan too)."""
    return f"CAST({_literal(repr(float(value)))} AS DOUBLE)"


def _numbers(values: Iterable[int]) -> str:
    """Whole numbers as an SQL list's items."""
    return ", ".join(map(str, sorted(values)))


def _fields(indexes: Iterable[int]) -> str:
    """The file's text columns at ``indexes`` (see :func:`text_batches`)."""
    return ", ".join(_quoted(f"c{i}") for i in indexes)


@dataclass(frozen=True)
class Column:
    """A declared column in the SQL: ``c<i>``, its text as the file holds it; ``t<i>``, that text
    stripped; ``m<i>``, whether the value is missing; ``v<i>``, the value: the number; TRUE for a
    valid bool, date or month; a :func:`datetime_codes` code for a datetime; NULL when it does not parse."""

    name: str
    kind: str
    index: int  # in the header

    @property
    def raw(self) -> str:
        return _quoted(f"c{self.index}")

    @property
    def text(self) -> str:
        return _quoted(f"t{self.index}")

    @property
    def missing(self) -> str:
        return _quoted(f"m{self.index}")

    @property
    def value(self) -> str:
        return _quoted(f"v{self.index}")


def missing_sql(column: Column) -> str:
    """Empty, or (in a typed column) a null marker: :func:`parse_values`' ``missing``."""
    if column.kind == "string":
        return f"{column.text} = ''"
    return f"({column.text} = '' OR {column.text} IN ({', '.join(map(_literal, sorted(NULL_TOKENS)))}))"


def value_sql(column: Column, function: str) -> str:
    """The value of a present text as :func:`parse_values` reads it. ``function`` is the DuckDB
    function that runs :func:`parse_values` itself, for the values this SQL leaves to pandas."""
    t = column.text
    if column.kind == "int":
        cases = [(f"regexp_full_match({t}, {_literal(_SQL_INT)})", f"TRY_CAST({t} AS DOUBLE)"),
                 (f"regexp_full_match({t}, {_literal(_SQL_PLUS_INT)})", f"{function}({t})")]
    elif column.kind == "float":
        cases = [(f"regexp_full_match({t}, {_literal(_SQL_FLOAT)})", f"TRY_CAST({t} AS DOUBLE)"),
                 # pandas reads text in C, up to a NUL character
                 (f"starts_with({t}, '+') OR contains({t}, chr(0))", f"{function}({t})")]
    elif column.kind == "bool":
        cases = [(f"lower({t}) IN ({', '.join(map(_literal, BOOL_VALUES))})", "TRUE")]
    elif column.kind in DATE_SHAPES:
        shape, layout = DATE_SHAPES[column.kind]
        ascii_shape = shape.replace("\\d", "[0-9]")
        cases = [(f"regexp_full_match({t}, {_literal(ascii_shape)}) AND try_strptime({t}, {_literal(layout)}) IS NOT NULL",
                  "TRUE"),
                 # Python's \d is any decimal digit, and pandas reads some of them
                 (f"regexp_matches({t}, {_literal(_SQL_NOT_ASCII)})", f"{function}({t})")]
    else:
        cases = [("TRUE", f"{function}({t})")]
    whens = " ".join(f"WHEN {condition} THEN {value}" for condition, value in cases)
    return f"CASE WHEN {column.missing} THEN NULL {whens} END"


def parsed_sql(rows: str, columns: list[Column], functions: dict[str, str]) -> str:
    """The rows of ``rows`` (which has each of ``columns``' text, stripped) with each column's
    missing flag and value; ``functions`` are those of :func:`register_pandas_functions`."""
    if not columns:
        return f"SELECT * FROM {rows}"
    missing = ", ".join(f"{missing_sql(c)} AS {c.missing}" for c in columns)
    values = "".join(f", {value_sql(c, functions.get(c.kind, ''))} AS {c.value}" for c in columns if c.kind != "string")
    return f"SELECT *{values} FROM (SELECT *, {missing} FROM {rows})"


def comparison_sql(value: str, op: str, bound: float) -> str:
    """``value op bound`` as pandas compares: nothing is below or above NaN (which DuckDB sorts last)."""
    return "FALSE" if math.isnan(bound) else f"{value} {op} {_double(bound)}"


def outside_sql(value: str, low: float | None, high: float | None) -> str:
    """``value`` below ``low`` or above ``high`` (an end None is open)."""
    sides = [comparison_sql(value, op, bound) for op, bound in (("<", low), (">", high)) if bound is not None]
    return "(" + (" OR ".join(sides) or "FALSE") + ")"


# -- reading the file, and the values SQL leaves to pandas ------------------------------------


def text_batches(dataset: Dataset, path: Path, header: list[str], stripped: list[int], block_size: int,
                 failures: list[Exception]) -> pa.RecordBatchReader:
    """The file's rows as the lake's loader reads them (pyarrow, every column as text, an empty
    value as ""), a batch at a time: ``r``, the row's number from 1; ``c0``, ``c1``, ... in the
    order of the header; and ``t<i>``, column ``i`` as ``str.strip()`` leaves it, for each of
    ``stripped``. What pyarrow cannot read is added to ``failures`` (and raised)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv as pacsv

    schema = pa.schema([("r", pa.int64()), *((f"c{i}", pa.string()) for i in range(len(header))),
                        *((f"t{i}", pa.string()) for i in stripped)])

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            reader = pacsv.open_csv(
                path, read_options=pacsv.ReadOptions(block_size=block_size),
                parse_options=pacsv.ParseOptions(delimiter=dataset.delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(include_columns=header, strings_can_be_null=False,
                                                     column_types=dict.fromkeys(header, pa.string())))
            start = 1
            for batch in reader:
                numbers = pa.array(np.arange(start, start + batch.num_rows, dtype="int64"))
                texts = [pc.utf8_trim(batch.column(i), WHITESPACE) for i in stripped]
                yield pa.RecordBatch.from_arrays([numbers, *batch.columns, *texts], schema=schema)
                start += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            failures.append(exc)
            raise

    # pyarrow reads and strips on a thread of its own while DuckDB works on the batches before
    return pa.RecordBatchReader.from_batches(schema, read_ahead(batches))


def read_ahead(make: Callable[[], Iterator[Any]], depth: int = 4) -> Iterator[Any]:
    """The items of ``make()``, made on a thread of their own up to ``depth`` items ahead of the
    reader; an exception there is raised to the reader. Stopping reading stops the thread."""
    import queue
    import threading

    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    def produce() -> None:
        try:
            for item in make():
                put(item)
                if stop.is_set():
                    return
        except BaseException as exc:  # raised to the reader
            put(exc)
        else:
            put(end)

    threading.Thread(target=produce, name="bedrot-data-quality-read", daemon=True).start()
    try:
        while (item := items.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def pandas_function(kind: str) -> Callable[[pa.ChunkedArray], pa.Array]:
    """:func:`parse_values` for a batch of present (stripped) values of a ``kind`` column, as DuckDB
    calls a Python function: the number; TRUE for a valid date or month; for a datetime the code of
    :func:`datetime_codes`; null where a value does not parse."""
    import pandas as pd
    import pyarrow as pa

    def parse(texts):  # no annotations: DuckDB reads them, and pyarrow is imported late
        values = pa.table({"v": texts.cast(pa.string())}).to_pandas()["v"]  # the dtype the loader's text has
        if kind == "datetime":
            return datetime_codes(values)
        # a column with a missing value, as nearly every column has one, goes through pandas' float parser
        padded = pd.concat([values, pd.Series([""], dtype=values.dtype)], ignore_index=True)
        parsed = parse_values(padded, kind)[1].iloc[:-1]
        if kind in NUMERIC_KINDS:
            return pa.array(parsed.to_numpy(dtype="float64"), pa.float64(), from_pandas=True)
        return pa.array([True if valid else None for valid in parsed.notna()], pa.bool_())

    return parse


def datetime_codes(values: pd.Series) -> pa.Array:
    """Each datetime of a batch as 4 * zone + 2 * (the batch parses to nanoseconds) + (it fits in
    nanoseconds), zone 0 for none, else 1441 + its UTC offset in minutes; null where a value does
    not parse; -1 throughout when pandas cannot read the batch (mixed time zones). pandas reads a
    column in the one zone its values share, at the finest resolution one of them needs."""
    import pandas as pd
    import pyarrow as pa

    try:
        parsed = parse_values(values, "datetime")[1]
    except ValueError:
        return pa.array([-1] * len(values), pa.int64())
    zone, utc = 0, parsed
    if parsed.dt.tz is not None:
        valid = parsed.dropna()
        zone = 1441 + (int(valid.iloc[0].utcoffset().total_seconds()) // 60 if len(valid) else 0)
        utc = parsed.dt.tz_convert(None)
    fits = ((utc >= pd.Timestamp.min) & (utc <= pd.Timestamp.max)).astype("int64")
    codes = (4 * zone + 2 * int(parsed.dt.unit == "ns") + fits).where(parsed.notna())
    return pa.array(codes.to_numpy(dtype="float64"), pa.float64(), from_pandas=True).cast(pa.int64())


def register_pandas_functions(connection: duckdb.DuckDBPyConnection, kinds: set[str]) -> dict[str, str]:
    """Register the DuckDB function of each of ``kinds`` that hands values to pandas; their names by kind."""
    types = {"int": "DOUBLE", "float": "DOUBLE", "date": "BOOLEAN", "month": "BOOLEAN", "datetime": "BIGINT"}
    import duckdb

    names = {}
    for kind in sorted(kinds & set(types)):
        names[kind] = f"bedrot_data_quality_{kind}"
        try:
            connection.remove_function(names[kind])
        except duckdb.Error:  # not registered yet
            pass
        connection.create_function(names[kind], pandas_function(kind), ["VARCHAR"], types[kind], type="arrow",
                                   null_handling="special")  # it returns NULL for a value that does not parse
    return names


# -- the quartiles, as pandas computes them ---------------------------------------------------


def quartile_neighbours(count: int) -> dict[float, tuple[int, int, float]]:
    """For each of :data:`QUARTILES`, the positions in ``count`` sorted numbers between which
    pandas' ``quantile`` (numpy's linear method) interpolates, and the weight of the second."""
    neighbours = {}
    for q in QUARTILES:
        virtual = (count - 1) * q
        below = math.floor(virtual)
        neighbours[q] = (below, min(below + 1, count - 1), virtual - below)
    return neighbours


def interpolate(a: float, b: float, weight: float) -> float:
    """numpy's linear interpolation from ``a`` to ``b`` (its ``_lerp``, rounding and all)."""
    difference = b - a
    return b - difference * (1 - weight) if weight >= 0.5 else a + difference * weight


@contextmanager
def duckdb_setting(connection: duckdb.DuckDBPyConnection, name: str, value: str | Callable[[str], str]) -> Iterator[None]:
    """DuckDB's setting ``name`` at ``value`` (or at what ``value`` makes of the current one) for a while."""
    before = str(connection.execute(f"SELECT current_setting({_literal(name)})").fetchall()[0][0])
    connection.execute(f"SET {name} = {_literal(value(before) if callable(value) else value)}")
    try:
        yield
    finally:
        connection.execute(f"SET {name} = {_literal(before)}")


def unordered(connection: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager[None]:
    """DuckDB free to write a table's rows in any order (they are numbered): kept in order, the
    rows one thread reads while the other is behind wait in memory."""
    return duckdb_setting(connection, "preserve_insertion_order", "false")


def holding_the_list(connection: duckdb.DuckDBPyConnection) -> contextlib.AbstractContextManager[None]:
    """DuckDB without its ``build_side_probe_side`` optimizer, so that a join holds the rows a
    subquery ``IN (...)`` lists: DuckDB, which does not know how many rows a stream of batches
    has, would otherwise hold the file's rows to find the few wanted."""
    return duckdb_setting(connection, "disabled_optimizers",
                          lambda before: ",".join(filter(None, [before, "build_side_probe_side"])))


# -- the checks of a CSV file ------------------------------------------------------------------


class CsvChecks:
    """The checks of a CSV data set in DuckDB, in queries that each hand back a row or a few.

    pyarrow reads the file as the lake's loader does, a batch at a time, and DuckDB keeps what
    the checks need of each row in a table ``rows``: its number ``r``; whether each declared
    column's value is missing (``m<i>``) and the value (``v<i>``, see :class:`Column`); a hash of
    the row's values (``h0``) and, with a key, of its key's (``h1``). The counts, quartiles, first
    offending rows and repeated hashes are queries of that table. Only when something was found is
    the file read again, for the text of the first offending rows and of the rows whose hashes
    repeat (which are grouped by their text: two different rows may share a hash).
    """

    database = _quoted("bedrot_data_quality")
    #: the name the file's rows (:func:`text_batches`) have in a query
    stream_name = "bedrot_data_quality_text"

    def __init__(self, connection: duckdb.DuckDBPyConnection, dataset: Dataset, path: Path, header: list[str],
                 rule: OutlierRule, key: list[str]):
        self.connection, self.dataset, self.path, self.header = connection, dataset, path, header
        self.rule, self.key = rule, key
        self.columns = [Column(name, kind, header.index(name)) for name, kind in dataset.columns.items()
                        if name in header]
        self.functions = register_pandas_functions(connection, {column.kind for column in self.columns})
        self.rows = self.table("rows")
        self.stream = _quoted(self.stream_name)
        #: check -> (label, columns): the duplicates looked for, set k hashed as h<k>
        self.sets = {"duplicate_rows": ("(all columns)", list(header))}
        if key:
            self.sets["duplicate_keys"] = (", ".join(key), key)
        self.block_size = 1 << 18  # pyarrow reads a block at a time: small blocks, little memory

    def table(self, name: str) -> str:
        """Table ``name`` of the checks' own database."""
        return f"{self.database}.{_quoted(name)}"

    def run(self) -> FileCheck:
        """The checks, their tables in a database file of their own, compressed as it is written
        (some 150 MB for a 10-million-row statement), in the folder the query engine's DuckDB
        spills to (which the engine removes); in memory when the connection has no such folder."""
        import uuid

        folder = self.connection.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
        file = Path(folder) / f"data-quality-{uuid.uuid4().hex}.duckdb" if folder else None
        if file:
            file.parent.mkdir(parents=True, exist_ok=True)
            self.connection.execute(f"ATTACH {_literal(str(file))} AS {self.database}")
        else:
            self.connection.execute(f"ATTACH ':memory:' AS {self.database} (COMPRESS)")
        try:
            return self.check()
        finally:
            self.connection.execute(f"DETACH {self.database}")
            for leftover in (file, Path(f"{file}.wal")) if file else ():
                leftover.unlink(missing_ok=True)

    def check(self) -> FileCheck:
        """Read the file, count, find the quartiles, the first rows and the duplicates."""
        self.read()
        conditions = {column.name: self.conditions(column) for column in self.columns}
        counted = self.count(conditions)
        stats = {column.name: self.range_stats(column) for column in self.columns}
        if self.rule.kind == "iqr":
            self.add_iqr_outliers(counted, conditions, stats)
        firsts = self.first_rows(conditions, counted)
        repeated = self.repeated_hashes(counted["rows"])
        examples = {row for row in firsts.values() if row is not None}
        if examples or repeated:
            self.pick(examples, repeated)
        texts = self.texts_of(examples)
        checks = [self.column_check(column, conditions[column.name], counted, firsts, texts, stats[column.name])
                  for column in self.columns]
        duplicates = {check: self.duplicates(k, check) if k in repeated else (0, None)
                      for k, check in enumerate(self.sets)}
        return FileCheck(counted["rows"], self.header, checks, duplicates["duplicate_rows"],
                         duplicates.get("duplicate_keys"))

    def column_check(self, column: Column, conditions: dict[str, str], counted: dict[Any, Any],
                     firsts: dict[Any, Any], texts: dict[int, tuple[str, ...]], stats: dict[str, Any]) -> ColumnCheck:
        """What the checks of ``column`` found: how many rows, the first of them and its text."""
        found = {}
        for check in conditions:
            count, row = counted[column.name, check], firsts.get((column.name, check))
            found[check] = Found(count, row, found_example(texts[row][column.index])) if count else Found(0)
        declared_range = self.dataset.ranges.get(column.name)
        details = {check: detail(check, column.kind, declared_range, self.rule, stats) for check in found}
        return ColumnCheck(column.name, column.kind, found, details, stats)

    def one_row(self, aggregates: dict[Any, str], source: str | None = None) -> dict[Any, Any]:
        """The ``aggregates`` (SQL by key) over ``source`` (the rows' table), by key."""
        if not aggregates:
            return {}
        select = ", ".join(f"{sql} AS {_quoted(f'a{i}')}" for i, sql in enumerate(aggregates.values()))
        return dict(zip(aggregates, self.connection.execute(f"SELECT {select} FROM {source or self.rows}").fetchall()[0]))

    # -- reading the file ----------------------------------------------------------------------

    def scan(self, query: str, stripped: list[int] | None = None) -> None:
        """Run ``query``, which reads the file's rows as :attr:`stream` (:func:`text_batches`, with the
        ``stripped`` text of the columns at those indexes). A row longer than a block makes pyarrow
        read again with blocks four times larger, as the lake's loader does; a file pyarrow cannot
        read is :class:`PandasOnly` (the loader says why)."""
        from bedrot_lab.analysis.files import max_block_size

        largest = max_block_size()
        while True:
            failures: list[Exception] = []
            batches = text_batches(self.dataset, self.path, self.header, stripped or [], self.block_size, failures)
            self.connection.register(self.stream_name, batches)
            try:
                self.connection.execute(query)
                return
            except Exception:
                if not failures:
                    raise
                if "straddling object straddles" not in str(failures[0]) or self.block_size >= largest:
                    raise PandasOnly(f"pyarrow cannot read it: {str(failures[0]).strip().splitlines()[0]}") from None
                self.block_size = min(4 * self.block_size, largest)
            finally:
                self.connection.unregister(self.stream_name)

    def read(self) -> None:
        """The table of what the checks need of each row: the first pass over the file."""
        values = ["r", *(column.missing for column in self.columns)]
        values += [column.value for column in self.columns if column.kind != "string"]
        values += [f"hash({_fields(map(self.header.index, names))}) AS {_quoted(f'h{k}')}"
                   for k, (_, names) in enumerate(self.sets.values())]
        with unordered(self.connection):
            self.scan(f"CREATE OR REPLACE TABLE {self.rows} AS SELECT {', '.join(values)} "
                      f"FROM ({parsed_sql(self.stream, self.columns, self.functions)})", [c.index for c in self.columns])
        self.connection.execute(f"CHECKPOINT {self.database}")

    # -- the checks of a column ----------------------------------------------------------------

    def conditions(self, column: Column) -> dict[str, str]:
        """The SQL condition of each check of ``column`` but the IQR rule's (which needs the quartiles)."""
        value = column.value
        conditions = {"missing": column.missing}
        if column.kind != "string":
            conditions["type_violations"] = f"(NOT {column.missing} AND {value} IS NULL)"
        declared_range = self.dataset.ranges.get(column.name)
        if declared_range is not None and column.kind in NUMERIC_KINDS:
            conditions["out_of_range"] = outside_sql(value, *declared_range)
        if self.rule.kind == "threshold" and column.name == self.rule.column:
            conditions["outliers"] = comparison_sql(value, self.rule.op, self.rule.number)
        return conditions

    def range_stats(self, column: Column) -> dict[str, Any]:
        declared_range = self.dataset.ranges.get(column.name)
        if declared_range is None or column.kind not in NUMERIC_KINDS:
            return {}
        return {"range_low": declared_range[0], "range_high": declared_range[1]}

    def count(self, conditions: dict[str, dict[str, str]]) -> dict[Any, Any]:
        """The rows, the rows each condition holds for, each numeric column's numbers (for the IQR
        rule), and what decides how pandas reads a datetime column."""
        aggregates = {"rows": "count(*)"}
        for column in self.columns:
            for check, condition in conditions[column.name].items():
                aggregates[column.name, check] = f"count(*) FILTER (WHERE {condition})"
            if column.kind in NUMERIC_KINDS:
                aggregates[column.name, "numbers"] = f"count({column.value})"
                aggregates[column.name, "both_zeros"] = (f"bool_or({column.value} = 0 AND signbit({column.value})) "
                                                         f"AND bool_or({column.value} = 0 AND NOT signbit({column.value}))")
            if column.kind == "datetime":
                aggregates.update(self.datetime_aggregates(column))
        counted = self.one_row(aggregates)
        for column in self.columns:
            if column.kind == "datetime":
                self.check_datetimes(column, counted)
        return counted

    def datetime_aggregates(self, column: Column) -> dict[Any, str]:
        code = column.value
        return {(column.name, "zones"): f"count(DISTINCT {code} // 4) FILTER (WHERE {code} >= 0)",
                (column.name, "unread"): f"bool_or({code} = -1)",
                (column.name, "nanoseconds"): f"bool_or({code} >= 0 AND {code} // 2 % 2 = 1)",
                (column.name, "beyond_nanoseconds"): f"bool_or({code} >= 0 AND {code} % 2 = 0)"}

    def check_datetimes(self, column: Column, counted: dict[Any, Any]) -> None:
        """pandas reads a datetime column as a whole: :class:`PandasOnly` when that reading differs
        from the batches' (mixed time zones, or values beyond what nanoseconds hold next to values
        that need them)."""
        name = column.name
        if counted[name, "unread"] or counted[name, "zones"] > 1:
            raise PandasOnly(f"column {name!r} has datetimes in more than one time zone")
        if counted[name, "nanoseconds"] and counted[name, "beyond_nanoseconds"]:
            raise PandasOnly(f"column {name!r} has datetimes with nanoseconds and datetimes beyond their range")

    def add_iqr_outliers(self, counted: dict[Any, Any], conditions: dict[str, dict[str, str]],
                         stats: dict[str, dict[str, Any]]) -> None:
        """The quartiles of each numeric column with enough numbers, its outlier condition and stats
        (the outliers are counted with the first rows); the other numeric columns' reason to skip."""
        for column in self.columns:
            if column.kind not in NUMERIC_KINDS:
                continue
            count = counted[column.name, "numbers"]
            if count < IQR_MIN_VALUES:
                stats[column.name]["outliers_skipped"] = too_few_numbers(count)
                continue
            q1, q3 = self.pandas_quartiles(column) if counted[column.name, "both_zeros"] else self.quartiles(column, count)
            stats[column.name].update(iqr_stats(q1, q3, self.rule.factor))
            low, high = stats[column.name]["lower_fence"], stats[column.name]["upper_fence"]
            conditions[column.name]["outliers"] = outside_sql(column.value, low, high)
            counted[column.name, "outliers"] = None  # counted with the first rows

    def quartiles(self, column: Column, count: int) -> list[float]:
        """Q1 and Q3 of the ``count`` numbers of ``column``, as pandas computes them: DuckDB finds the
        numbers around them (quantile_disc at (i + 0.5) / n is the number at position i of the n
        sorted; one column at a time, as it holds a column's numbers to find them)."""
        neighbours = quartile_neighbours(count)
        positions = sorted({i for below, above, _ in neighbours.values() for i in (below, above)})
        fractions = ", ".join(_double((i + 0.5) / count) for i in positions)
        number = dict(zip(positions, self.one_row({"n": f"quantile_disc({column.value}, [{fractions}])"})["n"]))
        return [interpolate(number[below], number[above], weight) for below, above, weight in neighbours.values()]

    def pandas_quartiles(self, column: Column) -> list[float]:
        """Q1 and Q3 of the numbers of ``column``, computed by pandas from the numbers in file order:
        which of -0 and 0 a quartile is depends on where numpy's partition leaves them."""
        import pandas as pd

        numbers = self.connection.execute(f"SELECT {column.value} AS n FROM {self.rows} WHERE {column.value} IS NOT NULL "
                                          "ORDER BY r").fetchnumpy()["n"]
        return pd.Series(numbers, dtype="float64").quantile(list(QUARTILES)).tolist()

    def first_rows(self, conditions: dict[str, dict[str, str]], counted: dict[Any, Any]) -> dict[Any, Any]:
        """The first row (numbered from 1) each check found something in; the IQR outliers' count."""
        aggregates = {}
        for column in self.columns:
            for check, condition in conditions[column.name].items():
                if counted[column.name, check] is None:
                    aggregates[column.name, check, "count"] = f"count(*) FILTER (WHERE {condition})"
                if counted[column.name, check] != 0:
                    aggregates[column.name, check] = f"min(r) FILTER (WHERE {condition})"
        found = self.one_row(aggregates)
        counted.update({key[:2]: count for key, count in found.items() if len(key) == 3})
        return {key: row for key, row in found.items() if len(key) == 2}

    # -- duplicates, and the text of rows ------------------------------------------------------

    def repeated_hashes(self, rows: int) -> list[int]:
        """The sets of columns (by position in :attr:`sets`) on which some rows share a hash: those
        hashes in a table ``repeated`` (column h<k> for set k). A share of the hashes at a time, so
        that DuckDB holds a million of them (some 40 MB) at once."""
        hashes = [_quoted(f"h{k}") for k in range(len(self.sets))]
        repeated = self.table("repeated")
        self.connection.execute(f"CREATE TABLE {repeated} ({', '.join(f'{h} UBIGINT' for h in hashes)})")
        shares = rows // HASHES_AT_ONCE + 1
        for h in hashes:
            for share in range(shares if rows else 0):
                self.connection.execute(f"INSERT INTO {repeated} ({h}) SELECT {h} FROM {self.rows} "
                                        f"WHERE {h} % {shares} = {share} GROUP BY {h} HAVING count(*) > 1")
        counts = self.one_row({k: f"count({h})" for k, h in enumerate(hashes)}, repeated)
        return [k for k, count in counts.items() if count]

    def pick(self, rows: set[int], sets: list[int]) -> None:
        """The text of the file's ``rows`` (numbered from 1), and of the rows whose hash on one of
        ``sets`` repeats (their text on those sets' columns only): a table ``picked``, and ``wanted``,
        which tells which rows are which (``listed``, ``in<k>``). The second pass over the file."""
        marks = [f"{f'r IN ({_numbers(rows)})' if rows else 'FALSE'} AS listed"]
        marks += [f"{_quoted(f'h{k}')} IN (SELECT {_quoted(f'h{k}')} FROM {self.table('repeated')}) "
                  f"AS {_quoted(f'in{k}')}" for k in sets]
        wanted = self.table("wanted")
        self.connection.execute(f"CREATE TABLE {wanted} AS SELECT * FROM (SELECT r, {', '.join(marks)} FROM {self.rows}) "
                                f"WHERE {' OR '.join(['listed', *(_quoted(f'in{k}') for k in sets)])}")
        sets_of = [[k for k in sets if name in list(self.sets.values())[k][1]] for name in self.header]
        texts = ", ".join(f"CASE WHEN {' OR '.join(['listed', *(_quoted(f'in{k}') for k in among)])} "
                          f"THEN {_quoted(f'c{i}')} END AS {_quoted(f'c{i}')}" for i, among in enumerate(sets_of))
        with holding_the_list(self.connection), unordered(self.connection):
            self.scan(f"CREATE OR REPLACE TABLE {self.table('picked')} AS SELECT wanted.*, {texts} "
                      f"FROM {self.stream} JOIN {wanted} AS wanted USING (r)")

    def texts_of(self, rows: set[int]) -> dict[int, tuple[str, ...]]:
        """The text of each of ``rows`` (numbered from 1) as the file holds it, by row."""
        if not rows:
            return {}
        found = self.connection.execute(f"SELECT r, {_fields(range(len(self.header)))} FROM {self.table('picked')} "
                                        f"WHERE r IN ({_numbers(rows)})").fetchall()
        return {row[0]: row[1:] for row in found}

    def duplicates(self, k: int, check: str) -> tuple[int, dict[str, Any] | None]:
        """The rows repeating an earlier one on set ``k`` of columns (grouped by their text, as two
        different rows may share a hash): how many, and a finding with the first of them."""
        label, names = self.sets[check]
        columns = [self.header.index(name) for name in names]
        groups = (f"SELECT count(*) AS n, min(r) AS first, min(r, 2)[2] AS second, [{_fields(columns[:4])}] AS example "
                  f"FROM {self.table('picked')} WHERE {_quoted(f'in{k}')} "
                  f"GROUP BY {_fields(columns)}")
        count, row, first, example = self.connection.execute(
            f"SELECT CAST(sum(n - 1) AS BIGINT), min(second), arg_min(first, second), arg_min(example, second) "
            f"FROM ({groups}) WHERE n > 1").fetchall()[0]
        if not count:
            return 0, None
        return count, duplicate_finding(check, label, count, row, first, names, example)


def check_file(ctx: Any, dataset: Dataset, path: Path, rule: OutlierRule, key: list[str]) -> FileCheck:
    """The checks of the file behind ``dataset``: in DuckDB for a CSV file; in pandas, the file read
    whole, for a Parquet file and a CSV file the SQL would not judge as pandas does."""
    from bedrot_lab.analysis.files import csv_header, has_data_rows

    if dataset.format == "csv":
        header = csv_header(dataset, path)
        if len(set(header)) < len(header):
            reason = "its header repeats a column name"
        elif not has_data_rows(path):
            reason = "it has no data rows"  # as the lake's loader decides, whatever pyarrow would read
        else:
            try:
                return CsvChecks(ctx.query_engine.connection, dataset, path, header, rule,
                                 key if all(c in header for c in key) else []).run()
            except PandasOnly as exc:
                reason = str(exc)
        ctx.log.info("checking %s in pandas: %s", path.name, reason)
    return checks_in_pandas(ctx.load_text(dataset.name), dataset, rule, key)


@experiment(
    "data-quality",
    headline=["findings", "total.missing", "total.type_violations", "duplicate_rows"],
    params={
        "dataset": Param(str, "dk_bank_details", "the catalog data set to check"),
        "outlier_rule": Param(str, "iqr:1.5", "iqr:<factor> for every numeric column, or '<column> <op> <number>' "
                                              "(op > >= < <=) for one column, e.g. 'engagement_rate > 0.5'"),
        "key": Param(str, "", "comma-separated columns that should identify a row; empty: no key check"),
    },
)
def data_quality(ctx):
    """Data quality of a catalog data set: what would make an analysis of it wrong.

    Reads the file with every column as text, then checks each declared column:
    missing values, values that are present but not of the declared type, values
    outside the declared range, and outliers by the IQR rule or a threshold.
    Also counts duplicated rows (and duplicated keys), and declared columns the
    file lacks. Nothing is fixed; every finding is counted, with an example row.
    """
    import pandas as pd

    rule = parse_rule(ctx.params["outlier_rule"])
    name = ctx.params["dataset"]
    dataset = ctx.lab.dataset(name)
    numeric = [c for c, kind in dataset.columns.items() if kind in NUMERIC_KINDS]
    if rule.kind == "threshold" and rule.column not in numeric:
        raise ParamError(f"param 'outlier_rule': rule {rule.text!r} names {rule.column!r}, which is not a numeric "
                         f"column of data set {name!r}; numeric columns: {', '.join(numeric) or 'none'}")
    key = [c.strip() for c in ctx.params["key"].split(",") if c.strip()]
    unknown_key = [c for c in key if c not in dataset.columns]
    if unknown_key:
        raise ParamError(f"param 'key': {unknown_key[0]!r} is not a declared column of data set {name!r}; "
                         f"columns: {', '.join(dataset.columns)}")

    path = ctx.dataset_path(name)
    checked = check_file(ctx, dataset, path, rule, key)
    rows = checked.rows
    absent = [c for c in dataset.columns if c not in checked.header]
    keys: dict[str, str] = {}
    for column in dataset.columns:
        base = metric_key(column)
        keys[column] = base if base not in keys.values() else f"{base}_{len(keys)}"

    findings: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for column in absent:
        findings.append({"check": "missing_column", "column": column, "count": 1, "example_row": None,
                         "example_value": "", "detail": f"declared {dataset.columns[column]} column not in the file"})
        summary.append({"column": column, "type": dataset.columns[column], "present": False})
        for check in _checks_for(column, dataset, rule):
            ctx.skip_metric(f"{check}.{keys[column]}", f"column {column!r} is not in the file")

    for result in checked.columns:
        column = result.column
        row = {"column": column, "type": result.kind, "present": True, **result.stats}
        for check, found in result.found.items():
            metrics[f"{check}.{keys[column]}"] = found.count
            row[check] = found.count
            if found.count:
                findings.append({"check": check, "column": column, "count": found.count, "example_row": found.row,
                                 "example_value": found.value[:200], "detail": result.details[check]})
        if "outliers_skipped" in result.stats:
            ctx.skip_metric(f"outliers.{keys[column]}", result.stats["outliers_skipped"])
        summary.append(row)

    duplicate_rows, finding = checked.duplicate_rows
    findings += [finding] if finding else []
    metrics.update({"rows": rows, "columns": len(dataset.columns), "missing_columns": len(absent),
                    "duplicate_rows": duplicate_rows})
    if key:
        missing_key = [c for c in key if c in absent]
        if missing_key:
            ctx.skip_metric("duplicate_keys", f"key column {missing_key[0]!r} is not in the file")
        else:
            metrics["duplicate_keys"], finding = checked.duplicate_keys
            findings += [finding] if finding else []
    for check in CHECKS:
        metrics[f"total.{check}"] = sum(v for k, v in metrics.items() if k.startswith(f"{check}."))
    metrics["findings"] = len(findings)
    ctx.log_metrics(metrics)

    table = pd.DataFrame(findings, columns=["check", "column", "count", "example_row", "example_value", "detail"])
    table["example_row"] = table["example_row"].astype("Int64")
    ctx.log_table(table, "findings")
    columns = pd.DataFrame(summary)
    ctx.log_table(columns, "columns")
    ctx.log_figure(_figure(columns, rows, name), "findings_by_column")
    ctx.report(_report(name, path, rows, dataset, rule, key, table, metrics, absent))


def _checks_for(column: str, dataset: Dataset, rule: OutlierRule) -> list[str]:
    """The per-column metrics a declared column would get."""
    kind = dataset.columns[column]
    checks = ["missing"] + (["type_violations"] if kind != "string" else [])
    if column in dataset.ranges and kind in NUMERIC_KINDS:
        checks.append("out_of_range")
    if kind in NUMERIC_KINDS and (rule.kind == "iqr" or rule.column == column):
        checks.append("outliers")
    return checks
def _figure(columns: pd.DataFrame, rows: int, name: str) -> Any:
    """A grid of declared columns by check: the count in each cell, coloured by share of rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import PercentFormatter

    counts = columns.reindex(columns=list(CHECKS)).to_numpy(dtype=float)
    share = counts / max(rows, 1)
    figure, axis = plt.subplots(figsize=(6.5, 1.4 + 0.38 * max(len(columns), 1)), layout="constrained")
    image = axis.imshow(np.ma.masked_invalid(share), cmap="OrRd", vmin=0, vmax=max(float(np.nanmax(share, initial=0)), 0.01),
                        aspect="auto")
    axis.set_facecolor("#eeeeee")
    for (i, j), value in np.ndenumerate(counts):
        present = bool(columns["present"].iloc[i])
        label = ("absent" if j == 0 else "") if not present else ("–" if np.isnan(value) else f"{int(value):,}")
        axis.text(j, i, label, ha="center", va="center", fontsize=9,
                  color="white" if not np.isnan(share[i, j]) and share[i, j] > 0.6 * image.get_clim()[1] else "black")
    axis.set_xticks(range(len(CHECKS)), ["missing", "type\nviolations", "out of\nrange", "outliers"])
    axis.set_yticks(range(len(columns)), [f"{c} ({t})" for c, t in zip(columns["column"], columns["type"])])
    axis.xaxis.tick_top()
    axis.set_title(f"Data quality of {name}: {rows:,} rows\n(– = check does not apply)", fontsize=10)
    figure.colorbar(image, ax=axis, label="share of rows", fraction=0.04, format=PercentFormatter(1.0))
    return figure


def _report(name: str, path: Path, rows: int, dataset: Dataset, rule: OutlierRule, key: list[str],
            table: pd.DataFrame, metrics: dict[str, float], absent: list[str]) -> str:
    import pandas as pd

    lines = [f"## Data quality of `{name}`", "",
             f"`{path.name}`: {rows:,} rows, {len(dataset.columns)} declared columns"
             + (f" ({len(absent)} not in the file: {', '.join(absent)})" if absent else "") + ".",
             f"Outliers: {rule.describe()} (rule `{rule.text}`)."
             + (f" Key: {', '.join(key)}." if key else ""), ""]
    if table.empty:
        lines.append("**No findings.**")
    else:
        lines += [f"**{len(table)} findings.**", "",
                  "| check | column | count | share of rows | example row | example value | detail |",
                  "|---|---|---:|---:|---:|---|---|"]
        for r in table.itertuples():
            share = f"{r.count / rows:.2%}" if rows and r.check != "missing_column" else ""
            example = "" if pd.isna(r.example_row) else r.example_row
            value = str(r.example_value).replace("|", "\\|")
            lines.append(f"| {r.check} | {r.column} | {r.count:,} | {share} | {example} | `{value}` | {r.detail} |")
    clean = [c for c in CHECKS if not metrics.get(f"total.{c}")]
    lines += ["", f"Duplicate rows: {metrics['duplicate_rows']:,}."
              + (f" Duplicate keys: {metrics['duplicate_keys']:,}." if "duplicate_keys" in metrics else "")]
    if clean:
        lines.append("Nothing found by: " + ", ".join(c.replace("_", " ") for c in clean) + ".")
    lines += ["", "![Findings by column and check](figures/findings_by_column.png)"]
    lines += ["", ("Rows are numbered from 1 after the header, as bedrot-lab's load errors number them. "
                   "Missing means empty; in a typed column also a null marker the loader reads as null "
                   "(NA, NULL, ...). A type violation is a present value that does not parse as the declared "
                   "type (int: whole number; date: YYYY-MM-DD; month: YYYY-MM; bool: true/false/1/0).")]
    return "\n".join(lines)


@hookimpl
def register_experiments(register):
    register(data_quality)
