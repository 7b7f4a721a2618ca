"""The only module that talks to MLflow: the store, experiments, and one run's record."""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import random
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from .errors import BedrotLabError
from .locks import file_lock

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Experiment as MlflowExperiment

    from .config import Settings
    from .experiments import Experiment
    from .secrets import Masker

log = logging.getLogger(__name__)

T = TypeVar("T")
METRIC_BATCH = 1000  # MLflow's MAX_METRICS_PER_BATCH
FLUSH_SECONDS = 5.0
#: the prefix of the tags that are bedrot-lab's own bookkeeping (which process, which lake, what
#: was masked, the heartbeat): everything a person reads is outside it. Runs recorded before it
#: have these tags as ``bedrot.<name>``, which :func:`internal_tag` still reads
INTERNAL = "bedrot.internal."
#: what the run's masker masked, cumulatively; written by the recorder only
MASKED_TAG = INTERNAL + "masked"
#: the Markdown description of a run or an experiment, shown by the MLflow UI
NOTE_TAG = "mlflow.note.content"
NOTE_CHARS = 20_000  # MLflow's longest experiment tag value
#: the experiment tag by which the MLflow 3 UI tells GenAI experiments (traces, judges, prompts)
#: from classic ones (runs, metrics, models); every experiment of the lab is the latter
KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
#: an experiment tag holding a saved view of the runs table (the UI's "Views" menu lists it by
#: name); the runs table also opens in it at ``#/experiments/<id>/runs?viewStateShareKey=headline``
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
HEADLINE_VIEW = "headline"
HEADLINE_VIEW_NAME = "Headline metrics"
#: MLflow's own experiment, ``Default``, which every new store starts with
DEFAULT_EXPERIMENT = "0"


def internal_tag(tags: Mapping[str, str], name: str) -> str | None:
    """Internal tag ``name`` (``pid``, ``heartbeat`` ...) of ``tags``, under its current
    name or the one runs recorded before :data:`INTERNAL` (``bedrot.<name>``)."""
    value = tags.get(INTERNAL + name)
    return value if value is not None else tags.get(f"bedrot.{name}")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None. As in SQLAlchemy,
    ``sqlite:////abs/mlflow.db`` is absolute and ``sqlite:///mlflow.db`` relative."""
    if not uri.startswith("sqlite:"):
        return None
    path = urlparse(uri).path[1:]
    return Path(path) if path and path != ":memory:" else None


def use_tracking_uri(uri: str) -> None:
    """Point MLflow's fluent API at ``uri`` without exporting it: ``mlflow.set_tracking_uri``
    also sets ``MLFLOW_TRACKING_URI``, which would then override every other lake's
    settings in this process."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


#: store errors after which the same call can simply be made again: SQLite's lock
#: (nothing was committed), and a row that a concurrent writer inserted first in a
#: get-or-create (a data set) or an upsert (a tag, an alias), as SQLite and as PostgreSQL
#: (through a server) word it: the second attempt finds the row and links or updates it
RETRYABLE_ERRORS = ("database is locked", "database table is locked", *(
    f"UNIQUE constraint failed: {table}." for table in (
        "datasets", "tags", "experiment_tags", "registered_model_tags", "model_version_tags",
        "registered_model_aliases")), *(
    f'duplicate key value violates unique constraint "{key}"' for key in (
        "dataset_pk", "tag_pk", "experiment_tag_pk", "registered_model_tag_pk", "model_version_tag_pk",
        "registered_model_alias_pk")))


class StoreUnavailable(BedrotLabError):
    """The tracking store cannot be opened (its folder cannot be made, a file is in the way)."""


class StoreBusy(BedrotLabError):
    """The tracking store stayed locked by other processes for longer than ``[tracking] store_wait``."""


def retry_store(call: Callable[..., T], *args: Any, wait: float = 120.0, **kwargs: Any) -> T:
    """``call(*args, **kwargs)``, made again with jittered backoff while the store
    answers with one of :data:`RETRYABLE_ERRORS`, for up to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    delay = 0.05
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            reason = next((e for e in RETRYABLE_ERRORS if e in str(exc)), None)
            if reason is None:
                raise
            if time.monotonic() + delay > deadline:
                raise StoreBusy(
                    f"the tracking store stayed busy for {wait:g} s ({reason.rstrip(': .')}): other processes "
                    "keep writing to it; try again, raise [tracking] store_wait, or share a tracking server "
                    "(see docs/configuration.md)") from exc
            log.debug("store busy (%s); retrying %s in %.2f s", reason, getattr(call, "__name__", call), delay)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)


