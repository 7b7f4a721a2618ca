"""The run context handed to experiment code: params, data, and logging to the run."""

from __future__ import annotations

import hashlib
import io
import logging
import numbers
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BedrotLabError
from .lake import cached_sha256, read_dataset
from .tracking import is_finite

if TYPE_CHECKING:
    import pandas as pd

    from .experiments import Experiment
    from .lab import Lab
    from .query import QueryEngine
    from .tracking import RunRecorder

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
#: a CSV input up to this size has its rows counted for its profile if the run did not load it
#: whole (by the run's query engine, from the page cache); a larger one is not read again for that
ROWS_COUNTED_UP_TO = 64 * 2**20


class MetricError(BedrotLabError, TypeError):
    """A metric logged as values of different types (a number, then text or a bool)."""


def _metric_kind(value: Any) -> str:
    """"a number", "a bool", "text" or the value's type: what a metric's values must agree on."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "a bool"
    if isinstance(value, numbers.Number):
        return "a number"
    return "text" if isinstance(value, str) else f"a {type(value).__name__}"


def _caller() -> str:
    """``file:line`` of the code that called into this module (the experiment's line)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"


def artifact_name(name: str) -> str:
    """``name`` made safe for an artifact file name."""
    return _SAFE_NAME.sub("_", name).strip("_") or "unnamed"


class RunContext:
    """What an experiment function gets: ``ctx.params``, ``ctx.load``, ``ctx.log_*``,
    ``ctx.workdir`` and ``ctx.log``."""

    def __init__(self, lab: Lab, experiment: Experiment, params: Mapping[str, Any], recorder: RunRecorder,
                 digests: InputDigests | None = None):
        self.lab = lab
        self.digests = digests or InputDigests(lab.settings.state_dir / "digests.json")
        self.experiment = experiment
        self.params: dict[str, Any] = dict(params)
        self.recorder = recorder
        self.log = logging.getLogger(f"bedrot_lab.run.{experiment.name}")
        self.inputs: dict[str, str] = {}
        self._rows: dict[str, int] = {}  # rows of the data sets a load read whole
        self.outputs: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self._metric_kinds: dict[str, tuple[str, str]] = {}  # metric -> its first value's kind, and where
        self.report_parts: list[str] = []
        self._reported = 0  # report parts already written to report.md

    @property
    def settings(self):
        return self.lab.settings

    @property
    def run_id(self) -> str:
        """The MLflow run's id (waits for the run to be open, see :class:`~bedrot_lab.tracking.OpeningRun`)."""
        return self.recorder.run_id

    @cached_property
    def workdir(self) -> Path:
        """A folder for this run's files: ``sandbox/users/<user>/<experiment>/runs/<run id>``.

        Created on first use. Its bytes are logged as ``run.sandbox_bytes`` when
        the run ends, and ``bedrot-lab sandbox usage --by run`` lists it.
        """
        folder = self.workdir_path
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def workdir_path(self) -> Path:
        """Where :attr:`workdir` is, without creating it."""
        return self.settings.zone("sandbox") / "users" / self.settings.user / self.experiment.name / "runs" / self.run_id

    # -- inputs ---------------------------------------------------------------------

    def dataset_path(self, name: str) -> Path:
        """The file catalog data set ``name`` resolves to, recorded as the run's input."""
        with self._reading([name]) as paths:
            return paths[name]

    def load(self, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Catalog data set ``name`` as a pandas DataFrame, typed as declared.

        The file is recorded as an input of the run (path and sha256). A missing
        file, a missing column or a value of the wrong type raises an error that
        names the file and the column. For a large file, prefer :meth:`sql` or
        :meth:`aggregate`, which never hold it whole.
        """
        dataset = self.lab.dataset(name)
        with self._reading([name]) as paths:
            frame = read_dataset(dataset, paths[name], columns)
            self._rows[name] = len(frame)
            return frame

    def load_text(self, name: str) -> pd.DataFrame:
        """Catalog data set ``name`` with every column as the text it holds (nothing
        parsed, an empty value as ``""``), for checks that count bad values instead of
        failing on the first. Recorded as an input like :meth:`load`."""
        from .lake import read_text

        dataset = self.lab.dataset(name)
        with self._reading([name]) as paths:
            frame = read_text(dataset, paths[name])
            self._rows[name] = len(frame)
            return frame

    def sql(self, query: str, *, arrow: bool = False, params: Sequence[Any] | None = None,
            tables: Mapping[str, Any] | None = None) -> Any:
        """Run SQL ``query`` over the catalog: each data set is a view named after it, its
        columns typed as declared. Returns a DataFrame (an Arrow table with ``arrow=True``).

        DuckDB runs it in parallel within ``[compute] memory_limit``, spilling to disk
        beyond it, so it suits statements of tens of millions of rows. The data sets it
        names are recorded as inputs like :meth:`load`, and a bad value in one is reported
        the same way (file, column, row, line); a query DuckDB cannot run raises one line
        saying why. ``params`` fill the query's ``?`` placeholders; ``tables`` are
        DataFrames or Arrow tables (an earlier result) the query reads by their names.
        """
        sources = self.query_engine.sources(query, own=tables or {})
        with self._reading([source.dataset.name for source in sources]):
            return self.query_engine.sql(query, arrow=arrow, params=params, tables=tables,
                                         label=", ".join(source.path.name for source in sources) or "query")

    def aggregate(self, name: str, by: Sequence[str], sums: Sequence[str], *, rows: str | None = None,
                  arrow: bool = False) -> Any:
        """Sums of ``sums`` per distinct ``by`` over data set ``name``, without loading it:
        ``SELECT by, sum(...) FROM name GROUP BY by`` through :meth:`sql`, in no particular
        order. A whole-number column sums to a whole number; ``rows`` names a column for the
        number of rows of each group (for :func:`~bedrot_lab.analysis.tracks.canonical_spellings`)."""
        self.lab.dataset(name)  # an unknown name: the catalog's error
        with self._reading([name]):
            return self.query_engine.aggregate(name, by, sums, rows=rows, arrow=arrow)

    @cached_property
    def query_engine(self) -> QueryEngine:
        """The run's DuckDB connection over the catalog (opened on first use)."""
        from .query import QueryEngine

        return QueryEngine(self.settings, self.lab.datasets, progress=self.lab.progress)

    @contextmanager
    def _reading(self, names: Sequence[str]) -> Iterator[dict[str, Path]]:
        """Record data sets ``names`` as inputs of the run around the block that reads them.

        A file whose sha256 is not cached yet is hashed on a second thread (see
        :class:`InputDigests`) while the block reads it; the input is recorded once the
        hash is done. When the block fails before that, the input is not recorded.
        """
        paths = {name: self.lab.dataset(name).locate(self.settings) for name in names}
        digests = {name: self.digests.start(paths[name]) for name in dict.fromkeys(names) if name not in self.inputs}
        try:
            yield paths
        except BaseException:
            self._record_inputs(paths, {name: future for name, future in digests.items() if future.done()},
                                count=False)
            raise
        self._record_inputs(paths, digests)

    def _record_inputs(self, paths: Mapping[str, Path], digests: Mapping[str, Future[str]], *,
                       count: bool = True) -> None:
        for name, future in digests.items():
            if name in self.inputs or future.cancelled() or future.exception() is not None:
                continue
            rows = self._rows.get(name) if not count else self._row_count(name, paths[name])
            self.recorder.log_input(name, paths[name], future.result(), self.lab.dataset(name).columns, rows=rows)
            self.inputs[name] = future.result()

    def _row_count(self, name: str, path: Path) -> int | str | None:
        """The rows of data set ``name`` for its input's profile: as a load counted them, from a
        Parquet file's footer, or counted by the query engine in a CSV file of at most
        :data:`ROWS_COUNTED_UP_TO` bytes; for a larger one, a note that they were not counted
        (that would read the whole file once more). None when counting fails."""
        if name in self._rows:
            return self._rows[name]
        try:
            if self.lab.dataset(name).format == "parquet":
                import pyarrow.parquet as pq

                return pq.ParquetFile(path).metadata.num_rows
            if path.stat().st_size > ROWS_COUNTED_UP_TO:
                return f"not counted (a CSV file over {ROWS_COUNTED_UP_TO // 2**20} MiB is not read again for it)"
            quoted = '"' + name.replace('"', '""') + '"'
            return self.query_engine.sql(f"SELECT count(*) FROM {quoted}", arrow=True, label=path.name)[0][0].as_py()
        except Exception as exc:  # the profile is a courtesy: the run goes on without its rows
            self.log.debug("rows of %s not counted: %s", name, exc)
            return None

    # -- metrics --------------------------------------------------------------------

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Log one metric (buffered; see :meth:`log_metrics`)."""
        self.log_metrics({name: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metrics in batches. A metric keeps one type: logging a name again as another
        (a number, then a bool or text) raises a :class:`MetricError` naming both places.
        A value that is not a finite number (NaN, inf, None) is not logged; the run gets a
        ``skipped.<name>`` tag instead, and a warning says how to skip on purpose
        (:meth:`skip_metric`)."""
        finite = {}
        for name, value in metrics.items():
            self._check_metric_type(name, value)
            if is_finite(value):
                finite[name] = float(value)
            else:
                self.skip_metric(name, f"value is {value!r}")
                self.log.warning(
                    "experiment %r (plugin %r): metric %r is %r at %s, so it is not logged (the run has tag "
                    "skipped.%s); if that can happen, skip it on purpose and say why: "
                    "ctx.skip_metric(%r, '<why there is no value>')",
                    self.experiment.name, self.experiment.plugin, name, value, _caller(), name, name)
        if finite:
            self.recorder.log_metrics(finite, step=step)

    def _check_metric_type(self, name: str, value: Any) -> None:
        if value is None:
            return
        kind = _metric_kind(value)
        first = self._metric_kinds.setdefault(name, (kind, _caller()))
        if first[0] != kind:
            raise MetricError(
                f"experiment {self.experiment.name!r} (plugin {self.experiment.plugin!r}) logs metric {name!r} "
                f"as {kind} ({value!r}) at {_caller()}, and as {first[0]} at {first[1]}; a metric keeps one "
                f"type: log numbers only (a yes/no as 1 or 0), and text as a tag: ctx.set_tag({name!r}, ...)")

    def skip_metric(self, name: str, reason: str) -> None:
        """Record that metric ``name`` could not be computed, and why."""
        self.skipped[name] = reason
        self.recorder.set_tags({f"skipped.{name}": reason[:500]}, by_name=False)
        self.log.info("metric %s skipped: %s", name, reason)

    def set_tag(self, key: str, value: str) -> None:
        """Tag the run. A value that looks like a credential, or whose key names one
        (``api_token``), is stored masked; ``bedrot.internal.masked`` records what was."""
        self.recorder.set_tags({key: value})

    # -- artifacts ------------------------------------------------------------------

    def log_table(self, frame: pd.DataFrame, name: str, *, mlflow_table: bool | None = None,
                  mask: bool = True) -> None:
        """Log a table as ``tables/<name>.parquet``, and as an MLflow table
        (``tables/<name>.json``, shown by the UI) when it has at most 10,000 rows.

        Text cells that look like credentials, and whole columns named like one
        (``api_key``), are masked; ``mask=False`` keeps a table that legitimately
        holds key-like ids as it is.
        """
        log_table(self.recorder, frame, name, mlflow_table=mlflow_table, mask=mask, scratch=self._scratch)

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as ``figures/<name>.png`` and close it."""
        self.recorder.log_figure(figure, f"figures/{artifact_name(name)}.png")
        import matplotlib.pyplot as plt

        plt.close(figure)

    def log_text(self, text: str, artifact_file: str, *, mask: bool = True) -> None:
        """Log ``text`` as an artifact file, credentials masked unless ``mask=False``."""
        self.recorder.log_text(text, artifact_file, mask=mask)

    def report(self, markdown: str) -> None:
        """Add a section to the run's ``report.md`` (written, credentials masked, when the run ends)."""
        self.report_parts.append(markdown.strip())

    def log_output(self, frame: pd.DataFrame, name: str, format: str = "parquet") -> dict[str, Any]:
        """Record a data set this run produces, ready for promotion.

        Written as ``outputs/<name>.<format>`` (parquet or csv) with
        ``outputs/<name>.json`` holding its schema, row count and sha256 digest;
        the run gets ``output.<name>.*`` tags. Returns that record.
        """
        if format not in ("parquet", "csv"):
            raise ValueError(f"output {name!r}: format must be parquet or csv, not {format!r}")
        base = artifact_name(name)
        data = _parquet_bytes(frame) if format == "parquet" else frame.to_csv(index=False).encode()
        record = {
            "name": name,
            "file": f"outputs/{base}.{format}",
            "format": format,
            "rows": len(frame),
            "schema": {str(c): str(t) for c, t in frame.dtypes.items()},
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
        self._log_bytes(data, record["file"])
        self.recorder.log_dict(record, f"outputs/{base}.json")
        self.recorder.set_tags({
            f"output.{name}.file": record["file"],
            f"output.{name}.rows": str(record["rows"]),
            f"output.{name}.sha256": record["sha256"],
        }, by_name=False)
        self.outputs[name] = record
        return record

    def _log_bytes(self, data: bytes, artifact_file: str) -> None:
        log_bytes(self.recorder, data, artifact_file, self._scratch)

    @cached_property
    def _scratch(self) -> Path:
        import tempfile

        return Path(tempfile.mkdtemp(prefix=f"bedrot-{self.run_id[:8]}-"))

    def flush(self) -> None:
        """Send the metrics logged so far, and the report if it grew (a notebook's context
        does it after every cell; the runner when the run ends)."""
        self.recorder.flush()
        self._write_report()

    def close(self) -> None:
        """Write the report, then :meth:`release` (called by the runner)."""
        try:
            self._write_report()
        finally:
            self.release()

    def _write_report(self) -> None:
        if self.report_parts and len(self.report_parts) != self._reported:
            title = f"# {self.experiment.name}\n\n"
            self.recorder.log_text(title + "\n\n".join(self.report_parts) + "\n", "report.md")
            self._reported = len(self.report_parts)

    def release(self) -> None:
        """Close the query engine, drop the digests not started and remove scratch files."""
        if "query_engine" in self.__dict__:
            self.query_engine.close()
        self.digests.close()
        if "_scratch" in self.__dict__:
            import shutil

            shutil.rmtree(self._scratch, ignore_errors=True)


class InputDigests:
    """The sha256 of a run's input files, each computed once on a thread of its own
    (hashlib lets the query that reads the file run meanwhile). The runner starts those
    of the data sets an experiment declares before it opens the MLflow run, so that a
    first run over a large file hashes it while MLflow loads, not after."""

    def __init__(self, cache_file: Path):
        self.cache_file = cache_file
        self._pool: ThreadPoolExecutor | None = None
        self._started: dict[Path, Future[str]] = {}

    def start(self, path: Path) -> Future[str]:
        """The digest of ``path``, being computed (or read from the cache)."""
        if path not in self._started:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="bedrot-digest")
            self._started[path] = self._pool.submit(cached_sha256, path, self.cache_file)
        return self._started[path]

    def close(self) -> None:
        """Drop the digests not started yet (one being computed finishes in the background)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def log_table(recorder: RunRecorder, frame: pd.DataFrame, name: str, *, mlflow_table: bool | None = None,
              mask: bool = True, scratch: Path | None = None) -> None:
    """Log ``frame`` to ``recorder``'s run as :meth:`RunContext.log_table` does, for code that
    logs a run without a run context (a housekeeping job): ``tables/<name>.parquet``, and
    ``tables/<name>.json`` as an MLflow table when it has at most 10,000 rows (or ``mlflow_table``)."""
    base = artifact_name(name)
    frame = frame.reset_index() if _has_named_index(frame) else frame
    if mask:
        frame = recorder.masker.frame(frame, f"table {base}")
    log_bytes(recorder, _parquet_bytes(frame), f"tables/{base}.parquet", scratch)
    if mlflow_table if mlflow_table is not None else len(frame) <= 10_000:
        recorder.log_table(_json_safe(frame), f"tables/{base}.json")


def log_bytes(recorder: RunRecorder, data: bytes, artifact_file: str, scratch: Path | None = None) -> None:
    """Log ``data`` as artifact ``artifact_file``, written first in folder ``scratch``
    (a temporary folder of its own when None) and removed from there after."""
    if scratch is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bedrot-artifact-") as folder:
            log_bytes(recorder, data, artifact_file, Path(folder))
        return
    folder = scratch / Path(artifact_file).parent
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / Path(artifact_file).name
    path.write_bytes(data)
    try:
        recorder.log_file(path, str(Path(artifact_file).parent))
    finally:
        path.unlink(missing_ok=True)


def _has_named_index(frame: pd.DataFrame) -> bool:
    return any(name is not None for name in frame.index.names)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _json_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy MLflow's table logger can serialise: datetimes as ISO strings."""
    out = frame.copy()
    for column in out.columns:
        dtype = str(out[column].dtype)
        if dtype.startswith(("datetime", "period")):
            out[column] = out[column].astype(str)
        elif dtype in ("string", "str"):
            out[column] = out[column].astype(object)
    out.columns = [str(c) for c in out.columns]
    return out
