"""One tracked run: params checked, MLflow run opened, hooks called, every ending recorded."""

from __future__ import annotations

import inspect
import logging
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import BedrotLabError
from .plugins import describe
from .secrets import Masker
from .tracking import INTERNAL

if TYPE_CHECKING:
    from .context import InputDigests
    from .experiments import Experiment
    from .lab import Lab
    from .limits import RunLimits
    from .tracking import RunRecorder

log = logging.getLogger(__name__)

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
#: the longest run name made from the params (the runs table shows about this much)
RUN_NAME_CHARS = 60


class RunRefused(BedrotLabError):
    """A ``validate_run`` hook refused the run; nothing was created."""


class RunTerminated(BaseException):
    """Raised in the main thread when the process gets SIGTERM during a run."""


@dataclass
class RunResult:
    """How a run ended."""

    run_id: str
    experiment: str
    status: str
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    children: list[RunResult] = field(default_factory=list)
    interrupted_by: str = ""  # "SIGINT" or "SIGTERM" when KILLED

    @property
    def exit_code(self) -> int:
        if self.status == FINISHED:
            return 0
        return {"SIGINT": 130, "SIGTERM": 143}.get(self.interrupted_by, 1)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "run_id": self.run_id, "experiment": self.experiment, "status": self.status,
            "error": self.error, "params": self.params,
        }
        if self.children:
            data["children"] = [child.to_dict() for child in self.children]
        return data


@dataclass(frozen=True)
class RunRequest:
    """Everything about a run that is known before it starts."""

    experiment: Experiment
    params: dict[str, Any]
    run_name: str | None = None
    note: str = ""
    purpose: str = ""
    methodology: str = ""
    spec: str = ""
    extra_tags: Mapping[str, str] = field(default_factory=dict)

    def description(self) -> str:
        """The run's Markdown description, shown by the MLflow UI."""
        parts = [("Note", self.note), ("Purpose", self.purpose), ("Methodology", self.methodology),
                 ("Experiment", self.experiment.description)]
        return "\n\n".join(f"**{title}.** {text.strip()}" for title, text in parts if text and text.strip())


def prepare(lab: Lab, name: str, raw_params: Mapping[str, Any] | None = None, **fields: Any) -> RunRequest:
    """Look up the experiment (by name, or the notebook or script file ``name``: see
    :meth:`Lab.runnable`) and validate its params; nothing is created yet."""
    experiment = lab.runnable(name)
    return RunRequest(experiment, experiment.validate(raw_params or {}), **fields)


def run(lab: Lab, request: RunRequest, *, parent_run_id: str | None = None) -> RunResult:
    """Run ``request`` as one MLflow run and return how it ended. Never raises for
    a failure of the experiment itself: that is recorded and returned."""
    from .limits import limits_for

    def body(ctx: Any) -> None:
        lab.plugins.hook.before_run(ctx=ctx)
        request.experiment.func(ctx)
        lab.plugins.hook.after_run(ctx=ctx)

    limits = limits_for(lab.settings, lab.settings.user, request.experiment.name)
    return _tracked(lab, request, body, parent_run_id=parent_run_id, limits=limits)


def _tracked(lab: Lab, request: RunRequest, body: Callable[[Any], None], *,
             parent_run_id: str | None = None, result: RunResult | None = None,
             limits: RunLimits | None = None) -> RunResult:
    """Run ``body`` as one MLflow run; with ``limits``, in a child process stopped at them (limits.py)."""
    from .context import RunContext
    from .tracking import OpeningRun, SystemMetrics

    experiment = request.experiment
    reasons = [reason for found in lab.plugins.call_isolated(
        "validate_run", experiment=experiment, params=request.params, settings=lab.settings, lab=lab)
        for reason in found]
    if reasons:
        raise RunRefused("not starting the run: " + "; ".join(reasons))
    tags = run_tags(lab, request)
    if limits:
        from .limits import LIMITS_TAG

        tags[LIMITS_TAG] = limits.describe()
        log.warning("compute limits apply to this run: %s; it runs in a process of its own, stopped when it "
                    "goes past one ([compute.limits] in bedrot-lab.toml)", limits.describe())
    masker = Masker()
    # params first: a value masked by its name is then masked wherever it reappears
    masked = masker.mapping(request.params, "param")
    params = {key: value if text == str(value) else text  # as given, unless masked
              for (key, text), value in zip(masked.items(), request.params.values())}

    digests = _hashing_declared_inputs(lab, experiment)
    outcome = result or RunResult("", experiment.name, FINISHED)
    outcome.params = params
    with _signals_raise():
        started = int(time.time() * 1000)  # the run's start in MLflow, even when it is created later

        run_name = request.run_name or default_run_name(experiment, request.params, shown=params)

        def open_run(active: bool) -> RunRecorder:
            recorder = lab.store.start_run(experiment.name, about=experiment, run_name=run_name, tags=tags,
                                           masker=masker, description=request.description(),
                                           parent_run_id=parent_run_id, active=active,
                                           start_time=None if active else started)
            if request.params:
                recorder.log_params(request.params)
            return recorder

        beside = parent_run_id is None and not _uses_mlflow(experiment)
        recorder = OpeningRun(lambda: open_run(False)) if beside else open_run(True)
        usage = _Usage()
        system = SystemMetrics(recorder, lab.settings)
        ctx = RunContext(lab, experiment, request.params, recorder, digests)

        def run_body() -> None:
            """The body, its failure and its end recorded: what a limited run's child process does."""
            try:
                body(ctx)
            except (KeyboardInterrupt, RunTerminated) as exc:
                outcome.status = KILLED
                outcome.interrupted_by = "SIGTERM" if isinstance(exc, RunTerminated) else "SIGINT"
                outcome.error = f"interrupted by {outcome.interrupted_by}"
                _record_failure(lab, ctx, recorder, exc, outcome.error)
            except Exception as exc:
                outcome.status, outcome.error = FAILED, masker.text(describe(exc), "error")
                if not (isinstance(recorder, OpeningRun) and recorder.failure()):
                    _record_failure(lab, ctx, recorder, exc, outcome.error)
            if not (isinstance(recorder, OpeningRun) and recorder.failure()):
                lab.plugins.call_isolated("on_run_end", ctx=ctx, status=outcome.status)
                ctx.close()

        try:
            if limits:
                usage = _limited(lab, limits, ctx, recorder, run_body, outcome)
            else:
                run_body()
        finally:
            system.stop()
            unopened = recorder.failure() if isinstance(recorder, OpeningRun) else None
            if unopened is not None:  # nothing can be recorded: the store is what failed
                ctx.release()
                raise unopened
            try:
                recorder.log_metrics(usage.metrics())
            finally:
                recorder.end(outcome.status)
                outcome.run_id = recorder.run_id
    return outcome