class RetryingClient:
    """An :class:`~mlflow.MlflowClient` whose every call goes through :func:`retry_store`,
    so that many processes writing to one SQLite store wait for each other instead of failing."""

    def __init__(self, client: MlflowClient, wait: float):
        self._client = client
        self.store_wait = wait

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return retry_store(attribute, *args, wait=self.store_wait, **kwargs)

        return call


def open_store(settings: Settings) -> MlflowClient:
    """A client on the lake's tracking store, creating and migrating an embedded
    SQLite store first if needed.

    MLflow corrupts a new SQLite store for good when several processes create it
    at once, so creation happens under a lock beside the database file.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # through a server, MLflow prints each run's link to stdout as the run ends (amid a command's
    # own output, --json included), reading the whole run back for it: one more round trip per run
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow draws a progress bar on stderr for every artifact it downloads (runs show, register)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow import MlflowClient

    # MLflow announces creating and migrating a store at INFO, amid a command's own output
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    uri = settings.tracking_uri
    use_tracking_uri(uri)
    database = sqlite_path(uri)
    if database is None:
        if uri.startswith(("http://", "https://")):
            from .credentials import use_credentials

            use_credentials(settings)
            check_server(settings)
        return RetryingClient(MlflowClient(uri), settings.store_wait)  # type: ignore[return-value]
    # MlflowClient() opens the store, which is when MLflow creates and migrates it;
    # later clients reuse MLflow's cached store.
    try:
        with file_lock(database.with_name(database.name + ".lock")):
            client = RetryingClient(MlflowClient(uri), settings.store_wait)
            if settings.embedded_store:
                _delete_empty_default(client)
            else:
                client.search_experiments(max_results=1)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the tracking store {settings.tracking_uri_shown}: {exc.strerror} "
                               f"({exc.filename}); check [tracking] uri in bedrot-lab.toml or MLFLOW_TRACKING_URI"
                               ) from None
    return client  # type: ignore[return-value]


def check_server(settings: Settings, timeout: float = 10.0) -> None:
    """Fail at once, in one line, when the tracking server at ``settings.tracking_uri`` does not
    answer: MLflow's own client would retry a refused connection for about four minutes."""
    import requests

    try:
        requests.get(settings.tracking_uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        raise StoreUnavailable(
            f"cannot reach the tracking server {settings.tracking_uri_shown} ({_reason(exc)}); is it running "
            "(`bedrot-lab server status` on its host)? Check [tracking] uri in bedrot-lab.toml or "
            "MLFLOW_TRACKING_URI") from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    for reason in ("Connection refused", "Name or service not known", "timed out", "No route to host",
                   "certificate verify failed"):
        if reason in text:
            return reason.lower()
    return type(exc).__name__


def store_error(exc: BaseException) -> BedrotLabError | None:
    """One line for an error of a tracking server that is the user's to act on (a refused
    login, a missing permission, a server gone), else None."""
    code = getattr(exc, "error_code", None)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if code == "UNAUTHENTICATED":
        return BedrotLabError(
            "the tracking server did not accept " + (f"the password of {user!r}" if user else "a call without an "
            "account") + ": set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (see docs/server.md)")
    if code == "PERMISSION_DENIED":
        return BedrotLabError(f"the tracking server refused {user or 'this account'!r} permission for this: an "
                              "account may read others' experiments but write only its own, unless an admin "
                              "grants more (bedrot-lab server user set-permission)")
    if "API request to" in str(exc) and "failed with exception" in str(exc):
        return StoreUnavailable(f"the tracking server stopped answering ({_reason(exc)}); "
                                "see `bedrot-lab server status` on its host")
    return None


def _delete_empty_default(client: MlflowClient) -> None:
    """Delete MLflow's ``Default`` experiment (id 0) while it holds no run: the lab never
    records there, and the UI would list it first, empty. MLflow's store makes it again only
    when its row is gone (``mlflow gc`` purged it); it is then deleted again here."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    try:
        default = client.get_experiment(DEFAULT_EXPERIMENT)
        if default.lifecycle_stage == "active" and not client.search_runs(
                [DEFAULT_EXPERIMENT], run_view_type=ViewType.ALL, max_results=1):
            client.delete_experiment(DEFAULT_EXPERIMENT)
    except MlflowException as exc:  # gone, or deleted by another process meanwhile
        log.debug("Default experiment left as it is: %s", exc)


def experiment_id(client: MlflowClient, settings: Settings, name: str,
                  about: Experiment | None = None) -> str:
    """The MLflow experiment for bedrot experiment ``name``, created on first use with
    its artifacts under the lake's artifact root (for local stores), tagged for MLflow's
    classic view of runs (:data:`KIND_TAG`), and described by ``about`` (see :func:`experiment_tags`)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        found = _create_experiment(client, settings, name)
    if found.lifecycle_stage == "deleted":  # deleted in the UI: bring it back rather than fail
        client.restore_experiment(found.experiment_id)
    for key, value in _changed_tags(found, about).items():
        client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def _create_experiment(client: MlflowClient, settings: Settings, name: str) -> MlflowExperiment:
    location = None
    if not settings.tracking_uri.startswith(("http:", "https:", "databricks")):
        location = (settings.artifact_root / "artifacts" / name).resolve().as_uri()
    database = sqlite_path(settings.tracking_uri)
    lock = database.with_name(database.name + ".lock") if database else settings.state_dir / "experiments.lock"
    with file_lock(lock):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found
        try:
            created = client.create_experiment(name, artifact_location=location, tags={KIND_TAG: MODEL_DEVELOPMENT})
        except Exception:
            # another process (without our lock, e.g. on a server) created it first
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found
        return client.get_experiment(created)


def experiment_tags(experiment: Experiment, created: int) -> dict[str, str]:
    """The experiment tags that say what ``experiment`` is in the MLflow UI: its plugin's
    description as the experiment's note (masked), and a saved view of the runs table with
    its headline metrics as columns (:data:`HEADLINE_VIEW`), dated ``created`` (epoch ms)."""
    import json

    from .secrets import Masker

    tags = {}
    if experiment.description:
        tags[NOTE_TAG] = Masker().text(experiment.description, "experiment description")[:NOTE_CHARS]
    if experiment.headline:
        # the envelope of a view saved in the UI ("Views" menu): a name, and the state as JSON text
        columns = ["attributes.`Dataset`", *(f"metrics.`{metric}`" for metric in experiment.headline)]
        state = json.dumps({"selectedColumns": columns, "columnOrder": columns})
        tags[VIEW_TAG_PREFIX + HEADLINE_VIEW] = json.dumps({"name": HEADLINE_VIEW_NAME, "createdAt": created,
                                                            "state": state})
    return tags


def _changed_tags(found: MlflowExperiment, about: Experiment | None) -> dict[str, str]:
    """The experiment tags to write: the kind when missing (a person may have chosen
    another in the UI), and what :func:`experiment_tags` says where it changed (the plugin's
    description is the experiment's: an edit of it in the UI lasts until the next run)."""
    current = found.tags
    wanted = experiment_tags(about, found.creation_time or 0) if about is not None else {}
    if KIND_TAG not in current:
        wanted[KIND_TAG] = MODEL_DEVELOPMENT
    return {key: value for key, value in wanted.items() if current.get(key) != value}


class Store:
    """A lake's tracking store, opened once and reused for every run of a :class:`Lab`."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = open_store(settings)
        self._experiment_ids: dict[str, str] = {}

    def experiment_id(self, name: str, about: Experiment | None = None) -> str:
        """The MLflow experiment id for ``name`` (looked up or created, and described by
        ``about``, once)."""
        if name not in self._experiment_ids:
            self._experiment_ids[name] = experiment_id(self.client, self.settings, name, about)
        return self._experiment_ids[name]

    def start_run(self, experiment: str, *, about: Experiment | None = None, **kwargs: Any) -> RunRecorder:
        """Open a run in experiment ``experiment`` (a name), described by ``about``; see :func:`start_run`."""
        try:
            return start_run(self.client, self.experiment_id(experiment, about), **kwargs)
        except Exception:
            if experiment not in self._experiment_ids:
                raise
            # the experiment may have been deleted since we looked it up
            del self._experiment_ids[experiment]
            return start_run(self.client, self.experiment_id(experiment, about), **kwargs)


class RunRecorder:
    """Writes one run's record in as few store calls as possible, masked.

    Every string bound for the store goes through the run's :class:`~bedrot_lab.secrets.Masker`
    (params, tags, metric names, text and dict artifacts; tables when the caller
    asks), and the :data:`MASKED_TAG` tag is rewritten with everything masked so far.
    Metrics are buffered and sent with ``log_batch`` (a loop of ``log_metric`` is
    about 40 x slower on SQLite); the buffer is flushed when full, every few
    seconds while logging, and when the run ends. A recorder made by :func:`start_run`
    also keeps the run's heartbeat until it ends.
    """

    def __init__(self, client: MlflowClient, run_id: str, masker: Masker | None = None):
        from .secrets import Masker

        self.client = client
        self.run_id = run_id
        self.masker = masker or Masker()
        #: the run as the store created it (set by :func:`start_run`), for :func:`make_active`
        self.run: Any = None
        self._metrics: list[Any] = []
        self._metric_keys: dict[str, str] = {}
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.heartbeat: Heartbeat | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, value) for key, value in self.masker.mapping(params, "param").items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100], synchronous=True)
        self._record_masked()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Queue metrics; every value must be finite (the caller filters)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._lock:
            self._metrics.extend(Metric(self._metric_key(k), float(v), now, step or 0) for k, v in metrics.items())
            due = len(self._metrics) >= METRIC_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS
        if due:
            self.flush()

    def _metric_key(self, key: str) -> str:
        if key not in self._metric_keys:
            self._metric_keys[key] = self.masker.key(key, "metric name")
        return self._metric_keys[key]

    @property
    def pending(self) -> int:
        """How many metrics are queued, not sent yet."""
        return len(self._metrics)

    def flush(self) -> None:
        with self._lock:
            pending, self._metrics = self._metrics, []
            self._last_flush = time.monotonic()
        for start in range(0, len(pending), METRIC_BATCH):
            self.client.log_batch(self.run_id, metrics=pending[start : start + METRIC_BATCH], synchronous=True)
        self._record_masked()

    def set_tags(self, tags: Mapping[str, Any], *, by_name: bool = True) -> None:
        """Tag the run, masking values by shape and (``by_name``) by a credential-like key.
        :data:`MASKED_TAG` is the recorder's own and cannot be set."""
        if MASKED_TAG in tags:
            log.warning("tag %s is kept by bedrot-lab (what was masked); not overwritten", MASKED_TAG)
            tags = {k: v for k, v in tags.items() if k != MASKED_TAG}
        clean = self.masker.mapping(tags, "tag", by_name=by_name)
        summary = self.masker.summary()
        if summary:
            clean[MASKED_TAG] = summary
        self._write_tags(clean)

    def _write_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)

    def _record_masked(self) -> None:
        summary = self.masker.summary()
        if summary:
            self._write_tags({MASKED_TAG: summary})

    def log_text(self, text: str, artifact_file: str, *, mask: bool = True) -> None:
        self.client.log_text(self.run_id, self.masker.text(text, artifact_file) if mask else text, artifact_file)
        self._record_masked()

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, self.masker.data(data, artifact_file), artifact_file)
        self._record_masked()

    def log_file(self, local_path: Path, artifact_dir: str | None = None) -> None:
        """Log a file as it is (the caller masks what needs masking)."""
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def log_table(self, frame: pd.DataFrame, artifact_file: str) -> None:
        """Log an MLflow table as it is (mask it first with ``masker.frame``)."""
        self.client.log_table(self.run_id, frame, artifact_file)

    def log_input(
        self,
        name: str,
        source: Path,
        sha256: str,
        columns: Mapping[str, str],
        context: str = "input",
        rows: int | str | None = None,
    ) -> None:
        """Record a data set the run read: its path, a sha256 of the file's bytes as
        digest (MLflow's own only covers 10,000 rows), its declared columns, and a profile
        of rows, bytes and the full sha256, which the UI's data set drawer shows. ``rows``
        is the number of rows, or why it was not counted."""
        import json

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.types.schema import ColSpec, Schema

        mlflow_types = {"int": "long", "float": "double", "bool": "boolean", "date": "datetime",
                        "month": "datetime", "datetime": "datetime", "string": "string"}
        schema = Schema([ColSpec(mlflow_types[kind], column) for column, kind in columns.items()]) if columns else None
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": all are local files
            warnings.simplefilter("ignore")
            dataset_source = resolve_dataset_source(str(source))
        size = source.stat().st_size
        meta = MetaDataset(dataset_source, name=name, digest=sha256[:32], schema=schema)._to_mlflow_entity()
        profile = {**({"rows": rows} if rows is not None else {}), "bytes": size, "sha256": sha256}
        entity = Dataset(meta.name, meta.digest, meta.source_type, meta.source, meta.schema, json.dumps(profile))
        tags = [InputTag("mlflow.data.context", context), InputTag("sha256", sha256), InputTag("bytes", str(size))]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=tags)])

    def end(self, status: str) -> None:
        """Flush what is queued and close the run with ``status`` (FINISHED, FAILED, KILLED)."""
        import mlflow

        if self.heartbeat is not None:
            self.heartbeat.stop()
        try:
            self.flush()
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                retry_store(mlflow.end_run, status=status, wait=getattr(self.client, "store_wait", 0.0))
            else:
                self.client.set_terminated(self.run_id, status=status)


