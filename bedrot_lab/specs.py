"""Experiment specs: TOML files naming an experiment, its params, purpose and sweeps;
a sweep's parent run compares its children and names the best."""

from __future__ import annotations

import itertools
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .errors import UsageError
from .experiments import ParamError
from .runner import FAILED, FINISHED, KILLED, RunRequest, RunResult, RunTerminated, _tracked, run

if TYPE_CHECKING:
    from .experiments import Experiment
    from .lab import Lab

SPEC_KEYS = {"experiment", "notebook", "script", "name", "purpose", "methodology", "note", "params", "sweep", "best",
             "metrics"}
#: the keys naming what a spec runs: an experiment by name, or a file (relative to the lake's root)
TARGET_KEYS = ("experiment", "notebook", "script")
#: the package whose ``*.toml`` files are the specs that come with bedrot-lab (the repo's experiments/)
PACKAGED_SPECS = "bedrot_plugins.experiments"
#: a sweep's parent draws at most this many metrics, one panel each, to stay legible
FIGURE_METRICS = 4
#: metrics the runner logs on every run, never what a sweep compares
_BOOKKEEPING = ("run.", "system/")


class SpecError(ConfigError):
    """A spec file that cannot be used; names the file and the key."""


@dataclass(frozen=True)
class Ranking:
    """How a sweep's child runs are ranked: by ``metric``, the highest first when ``goal``
    is ``"max"``, the lowest when ``"min"``. An empty ``metric`` stands for the
    experiment's first headline metric."""

    goal: str
    metric: str = ""

    def __str__(self) -> str:
        return f"{self.goal} {self.metric}".strip()

    def better(self, value: float, than: float) -> bool:
        return value > than if self.goal == "max" else value < than


@dataclass(frozen=True)
class Spec:
    """A parsed experiment spec.

    Example ``experiments/rps-spotify.toml``::

        experiment = "revenue-per-stream"   # or notebook = "sandbox/verified/x.ipynb",
                                            # or script = "sandbox/analysis/x.py"
        name = "rps weekly"
        purpose = "Which platform pays best per stream?"
        methodology = "Sum earnings and quantity by store."
        best = "max revenue_per_stream_usd"  # optional, with a sweep: what ranks the child runs
        metrics = ["stores"]               # optional, with a sweep: what the parent compares
        [params]
        min_streams = 100
        [sweep]            # optional: one child run per combination
        min_streams = [0, 100, 1000]
    """

    path: Path
    #: the experiment's name, or the notebook's or script's path (relative to the lake's root)
    experiment: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    purpose: str = ""
    methodology: str = ""
    note: str = ""
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    best: Ranking | None = None
    metrics: tuple[str, ...] = ()

    def ranking(self, experiment: Experiment) -> Ranking | None:
        """The ranking of the sweep's children, its metric resolved (``best = "max"`` ranks by
        ``experiment``'s first headline metric); None when the spec names no ``best``."""
        if self.best is None or self.best.metric:
            return self.best
        if not experiment.headline:
            raise SpecError(f'experiment {experiment.name!r} declares no headline metric to rank by; '
                            f'name one: best = "{self.best.goal} METRIC"', self.path, "best")
        return replace(self.best, metric=experiment.headline[0])

    def compared(self, experiment: Experiment) -> list[str]:
        """The metrics a sweep's parent compares: the ranking's, then the spec's ``metrics`` or
        else ``experiment``'s headline (none when it has neither)."""
        ranking = self.ranking(experiment)
        return list(dict.fromkeys([*([ranking.metric] if ranking else []), *(self.metrics or experiment.headline)]))


