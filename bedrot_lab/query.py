"""SQL over the lake's catalog data sets with DuckDB: typed views, bounded memory, clear errors.

Each data set a query names becomes a view of its file, with the columns typed as the
catalog declares them (``month`` and ``date`` columns parsed from their text). DuckDB
streams the file in parallel and holds at most ``[compute] memory_limit``, spilling the
rest to a folder under the lake's state folder, so a group-by over a statement of tens of
millions of rows runs in a few hundred MB. A value of the wrong type, bytes that are not
UTF-8, a row with too many fields or one too long are reported the way
:func:`~bedrot_lab.lake.read_dataset` reports them: file, column, data row, line.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import lake
from .errors import BedrotLabError
from .lake import (
    TIMESTAMP_FORMATS,
    Dataset,
    DatasetError,
    _arrow_type_fits,
    _check_columns,
    csv_header,
    field_count_error,
    long_row_error,
    type_error,
    utf8_error,
)

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    import pyarrow as pa

    from .config import Settings

#: DuckDB's types for the catalog's column types
SQL_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN",
             "date": "VARCHAR", "month": "VARCHAR", "datetime": "VARCHAR"}
#: column types read as text and parsed in the view (DuckDB's CSV reader takes one date format per file)
PARSED_TYPES = ("date", "month", "datetime")
#: the longest row DuckDB first reads; a longer one makes it read again with four times the room, up to
#: :data:`~bedrot_lab.lake.MAX_BLOCK_SIZE` (its buffers grow with this, so it starts small)
FIRST_LINE_SIZE = 2_000_000
#: seconds a query runs before a terminal shows its progress
PROGRESS_AFTER = 1.0


class QueryError(BedrotLabError):
    """A query DuckDB cannot run (bad SQL, an unknown data set or column, memory): one line."""


@dataclass(frozen=True)
class Source:
    """One catalog data set as a query sees it: the file it resolves to and its header."""

    dataset: Dataset
    path: Path
    header: tuple[str, ...]
    empty: bool = False  # a file without even a header: the declared columns, no rows


class QueryEngine:
    """A DuckDB connection over the catalog, opened on first use and closed with :meth:`close`.

    A name in a query that ``catalog`` holds is that data set, read from the file it
    resolves to in the lake of ``settings``; other names are the query's own. ``progress``
    is called with one line of progress every half second while a long
    query runs (a terminal's status line), and with ``None`` when it ends.
    """

    def __init__(self, settings: Settings, catalog: Mapping[str, Dataset],
                 progress: Callable[[str | None], None] | None = None):
        self.settings = settings
        self.catalog = catalog
        self.progress = progress
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._sources: dict[str, Source] = {}
        self._line_sizes: dict[str, int] = {}
        self._spill: Path | None = None

    # -- the connection ---------------------------------------------------------------

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            import duckdb

            from .config import DEFAULT_MEMORY_LIMIT, memory_limit_bytes

            self._spill = spill_folder(self.settings.state_dir)
            limit = memory_limit_bytes(self.settings.memory_limit) or memory_limit_bytes(DEFAULT_MEMORY_LIMIT)
            config = {"memory_limit": f"{max(limit // 2**20, 16)}MiB", "temp_directory": str(self._spill),
                      "threads": self.settings.threads or os.cpu_count() or 1}
            self._connection = duckdb.connect(config=config)
            # measured for query_progress() when wanted, never printed by DuckDB itself (it would on stdout)
            try:
                self._connection.execute(f"SET enable_progress_bar = {str(self.progress is not None).lower()}; "
                                         "SET enable_progress_bar_print = false")
            except duckdb.InvalidInputException:
                pass  # in a Jupyter kernel DuckDB refuses any progress setting without ipywidgets; it is off there
        return self._connection

    def close(self) -> None:
        """Close the connection and remove what it spilled."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._spill is not None:
            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    # -- queries ----------------------------------------------------------------------

    def sources(self, query: str, *, own: Iterable[str] = ()) -> list[Source]:
        """The catalog data sets ``query`` reads, each made a view of its file; names in
        ``own`` are the query's own tables, not the catalog's."""
        import duckdb

        try:
            names = sorted(_table_names(query) - set(own))
        except duckdb.Error as exc:
            raise QueryError(f"the query cannot be read: {_first_line(exc)}") from None
        found = []
        for name in names:
            source = self._source(name)
            if source is not None:
                found.append(source)
        return found

    def sql(self, query: str, *, arrow: bool = False, params: Sequence[Any] | None = None,
            tables: Mapping[str, Any] | None = None, label: str = "query") -> pd.DataFrame | pa.Table:
        """Run ``query`` and return its result as a DataFrame (or an Arrow table). ``tables``
        are DataFrames or Arrow tables the query reads by their names, besides the catalog."""
        import duckdb

        tables = dict(tables or {})
        if clash := sorted(set(tables) & set(self.catalog)):
            raise QueryError(f"table {clash[0]!r} is a data set of the catalog: give the table another name")
        while True:
            sources = self.sources(query, own=tables)
            try:
                for name, table in tables.items():
                    self.connection.register(name, table)
                with _Progress(self, label):
                    relation = self.connection.sql(query, params=params or None)
                    return relation.to_arrow_table() if arrow else relation.df()
            except duckdb.Error as exc:
                if not self._retry_longer_lines(exc, sources):
                    raise self._explain(exc, sources) from None
            finally:
                for name in tables:
                    self.connection.unregister(name)

    def aggregate(self, name: str, by: Sequence[str], sums: Sequence[str], *, rows: str | None = None,
                  arrow: bool = False, label: str | None = None) -> pd.DataFrame | pa.Table:
        """Sums of ``sums`` per distinct ``by`` over data set ``name``, in no particular order
        (a whole-number column sums to a whole number); with ``rows``, also the number of rows
        of each group in a column of that name."""
        source = self._source(name)
        if source is None:
            raise QueryError(f"no data set {name!r} in the catalog")
        _check_columns(source.dataset, source.path, source.header, [*by, *sums])
        totals = [f"CAST(sum({_quoted(c)}) AS BIGINT) AS {_quoted(c)}"
                  if source.dataset.columns.get(c) == "int" else f"sum({_quoted(c)}) AS {_quoted(c)}" for c in sums]
        if rows:
            totals.append(f"count(*) AS {_quoted(rows)}")
        keys = ", ".join(map(_quoted, by))
        query = f"SELECT {', '.join([*map(_quoted, by), *totals])} FROM {_quoted(name)}"
        if by:
            query += f" GROUP BY {keys}"
        return self.sql(query, arrow=arrow, label=label or source.path.name)

    # -- views ------------------------------------------------------------------------

    def _source(self, name: str) -> Source | None:
        if name in self._sources:
            return self._sources[name]
        dataset = self.catalog.get(name)
        if dataset is None:
            return None
        path = dataset.locate(self.settings)
        header = csv_header(dataset, path) if dataset.format == "csv" else _parquet_columns(dataset, path)
        source = self._sources[name] = Source(dataset, path, tuple(header or dataset.columns), empty=not header)
        self._line_sizes[name] = FIRST_LINE_SIZE
        self._create_view(name, source)
        return source

    def _create_view(self, name: str, source: Source) -> None:
        self.connection.execute(f"CREATE OR REPLACE TEMP VIEW {_quoted(name)} AS {self._select(name, source)}")

    def _select(self, name: str, source: Source) -> str:
        dataset, path = source.dataset, source.path
        kinds = {column: dataset.columns.get(column, "string") for column in source.header}
        if dataset.format == "parquet":
            return f"SELECT * FROM read_parquet({_literal(str(path))})"
        if dataset.format != "csv":
            raise DatasetError(f"data set {dataset.name!r}: cannot read {path.suffix} files ({path})")
        if source.empty:
            columns = [f"CAST(NULL AS {_sql_type(kind)}) AS {_quoted(c)}" for c, kind in kinds.items()]
            return f"SELECT {', '.join(columns) or '1 AS empty'} WHERE false"
        columns = "{" + ", ".join(f"{_literal(c)}: {_literal(SQL_TYPES[kind])}" for c, kind in kinds.items()) + "}"
        scan = (f"read_csv({_literal(str(path))}, header = true, auto_detect = false, columns = {columns}, "
                f"delim = {_literal(dataset.delimiter)}, quote = '\"', escape = '\"', "
                f"max_line_size = {self._line_sizes[name]})")
        # an empty value is '' in a text column, as ctx.load reads it (read_csv's force_not_null is
        # not applied when a query reads only some of the columns), and parsed in a date column
        replaced = [f"coalesce({_quoted(c)}, '') AS {_quoted(c)}" for c, kind in kinds.items() if kind == "string"]
        replaced += [f"strptime({_quoted(c)}, {_formats(kind)}) AS {_quoted(c)}"
                     for c, kind in kinds.items() if kind in PARSED_TYPES]
        return f"SELECT * REPLACE ({', '.join(replaced)}) FROM {scan}" if replaced else f"SELECT * FROM {scan}"

    def _retry_longer_lines(self, exc: Exception, sources: Iterable[Source]) -> bool:
        """When ``exc`` is a row longer than DuckDB was allowed to read, let that data set's
        view read rows four times as long, up to MAX_BLOCK_SIZE; True when it should run again."""
        if "Maximum line size" not in str(exc):
            return False
        source = _source_named_in(exc, sources)
        if source is None:
            return False
        name = next(n for n, s in self._sources.items() if s is source)
        if self._line_sizes[name] >= lake.MAX_BLOCK_SIZE:
            return False
        self._line_sizes[name] = min(4 * self._line_sizes[name], lake.MAX_BLOCK_SIZE)
        self._create_view(name, source)
        return True

    # -- errors -----------------------------------------------------------------------

    def _explain(self, exc: Exception, sources: Sequence[Source]) -> BedrotLabError:
        """One line for what DuckDB could not do: a data set's bad value (file, column, row,
        line) when that is the cause, else the query's problem."""
        import duckdb

        message = str(exc)
        if isinstance(exc, duckdb.OutOfMemoryException):
            return QueryError(f"the query needs more memory than [compute] memory_limit = "
                              f"{self.settings.memory_limit!r} allows, even spilling to disk ({_first_line(exc)}); "
                              "raise it in bedrot-lab.toml, or make the query's groups fewer")
        source = _source_named_in(exc, sources) or (sources[0] if len(sources) == 1 else None)
        if source is not None and source.dataset.format == "csv":
            found = _data_error(source, message) or _parse_error(sources, message)
            if found is not None:
                return found
        elif (found := _parse_error(sources, message)) is not None:
            return found
        if isinstance(exc, duckdb.CatalogException) and "does not exist" in message:
            known = ", ".join(sorted(self.catalog)) or "none"
            return QueryError(f"{_first_line(exc)}; the catalog's data sets: {known}")
        if source is not None and not isinstance(exc, (duckdb.ParserException, duckdb.BinderException)):
            return DatasetError(f"{source.path}: data set {source.dataset.name!r} cannot be read: {_first_line(exc)}")
        return QueryError(_first_line(exc))


class _Progress:
    """While a query runs, report DuckDB's own measure of its progress every half second."""

    def __init__(self, engine: QueryEngine, label: str):
        self.engine, self.label = engine, label
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Progress:
        if self.engine.progress is not None:
            self._thread = threading.Thread(target=self._report, name="bedrot-query-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _report(self) -> None:
        started = time.monotonic()
        shown = False
        while not self._done.wait(PROGRESS_AFTER if not shown else 0.5):
            try:
                percent = self.engine.connection.query_progress()
            except Exception:  # the query ended between the check and the call
                break
            if percent < 0:
                continue
            self.engine.progress(f"{self.label}: {percent:5.1f}% read, {time.monotonic() - started:.0f} s")
            shown = True
        if shown:
            self.engine.progress(None)


def terminal_progress(stream: Any = None) -> Callable[[str | None], None] | None:
    """A status-line writer on ``stream`` (stderr) when it is a terminal, else None (no progress)."""
    stream = stream or sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return None
    width = [0]

    def show(line: str | None) -> None:
        text = line or ""
        stream.write("\r" + text.ljust(width[0]) + ("" if line else "\r"))
        stream.flush()
        width[0] = len(text) if line else 0

    return show


def spill_folder(state_dir: Path) -> Path:
    """A folder for this process's spilled query state, under ``state_dir/spill/``; the
    folders of processes that are gone (killed mid-query) are removed first."""
    root = state_dir / "spill"
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        pid = folder.name.partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    folder = root / f"{os.getpid()}-{threading.get_ident()}"
    folder.mkdir(exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_CONVERSION = re.compile(r'Error when converting column "(.*?)"\. Could not convert string "(.*?)" to', re.DOTALL)
_UNPARSED = re.compile(r'Could not parse string "(.*?)" according to format specifier', re.DOTALL)
_PARAMETER = re.compile(r"\?|\$\d+")
_FILE = re.compile(r"^\s*file = (.+)$", re.MULTILINE)


def _data_error(source: Source, message: str) -> DatasetError | None:
    """What DuckDB's CSV reader could not read in ``source``, as lake.read_dataset says it."""
    dataset, path, header = source.dataset, source.path, list(source.header)
    if "Maximum line size" in message:
        return long_row_error(dataset, path, header)
    match = _CONVERSION.search(message)
    if match and match.group(1) in header:
        return type_error(dataset, path, header, header.index(match.group(1)), match.group(2))
    if "Invalid unicode" in message:
        return utf8_error(dataset, path, header)
    if "Expected Number of Columns" in message:
        return field_count_error(dataset, path, header)
    return None


def _parse_error(sources: Iterable[Source], message: str) -> DatasetError | None:
    """A date or month column holding text that is not one: the first such field of the sources."""
    match = _UNPARSED.search(message)
    if not match:
        return None
    value = match.group(1)
    for source in sources:
        header = list(source.header)
        for index, column in enumerate(header):
            if source.dataset.columns.get(column) in PARSED_TYPES:
                error = type_error(source.dataset, source.path, header, index, value)
                if "data row" in str(error):
                    return error
    return None


def _source_named_in(exc: Exception, sources: Iterable[Source]) -> Source | None:
    match = _FILE.search(str(exc))
    if not match:
        return None
    named = match.group(1).strip()
    return next((s for s in sources if str(s.path) == named), None)


def _table_names(query: str) -> set[str]:
    """The tables ``query`` reads. DuckDB cannot tell for a query with parameters (``?``,
    ``$1``), so those are read as NULL for the question; nor for a join ``USING`` a column
    (it looks for the column in tables it does not have), so then every name in the query
    is taken for a table it may read (the catalog's are made views; others are not)."""
    import duckdb

    try:
        return duckdb.get_table_names(query)
    except duckdb.BinderException as exc:
        if "prepared parameter" not in str(exc):
            return _identifiers(query)
    text = list(query)
    for start, kind in duckdb.tokenize(query):
        if kind == duckdb.token_type.operator and (found := _PARAMETER.match(query, start)):
            text[start:found.end()] = ["NULL", *" " * (found.end() - start - 1)]
    try:
        return duckdb.get_table_names("".join(text))
    except duckdb.BinderException:
        return _identifiers(query)


def _identifiers(query: str) -> set[str]:
    import duckdb

    tokens = duckdb.tokenize(query)
    names = set()
    for (start, kind), (end, _) in zip(tokens, [*tokens[1:], (len(query), None)]):
        if kind == duckdb.token_type.identifier:
            name = query[start:end].strip()
            names.add(name[1:-1].replace('""', '"') if name.startswith('"') else name)
    return names


def _parquet_columns(dataset: Dataset, path: Path) -> list[str]:
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    for column, kind in dataset.columns.items():
        if column in schema.names and not _arrow_type_fits(schema.field(column).type, kind):
            raise DatasetError(f"{path}: column {column!r} of data set {dataset.name!r} should be {kind}, "
                               f"but the file stores {schema.field(column).type}")
    return list(schema.names)


def _formats(kind: str) -> str:
    """The timestamp formats a ``kind`` column is read with, as a DuckDB list, its own first
    (strptime tries them in order, so most values parse at the first try)."""
    own = {"date": "%Y-%m-%d", "month": "%Y-%m"}.get(kind)
    ordered = sorted(TIMESTAMP_FORMATS, key=lambda layout: layout != own)
    return "[" + ", ".join(map(_literal, ordered)) + "]"


def _sql_type(kind: str) -> str:
    return "TIMESTAMP" if kind in PARSED_TYPES else SQL_TYPES[kind]


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