def start_run(
    client: MlflowClient,
    experiment: str,
    *,
    run_name: str | None,
    tags: Mapping[str, Any],
    description: str,
    parent_run_id: str | None = None,
    masker: Masker | None = None,
    active: bool = True,
    start_time: int | None = None,
) -> RunRecorder:
    """Open an MLflow run and return its recorder. With ``active`` it is the calling
    thread's active run, so experiment code may also use ``mlflow.*`` directly (see
    :func:`make_active` for a run opened on another thread). Name, tags and description
    are masked by ``masker`` before they are stored; ``start_time`` (epoch milliseconds) is
    when the work began, if before now (a run opened beside it). The run is created with the tags of
    :func:`process_tags`, and its recorder beats its heartbeat until it ends."""
    import mlflow

    from .secrets import Masker

    masker = masker or Masker()
    tags = {**{k: v for k, v in tags.items() if k != MASKED_TAG}, **process_tags()}
    clean_tags = masker.mapping(tags, "tag")
    run_name = masker.text(run_name, "run name") if run_name else None
    description = masker.text(description, "description")
    summary = masker.summary()
    if summary:
        clean_tags[MASKED_TAG] = summary
    wait = getattr(client, "store_wait", 0.0)
    if active:
        use_tracking_uri(client.tracking_uri)
        run = retry_store(mlflow.start_run, wait=wait, experiment_id=experiment, run_name=run_name, tags=clean_tags,
                          description=description or None, nested=parent_run_id is not None,
                          parent_run_id=parent_run_id, log_system_metrics=False)
    else:
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

        extra = {MLFLOW_RUN_NOTE: description or None, MLFLOW_PARENT_RUN_ID: parent_run_id}
        clean_tags.update({key: value for key, value in extra.items() if value})
        run = client.create_run(experiment, start_time=start_time, tags=resolve_tags(clean_tags), run_name=run_name)
    _remember_artifact_location(client, run)
    recorder = RunRecorder(client, run.info.run_id, masker)
    recorder.run = run
    recorder.heartbeat = Heartbeat(client, recorder.run_id)
    return recorder