def load_spec(path: Path) -> Spec:
    """The spec in TOML file ``path``; a :class:`SpecError` names the file and the key that is wrong."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read spec ({exc.strerror})", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML ({exc})", path) from None
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SpecError(f"unknown key; a spec takes {', '.join(sorted(SPEC_KEYS))}", path, unknown[0])
    targets = [key for key in TARGET_KEYS if key in data]
    if len(targets) != 1:
        problem = "required" if not targets else f"give one of {', '.join(targets)}, not {len(targets)}"
        raise SpecError(f"{problem}: what the spec runs: experiment = \"NAME\", notebook = \"PATH.ipynb\" or "
                        "script = \"PATH.py\"", path, targets[-1] if targets else "experiment")
    if not isinstance(data[targets[0]], str) or not data[targets[0]].strip():
        raise SpecError("must be a non-empty string", path, targets[0])
    for key in ("params", "sweep"):
        if not isinstance(data.get(key, {}), dict):
            raise SpecError("must be a table", path, key)
    for key, values in data.get("sweep", {}).items():
        if not isinstance(values, list) or not values:
            raise SpecError("a sweep value must be a non-empty list", path, f"sweep.{key}")
    for key in ("name", "purpose", "methodology", "note"):
        if key in data and not isinstance(data[key], str):
            raise SpecError("must be a string", path, key)
    for key in ("best", "metrics"):
        if key in data and not data.get("sweep"):
            raise SpecError("ranks and compares a sweep's child runs; this spec has no [sweep]", path, key)
    return Spec(
        path=path,
        experiment=data[targets[0]],
        params=dict(data.get("params", {})),
        name=data.get("name"),
        purpose=data.get("purpose", ""),
        methodology=data.get("methodology", ""),
        note=data.get("note", ""),
        sweep=dict(data.get("sweep", {})),
        best=_ranking(data["best"], path) if "best" in data else None,
        metrics=_metric_names(data["metrics"], path) if "metrics" in data else (),
    )


def _ranking(value: Any, path: Path) -> Ranking:
    """``best = "max silhouette_score"`` (or ``"min METRIC"``; ``"max"`` alone: the first headline metric)."""
    words = value.split(maxsplit=1) if isinstance(value, str) else []
    if not words or words[0] not in ("max", "min"):
        raise SpecError(f'must be "max METRIC" or "min METRIC" (e.g. best = "max silhouette_score"), got {value!r}',
                        path, "best")
    return Ranking(words[0], words[1].strip() if len(words) > 1 else "")


def _metric_names(value: Any, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise SpecError(f'must be a list of metric names (e.g. metrics = ["stores"]), got {value!r}', path, "metrics")
    return tuple(v.strip() for v in value)


def packaged_specs() -> dict[str, Path]:
    """The specs that come with bedrot-lab, by file name (none when they are not installed)."""
    import importlib.resources

    try:
        folder = importlib.resources.files(PACKAGED_SPECS)
    except ModuleNotFoundError:
        return {}
    return {item.name: Path(str(item)) for item in sorted(folder.iterdir(), key=lambda i: i.name)
            if item.name.endswith(".toml")}


def spec_requests(lab: Lab, spec: Spec, overrides: Mapping[str, Any], note: str = "",
                  run_name: str | None = None) -> tuple[RunRequest, list[RunRequest]]:
    """The request for the spec's run and one per sweep combination, all validated
    before anything is created. ``overrides`` (from ``-P``) win over the spec."""
    experiment = _experiment(lab, spec)
    spec.ranking(experiment)  # a `best` the experiment cannot answer fails before any run
    base = {**spec.params, **overrides}
    fields = dict(run_name=run_name or spec.name, note=note or spec.note, purpose=spec.purpose,
                  methodology=spec.methodology, spec=str(spec.path))
    try:
        main = RunRequest(experiment, experiment.validate(base), **fields)
        children = []
        keys = sorted(spec.sweep)
        for combo in itertools.product(*(spec.sweep[k] for k in keys)) if keys else ():
            values = dict(zip(keys, combo))
            label = _label({k: values[k] for k in spec.sweep})  # in the spec's order, as the parent shows it
            children.append(RunRequest(
                experiment, experiment.validate({**base, **values}), run_name=label,
                spec=str(spec.path), extra_tags={"bedrot.sweep.child": "true"},
            ))
    except ParamError as exc:
        raise SpecError(str(exc), spec.path, "params") from None
    return main, children


def _experiment(lab: Lab, spec: Spec) -> Experiment:
    """The experiment ``spec`` runs: by name, or the notebook or script it names (a path relative
    to the lake's root)."""
    if not spec.experiment.endswith((".ipynb", ".py")):
        return lab.experiment(spec.experiment)
    path = Path(spec.experiment).expanduser()
    try:
        return lab.runnable(path if path.is_absolute() else lab.settings.root / path)
    except UsageError as exc:
        raise SpecError(str(exc), spec.path, "notebook" if path.suffix == ".ipynb" else "script") from None


def run_sweep(lab: Lab, parent: RunRequest, children: list[RunRequest], spec: Spec | None = None) -> RunResult:
    """A parent run holding one child run per combination, which answers the sweep's question.

    The parent's params are the params the spec sets (or that differ from the defaults)
    and each swept param as its list of values. It logs ``sweep.runs``, ``sweep.failed``,
    the ``sweep`` table (one row per child: swept values, status, metrics, full run id),
    ``figures/sweep.png`` (each compared metric against the swept param) and a
    ``report.md`` with the table and the conclusion. With a ranking (the spec's ``best``),
    it logs the best child's values as ``best.<param>`` params, the best value as the
    ``best.<metric>`` metric and the reason as the ``bedrot.sweep.best`` tag. When every
    child fails, the parent ends FAILED after recording all of that.
    """
    experiment = parent.experiment
    swept = _swept_values(parent, children, spec)
    ranking = spec.ranking(experiment) if spec else None
    explicit = set(spec.params) if spec else set()
    shown = {k: v for k, v in parent.params.items()
             if k not in swept and (k in explicit or v != experiment.params[k].default)}
    params = {**shown, **{k: _listing(values) for k, values in swept.items()}}
    request = replace(parent, params=params, extra_tags={
        **parent.extra_tags, "bedrot.sweep": ", ".join(swept), "bedrot.sweep.size": str(len(children))})
    result = RunResult("", experiment.name, FINISHED, params=params)
    client = lab.store.client

    def body(ctx: Any) -> None:
        from .secrets import is_secret_name

        for key in filter(is_secret_name, swept):
            for value in swept[key]:
                ctx.recorder.masker.remember(str(value))
        done = []
        for child in children:
            outcome = run(lab, child, parent_run_id=ctx.run_id)
            result.children.append(outcome)
            if outcome.status == KILLED:
                raise RunTerminated() if outcome.interrupted_by == "SIGTERM" else KeyboardInterrupt()
            done.append(ChildRun({k: child.params[k] for k in swept}, outcome.status, outcome.run_id,
                                          outcome.error, client.get_run(outcome.run_id).data.metrics))
        summary = SweepSummary(swept, done, ranking,
                               _compared_metrics(spec, experiment, done))
        summary.record(ctx, request.description())
        if done and summary.failed == len(done):
            first = done[0].error
            raise RuntimeError(f"all {summary.failed} child runs failed, the first with: {first[:300]}")

    return _tracked(lab, request, body, result=result)


@dataclass(frozen=True)
class ChildRun:
    """One child of a sweep as the parent sees it."""

    values: dict[str, Any]
    status: str
    run_id: str
    error: str
    metrics: Mapping[str, float]

    @property
    def label(self) -> str:
        return _label(self.values)

    def metric(self, name: str) -> float:
        """Metric ``name`` of a finished child; NaN when it has none or did not finish (what a
        failed run logged before it failed is left out of the comparison)."""
        value = self.metrics.get(name) if self.status == FINISHED else None
        return float(value) if _finite(value) else math.nan


@dataclass
class SweepSummary:
    """What a sweep's children show: the best child and why, the table, the figure, the report."""

    swept: dict[str, list[Any]]
    children: list[ChildRun]
    ranking: Ranking | None
    metrics: list[str]

    @property
    def failed(self) -> int:
        return sum(child.status == FAILED for child in self.children)

    @property
    def ranked(self) -> list[ChildRun]:
        """The finished children with a finite value of the ranking's metric."""
        if self.ranking is None:
            return []
        return [c for c in self.children if _finite(c.metric(self.ranking.metric))]

    @property
    def best(self) -> ChildRun | None:
        """The child with the best value of the ranking's metric (the first of equals)."""
        best = None
        for child in self.ranked:
            if best is None or self.ranking.better(child.metrics[self.ranking.metric], best.metrics[self.ranking.metric]):
                best = child
        return best

    def conclusion(self) -> str:
        """One line: the best child and why, or why there is none."""
        ranking, best = self.ranking, self.best
        if not self.children or self.failed == len(self.children):
            return f"all {len(self.children)} child runs failed; nothing to compare"
        if ranking is None:
            return 'no ranking: the spec names no `best` (e.g. best = "max silhouette_score")'
        if best is None:
            return f"no best: no finished child run logged {ranking.metric}"
        value = best.metrics[ranking.metric]
        ranked = self.ranked
        text = (f"best {best.label}: {ranking.metric} {value:.4g}, "
                f"{'highest' if ranking.goal == 'max' else 'lowest'} of {len(ranked)}")
        failed = sum(c.status != FINISHED for c in self.children)
        unscored = len(self.children) - len(ranked) - failed
        left_out = [f"{failed} failed"] * bool(failed) + [f"{unscored} without {ranking.metric}"] * bool(unscored)
        if left_out:
            text += f" ({', '.join(left_out)})"
        tied = [c.label for c in ranked if c is not best and c.metrics[ranking.metric] == value]
        return text + (f"; tied with {', '.join(tied)}" if tied else "")

    def table(self) -> Any:
        """One row per child: swept values, status, compared metrics, best, error, full run id."""
        import pandas as pd

        best = self.best
        # a metric named like a swept param or a column of the table's own keeps its values apart
        taken = {*self.swept, "status", "best", "error", "run_id"}
        named = {m: f"metric.{m}" if m in taken else m for m in self.metrics}
        rows = []
        for child in self.children:
            row = {**child.values, "status": child.status,
                   **{named[m]: child.metric(m) for m in self.metrics}}
            if self.ranking is not None:
                row["best"] = child is best
            rows.append({**row, "error": child.error, "run_id": child.run_id})
        columns = [*self.swept, "status", *named.values(), *(["best"] if self.ranking else []), "error", "run_id"]
        return pd.DataFrame(rows, columns=columns)

    def report(self) -> str:
        """The Markdown section of the parent's ``report.md``: the conclusion and the children."""
        swept = ", ".join(f"{k} = {_listing(v)}" for k, v in self.swept.items())
        finished = sum(c.status == FINISHED for c in self.children)
        lines = [f"## Sweep: {swept}", "", f"**{_capitalised(self.conclusion())}.**", "",
                 f"{len(self.children)} child runs: {finished} finished, {self.failed} failed"
                 + (f"; ranked by {self.ranking}." if self.ranking else "."), ""]
        shown = self.metrics[:FIGURE_METRICS]
        header = ["run", *self.swept, "status", *shown]
        lines += ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
        best = self.best
        for child in self.children:
            cells = [child.run_id[:8] + (" **best**" if child is best else ""), *map(str, child.values.values()),
                     child.status, *(_number(child.metric(m)) for m in shown)]
            lines.append("| " + " | ".join(map(_cell, cells)) + " |")
        errors = [f"- {child.label}: {child.error}" for child in self.children if child.error]
        if errors:
            lines += ["", "Errors:", "", *errors]
        lines += ["", "The full run ids are in the `sweep` table; the curves in `figures/sweep.png`."
                  if self.figure_metrics() else "No figure: no finished child run logged a metric to compare."]
        return "\n".join(lines)

    def figure_metrics(self) -> list[str]:
        return [m for m in self.metrics[:FIGURE_METRICS]
                if any(_finite(c.metric(m)) for c in self.children)]

    def figure(self, mask: Any = str) -> Any:
        """Each compared metric against the swept param, one panel each, about 600 px wide; the
        best child marked. With several swept params, the one with the most values is the x
        axis and each combination of the others a line. None when there is nothing to draw."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        metrics = self.figure_metrics()
        if not metrics:
            return None
        x_key = max(self.swept, key=lambda k: len(self.swept[k]))
        others = [k for k in self.swept if k != x_key]
        position = {_key(v): i for i, v in enumerate(self.swept[x_key])}
        lines: dict[str, list[ChildRun]] = {}
        for child in self.children:
            lines.setdefault(mask(_label({k: child.values[k] for k in others})), []).append(child)
        best = self.best
        figure = Figure(figsize=(6, 0.9 + 1.9 * len(metrics)), dpi=100, layout="constrained")
        FigureCanvasAgg(figure)  # drawn by Agg, outside pyplot and its global state
        axes = figure.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
        for axis, metric in zip(axes, metrics):
            for name, members in lines.items():
                xs = [position[_key(c.values[x_key])] for c in members]
                ys = [c.metric(metric) for c in members]
                axis.plot(xs, ys, marker="o", linewidth=1.5, markersize=5, label=name or None)
            if best is not None:
                x = position[_key(best.values[x_key])]
                axis.axvline(x, color="grey", linestyle="--", linewidth=1)
                if metric == self.ranking.metric:
                    axis.plot([x], [best.metrics[metric]], marker="*", markersize=14, color="#d62728", zorder=3)
            axis.set_title(mask(metric), loc="left", fontsize=10)
            axis.grid(alpha=0.3)
            axis.tick_params(labelsize=9)
        ticks = [mask(str(v)) for v in self.swept[x_key]]
        axes[-1].set_xticks(range(len(ticks)), ticks, rotation=45 if sum(map(len, ticks)) > 60 else 0)
        failed = [mask(c.label) for c in self.children if c.status != FINISHED]
        axes[-1].set_xlabel(mask(x_key) + (f"\nfailed: {', '.join(failed)}" if failed else ""), fontsize=10)
        if len(lines) > 1:
            axes[0].legend(fontsize=8)
        if best is not None:
            metric = self.ranking.metric
            title = f"best {best.label} ({self.ranking.goal} {metric}: {best.metrics[metric]:.4g})"
        else:
            title = f"{', '.join(metrics)} by {x_key}"
        figure.suptitle(mask(title if len(title) <= 70 else title[:67] + "..."), fontsize=11)
        return figure

    def record(self, ctx: Any, description: str) -> None:
        """Log it all to the parent run of context ``ctx`` (whose description is ``description``)."""
        best, ranking = self.best, self.ranking
        ctx.log_metrics({"sweep.runs": len(self.children), "sweep.failed": self.failed})
        conclusion = self.conclusion()
        tags = {"mlflow.note.content": f"{description}\n\n**Result.** {_capitalised(conclusion)}.".strip()}
        if ranking is not None:
            tags["bedrot.sweep.best"] = conclusion
        if best is not None:
            ctx.recorder.log_params({f"best.{k}": v for k, v in best.values.items()})
            ctx.log_metric(f"best.{ranking.metric}", best.metrics[ranking.metric])
            tags["bedrot.sweep.best_run"] = best.run_id
        ctx.recorder.set_tags(tags, by_name=False)
        ctx.log_table(self.table(), "sweep")
        figure = self.figure(mask=lambda text: ctx.recorder.masker.text(text, "figure sweep"))
        if figure is not None:
            ctx.recorder.log_figure(figure, "figures/sweep.png")
        ctx.report(self.report())


def _swept_values(parent: RunRequest, children: Sequence[RunRequest], spec: Spec | None) -> dict[str, list[Any]]:
    """Each swept param and its values, as the children got them, in the spec's order."""
    keys = list(spec.sweep) if spec else sorted(
        {k for child in children for k, v in child.params.items() if parent.params.get(k) != v})
    return {k: list({_key(child.params[k]): child.params[k] for child in children}.values()) for k in keys}


def _compared_metrics(spec: Spec | None, experiment: Experiment, children: Sequence[ChildRun]) -> list[str]:
    """The metrics the parent compares (:meth:`Spec.compared`); with none named, the children's
    own (not the runner's bookkeeping, names without a dot first)."""
    chosen = spec.compared(experiment) if spec else list(experiment.headline)
    if not chosen:
        logged = {m for c in children for m in c.metrics if not m.startswith(_BOOKKEEPING)}
        chosen = sorted(logged, key=lambda m: ("." in m, m))[:6]
    return chosen


def _key(value: Any) -> tuple[str, Any]:
    """``value`` as a dict key that keeps ``1`` and ``True`` apart."""
    return type(value).__name__, value


def _label(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _listing(values: Sequence[Any]) -> str:
    """A swept param's values as one readable param value: ``[2, 3, 4]``, ``["track", "artist"]``."""
    return "[" + ", ".join(json.dumps(v) if isinstance(v, str) else str(v) for v in values) + "]"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number(value: Any) -> str:
    return f"{value:.4g}" if _finite(value) else ""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