def _limited(lab: Lab, limits: RunLimits, ctx: Any, recorder: Any, run_body: Callable[[], None],
             outcome: RunResult) -> Any:
    """Run ``run_body`` in a child process under ``limits`` (see :func:`~bedrot_lab.limits.run_in_child`)
    and return what it used; a child that could not record its own end is recorded here."""
    from .context import InputDigests
    from .limits import ChildStopped, run_in_child

    _ = ctx.run_id  # the run is open before the fork (a failure to open it is raised here)

    def in_child() -> None:
        ctx.digests = InputDigests(ctx.digests.cache_file)  # its thread pool stayed in the parent
        run_body()

    try:
        return run_in_child(limits, in_child, outcome, recorder, ctx.workdir_path)
    except ChildStopped as stopped:
        outcome.status, outcome.error, outcome.interrupted_by = stopped.status, str(stopped), stopped.interrupted_by
        _record_failure(lab, ctx, recorder, stopped, outcome.error)
        lab.plugins.call_isolated("on_run_end", ctx=ctx, status=outcome.status)
        ctx.close()
        return stopped.usage


def default_run_name(experiment: Experiment, params: Mapping[str, Any],
                     shown: Mapping[str, Any] | None = None) -> str:
    """The name of a run started without one (MLflow would make up a random one): the
    experiment's name and the params that differ from their defaults, ``artist-clustering k=5``,
    cut to :data:`RUN_NAME_CHARS`. ``shown`` are the values to show (masked), if not ``params``."""
    shown = params if shown is None else shown
    changed = [f"{key}={_short(shown[key])}" for key, value in params.items()
               if key in experiment.params and value != experiment.params[key].default]
    name = " ".join([experiment.name, *changed])
    return name if len(name) <= RUN_NAME_CHARS else name[:RUN_NAME_CHARS - 1] + "…"


def _short(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 20 else text[:19] + "…"


def _uses_mlflow(experiment: Experiment) -> bool:
    """Whether the module of ``experiment`` uses MLflow itself (``mlflow.*`` needs the run
    open and active before the experiment starts); if it cannot be read, assume it does."""
    module = sys.modules.get(experiment.func.__module__)
    try:
        return module is None or "mlflow" in inspect.getsource(module)
    except (OSError, TypeError):
        return True


def _hashing_declared_inputs(lab: Lab, experiment: Experiment) -> InputDigests:
    """Start hashing the files of the data sets ``experiment`` declares, while the store
    opens and the run starts (a file that is missing is left to the experiment to report)."""
    from .context import InputDigests
    from .lake import DatasetError

    digests = InputDigests(lab.settings.state_dir / "digests.json")
    for name in experiment.datasets:
        try:
            digests.start(lab.dataset(name).locate(lab.settings))
        except DatasetError:
            continue
    return digests


def run_tags(lab: Lab, request: RunRequest) -> dict[str, str]:
    """The run's tags from the ``run_tags`` hooks and the request, unmasked (the
    recorder masks them)."""
    experiment = request.experiment
    info = lab.plugin_info(experiment.plugin)
    tags: dict[str, Any] = {}
    for extra in reversed(lab.plugins.call_isolated("run_tags", experiment=experiment,
                                                    params=request.params, settings=lab.settings)):
        tags.update(extra or {})
    tags.update({
        "bedrot.experiment": experiment.name,
        "bedrot.plugin": experiment.plugin,
        "bedrot.plugin_version": info.version,
        INTERNAL + "plugin_source": info.source,
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": request.spec or f"bedrot-lab run {experiment.name}",
    })
    if request.spec:
        tags["bedrot.spec"] = request.spec
    tags.update(request.extra_tags)
    return {k: v for k, v in tags.items() if v not in (None, "")}


def _record_failure(lab: Lab, ctx: Any, recorder: RunRecorder, exc: BaseException, summary: str) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        recorder.log_text(text, "error/traceback.txt")
        recorder.set_tags({"error": summary[:5000]}, by_name=False)
    except Exception as log_error:  # the store may be what failed; keep the original cause
        log.error("could not record the failure: %s", log_error)
    lab.plugins.call_isolated("on_run_failure", ctx=ctx, error=exc)


class _Usage:
    """Wall time, CPU seconds and peak memory of the process over the run."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.cpu = _cpu_seconds()

    def metrics(self) -> dict[str, float]:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "run.wall_seconds": round(time.perf_counter() - self.start, 4),
            "run.cpu_seconds": round(_cpu_seconds() - self.cpu, 4),
            "run.peak_rss_mb": round(peak_kib / 1024, 1),
        }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGTERM into :class:`RunTerminated` for the block (main thread only), so a
    terminated run is closed KILLED instead of being left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise RunTerminated()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