def _remember_artifact_location(client: MlflowClient, run: Any) -> None:
    """Give MLflow's client the artifact store of the new ``run``, which it would otherwise ask
    the tracking store for at the run's first artifact (a ``get_run`` round trip per run)."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.tracking._tracking_service import utils

        repositories = utils._artifact_repos_cache  # MLflow's own cache, keyed by run id
        if len(repositories) > 1024:  # MLflow's bound for it
            repositories.popitem(last=False)
        repositories[run.info.run_id] = get_artifact_repository(run.info.artifact_uri,
                                                                tracking_uri=client.tracking_uri)
    except Exception as exc:  # only a saved round trip: MLflow asks the store itself
        log.debug("artifact location of run %s not remembered: %s", run.info.run_id, exc)


#: a run's outcome as a person judged it (``runs annotate --outcome``), searchable in MLflow
OUTCOME_TAG = "bedrot.outcome"
OUTCOMES = ("success", "failure", "inconclusive")
#: one tag per finding written back to a run, named to sort by time; the description holds them all
FINDING_TAG = INTERNAL + "finding."
RUN_NOTE_CHARS = 8000  # MLflow's longest run tag value: a longer description would be cut
#: rounds of appending to a description that other annotations keep changing (each round appends all)
ANNOTATE_ROUNDS = 50


def annotate_run(client: MlflowClient, run_id: str, *, user: str, finding: str | None = None,
                 outcome: str | None = None, masker: Masker | None = None) -> dict[str, Any]:
    """Write what a person learned from run ``run_id`` back to it, in any state: ``finding``
    (Markdown, masked) appended to its description as a section ``**Finding (date, user).** ...``,
    ``outcome`` (one of :data:`OUTCOMES`) as tag :data:`OUTCOME_TAG`, and who annotated it
    when. Returns what was set. What the masker masks is added to :data:`MASKED_TAG`.

    Concurrent annotations of one run all keep their finding: each is stored first in a tag
    of its own (:data:`FINDING_TAG`), then every finding tag that the description lacks is
    appended to it, and read back, until a read shows them all there. Whoever writes the
    description last reads it back after that, so a write made from an older read never stays."""
    import re
    from datetime import datetime

    from mlflow.entities import RunTag

    from .secrets import Masker

    masker = masker or Masker()
    now = datetime.now().astimezone()
    done: dict[str, Any] = {"run_id": run_id, "outcome": outcome, "finding": None,
                            "annotated_by": user, "annotated_at": now.isoformat(timespec="seconds")}
    tags = {"bedrot.annotated_by": user, "bedrot.annotated_at": done["annotated_at"]}
    if outcome is not None:
        tags[OUTCOME_TAG] = outcome
    if finding is not None:
        text = finding.strip()
        # a list, heading, quote, table or code block would not be one after the bold title
        after = "\n\n" if re.match(r"([-*+]\s|\d+[.)]\s|#|>|\||```)", text) else " "
        done["finding"] = masker.text(f"**Finding ({now:%Y-%m-%d}, {user}).**{after}{text}", "finding")
        description = client.get_run(run_id).data.tags.get(NOTE_TAG, "")
        if len(description) + 2 + len(done["finding"]) > RUN_NOTE_CHARS:
            from .errors import UsageError

            raise UsageError(f"the finding does not fit: run {run_id}'s description would be over MLflow's "
                             f"{RUN_NOTE_CHARS} characters ({len(description)} already); shorten the finding")
        tags[f"{FINDING_TAG}{time.time_ns()}.{os.urandom(3).hex()}"] = done["finding"]
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()], synchronous=True)
    for _ in range(ANNOTATE_ROUNDS):
        if _append_findings(client, run_id, masker.notes):
            return done
    raise StoreBusy(f"run {run_id}'s description kept changing while the finding was appended to it; "
                    "the finding is kept in its tag: annotate the run again to append it")


def _append_findings(client: MlflowClient, run_id: str, notes: list[str]) -> bool:
    """True when the run's description holds every finding of its tags and :data:`MASKED_TAG` every
    one of ``notes``; else append what is missing (it is read back in the next round)."""
    from mlflow.entities import RunTag

    tags = client.get_run(run_id).data.tags
    description = tags.get(NOTE_TAG, "")
    missing = [text for key, text in sorted(tags.items()) if key.startswith(FINDING_TAG) and text not in description]
    masked = tags.get(MASKED_TAG) or ""
    known = masked.split("; ") if masked else []
    merged = "; ".join([*known, *(note for note in notes if note not in known)])[:5000]  # as Masker.summary
    update = {NOTE_TAG: "\n\n".join([description, *missing]).strip()} if missing else {}
    if merged != masked:
        update[MASKED_TAG] = merged
    if not update:
        return True
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in update.items()], synchronous=True)
    return False


def make_active(recorder: RunRecorder) -> None:
    """Make the run of ``recorder``, opened with ``active=False`` (on another thread), the
    calling thread's active MLflow run."""
    import mlflow

    use_tracking_uri(recorder.client.tracking_uri)
    try:
        from mlflow.tracking.fluent import ActiveRun, _active_run_stack

        stack = _active_run_stack.get()
    except (ImportError, AttributeError):
        stack = None
    if recorder.run is not None and stack == []:
        # what mlflow.start_run(run_id=...) ends with, without its three round trips to the
        # store before it (read the run, mark it RUNNING, which it is, read it again)
        stack.append(ActiveRun(recorder.run))
        return
    retry_store(mlflow.start_run, run_id=recorder.run_id, log_system_metrics=False,
                wait=getattr(recorder.client, "store_wait", 0.0))


class OpeningRun:
    """The recorder of a run another thread is opening (importing MLflow, opening the
    store, creating the run) while the experiment starts: any use of it waits until the
    run is open, and the first use from the thread that asked for it makes the run that
    thread's active MLflow run. What the opening raised is raised at that use.

    A cold ``bedrot-lab run`` spends seconds loading MLflow, all in Python under the
    GIL; a query in DuckDB or a sha256 runs beside it on the other cores."""

    def __init__(self, open_run: Callable[[], RunRecorder]):
        from concurrent.futures import Future

        self._opened: Future[RunRecorder] = Future()
        self._owner = threading.get_ident()
        self._active = False
        threading.Thread(target=self._open, args=(open_run,), name="bedrot-open-run", daemon=True).start()

    def _open(self, open_run: Callable[[], RunRecorder]) -> None:
        try:
            self._opened.set_result(open_run())
        except BaseException as exc:
            self._opened.set_exception(exc)

    def recorder(self) -> RunRecorder:
        """The open run's recorder, once it is open."""
        recorder = self._opened.result()
        if not self._active and threading.get_ident() == self._owner:
            self._active = True
            make_active(recorder)
        return recorder

    def end(self, status: str) -> None:
        """Close the run (without making it active first when nothing used it)."""
        self._opened.result().end(status)

    def failure(self) -> BaseException | None:
        """What opening the run raised, once it is done; None when the run is open."""
        return self._opened.exception()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder(), name)


class _Alarm:
    """One daemon thread per process that calls functions at deadlines, so a run
    does not pay for starting a timer thread of its own."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: dict[int, tuple[float, Any]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, function: Any) -> int:
        with self._wake:
            key = next(self._keys)
            self._due[key] = (time.monotonic() + delay, function)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="bedrot-alarm", daemon=True)
                self._thread.start()
            self._wake.notify()
        return key

    def cancel(self, key: int) -> None:
        with self._wake:
            self._due.pop(key, None)

    def _loop(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                ready = [key for key, (when, _) in self._due.items() if when <= now]
                functions = [self._due.pop(key)[1] for key in ready]
                if not functions:
                    self._wake.wait(min((when for when, _ in self._due.values()), default=now + 3600) - now)
                    continue
            for function in functions:
                function()


_ALARM = _Alarm()


class SystemMetrics:
    """MLflow's system metrics, switched on only for runs that last longer than ``after`` seconds."""

    def __init__(self, recorder: RunRecorder | OpeningRun, settings: Settings):
        self.recorder = recorder
        self.interval = settings.system_metrics_interval
        self.tracking_uri = settings.tracking_uri
        self._monitor: Any = None
        self._stopped = False
        self._alarm = _ALARM.call_later(settings.system_metrics_after, self._start) if settings.system_metrics else None

    def _start(self) -> None:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        # MLflow announces starting and stopping the monitor at INFO, amid the command's own output
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        try:
            monitor = SystemMetricsMonitor(self.recorder.run_id, sampling_interval=self.interval,
                                           tracking_uri=self.tracking_uri)
            monitor.start()
        except Exception as exc:  # system metrics are a bonus, never a reason to fail
            log.debug("system metrics not started: %s", exc)
            return
        self._monitor = monitor
        if self._stopped:  # the run ended while the monitor was starting
            self.stop()

    def stop(self) -> None:
        self._stopped = True
        if self._alarm is not None:
            _ALARM.cancel(self._alarm)
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            try:
                monitor.finish()
            except Exception as exc:
                log.debug("system metrics not stopped cleanly: %s", exc)


# -- which process a run is, and that it still lives --------------------------------------

#: tags every run is created with, so that the daemon's ``reap`` job can tell a run whose
#: process is gone from a live one (bedrot_lab.daemon.reap); read them with :func:`internal_tag`
PID_TAG = INTERNAL + "pid"
HOST_TAG = INTERNAL + "host"
#: field 22 of ``/proc/<pid>/stat``: with the pid, it names one process, never a later one given the same pid
PROC_START_TAG = INTERNAL + "proc_start"
#: the boot and pid namespace the pid belongs to: another machine of the same name, or a
#: container sharing the host's name, has other pids
PID_SCOPE_TAG = INTERNAL + "pid_scope"
#: epoch seconds, when the run was created and then every HEARTBEAT_SECONDS while it lasts
HEARTBEAT_TAG = INTERNAL + "heartbeat"
HEARTBEAT_SECONDS = 60.0


def proc_stat(pid: int) -> tuple[str, int] | None:
    """The state (``R``, ``S``, ``Z`` ...) and start time (clock ticks since boot, field 22)
    of process ``pid`` from ``/proc/<pid>/stat``; None when /proc does not show it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
    except (OSError, ValueError):
        return None
    # field 2, the command name in parentheses, may hold spaces and parentheses itself
    end = text.rfind(b")")
    if end < 0:
        return None
    fields = text[end + 1:].split()
    try:
        return fields[0].decode("ascii"), int(fields[19])
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


@functools.lru_cache(maxsize=4)
def _own_start(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[1] if stat else None


@functools.cache
def pid_scope() -> str | None:
    """``<boot id>/<pid namespace>`` of this process (None without /proc): where its pid means it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return None
    return f"{boot}/{namespace.removeprefix('pid:[').removesuffix(']')}"


def process_tags() -> dict[str, str]:
    """The tags a run is created with to say which process makes it: pid, host, the
    process's start time and pid scope (on Linux), and a first heartbeat."""
    pid = os.getpid()
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname(), HEARTBEAT_TAG: str(int(time.time()))}
    start, scope = _own_start(pid), pid_scope()
    if start is not None:
        tags[PROC_START_TAG] = str(start)
    if scope is not None:
        tags[PID_SCOPE_TAG] = scope
    return tags


class Heartbeat:
    """Refreshes a run's heartbeat tag (:data:`HEARTBEAT_TAG`) every :data:`HEARTBEAT_SECONDS` while it
    lasts, from the process's one alarm thread; a run shorter than that writes nothing.
    Best effort: a beat the store refuses is logged and the next one tried."""

    def __init__(self, client: MlflowClient, run_id: str, interval: float | None = None):
        self.run_id = run_id
        # the retrying client would hold the alarm thread for up to store_wait on a busy store
        self.client = getattr(client, "_client", client)
        self.interval = HEARTBEAT_SECONDS if interval is None else interval
        self._lock = threading.Lock()
        self._stopped = False
        self._alarm = _ALARM.call_later(self.interval, self._beat)

    def _beat(self) -> None:
        with self._lock:
            if self._stopped:
                return
            try:
                retry_store(self.client.set_tag, self.run_id, HEARTBEAT_TAG, str(int(time.time())),
                            wait=self.interval / 2)
            except Exception as exc:
                log.debug("heartbeat of run %s not written: %s", self.run_id, exc)
            self._alarm = _ALARM.call_later(self.interval, self._beat)

    def stop(self) -> None:
        """No beat after this returns."""
        with self._lock:
            self._stopped = True
            _ALARM.cancel(self._alarm)


def is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# -- a run's body in a forked process (bedrot_lab.limits) -----------------------------------

#: the connection pools a forked process inherited: kept referenced, so that they are never
#: garbage-collected (and their connections, which are the parent's, never closed) in it
_INHERITED_POOLS: list[Any] = []
#: MLflow's store classes that keep one SQLAlchemy engine per database for the whole process
_ENGINE_CACHES = {"mlflow.store.tracking.sqlalchemy_store": "SqlAlchemyStore",
                  "mlflow.store.model_registry.sqlalchemy_store": "SqlAlchemyStore",
                  "mlflow.store.jobs.sqlalchemy_store": "SqlAlchemyJobStore"}


def after_fork() -> None:
    """Make MLflow open connections of its own in a process just forked from one that used it:
    the database connections (SQLite, PostgreSQL) and HTTP sessions it inherited are the
    parent's, and two processes talking on one connection corrupt both conversations. Also
    gives the process an alarm thread of its own (threads do not survive a fork)."""
    global _ALARM
    _ALARM = _Alarm()
    for module_name, class_name in _ENGINE_CACHES.items():
        store = getattr(sys.modules.get(module_name), class_name, None)
        if store is None:  # never imported: nothing inherited
            continue
        store._engine_map_lock = threading.Lock()  # another thread may have held it at the fork
        for engine in list(store._engine_map.values()):
            _INHERITED_POOLS.append(engine.pool)
            engine.dispose(close=False)
    request_utils = sys.modules.get("mlflow.utils.request_utils")
    if request_utils is not None:
        request_utils._cached_get_request_session.cache_clear()
