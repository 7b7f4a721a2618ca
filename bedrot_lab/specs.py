"""Experiment specs: TOML files naming an experiment, its params, purpose and sweeps."""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError
from .experiments import ParamError
from .runner import FAILED, FINISHED, KILLED, RunRequest, RunResult, RunTerminated, _tracked, run

if TYPE_CHECKING:
    from .lab import Lab

SPEC_KEYS = {"experiment", "name", "purpose", "methodology", "note", "params", "sweep"}
#: the package whose ``*.toml`` files are the specs that come with bedrot-lab (the repo's experiments/)
PACKAGED_SPECS = "bedrot_plugins.experiments"


class SpecError(ConfigError):
    """A spec file that cannot be used; names the file and the key."""


@dataclass(frozen=True)
class Spec:
    """A parsed experiment spec.

    Example ``experiments/rps-spotify.toml``::

        experiment = "revenue-per-stream"
        name = "rps weekly"
        purpose = "Which platform pays best per stream?"
        methodology = "Sum earnings and quantity by store."
        [params]
        min_streams = 100
        [sweep]            # optional: one child run per combination
        min_streams = [0, 100, 1000]
    """

    path: Path
    experiment: str
    params: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    purpose: str = ""
    methodology: str = ""
    note: str = ""
    sweep: dict[str, list[Any]] = field(default_factory=dict)


def load_spec(path: Path) -> Spec:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read spec ({exc.strerror})", path) from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML ({exc})", path) from None
    unknown = sorted(set(data) - SPEC_KEYS)
    if unknown:
        raise SpecError(f"unknown key; a spec takes {', '.join(sorted(SPEC_KEYS))}", path, unknown[0])
    if not isinstance(data.get("experiment"), str):
        raise SpecError("required: the name of the experiment to run", path, "experiment")
    for key in ("params", "sweep"):
        if not isinstance(data.get(key, {}), dict):
            raise SpecError("must be a table", path, key)
    for key, values in data.get("sweep", {}).items():
        if not isinstance(values, list) or not values:
            raise SpecError("a sweep value must be a non-empty list", path, f"sweep.{key}")
    for key in ("name", "purpose", "methodology", "note"):
        if key in data and not isinstance(data[key], str):
            raise SpecError("must be a string", path, key)
    return Spec(
        path=path,
        experiment=data["experiment"],
        params=dict(data.get("params", {})),
        name=data.get("name"),
        purpose=data.get("purpose", ""),
        methodology=data.get("methodology", ""),
        note=data.get("note", ""),
        sweep=dict(data.get("sweep", {})),
    )


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
    experiment = lab.experiment(spec.experiment)
    base = {**spec.params, **overrides}
    fields = dict(run_name=run_name or spec.name, note=note or spec.note, purpose=spec.purpose,
                  methodology=spec.methodology, spec=str(spec.path))
    try:
        main = RunRequest(experiment, experiment.validate(base), **fields)
        children = []
        keys = sorted(spec.sweep)
        for combo in itertools.product(*(spec.sweep[k] for k in keys)) if keys else ():
            values = dict(zip(keys, combo))
            label = ", ".join(f"{k}={v}" for k, v in values.items())
            children.append(RunRequest(
                experiment, experiment.validate({**base, **values}), run_name=label,
                spec=str(spec.path), extra_tags={"bedrot.sweep.child": "true"},
            ))
    except ParamError as exc:
        raise SpecError(str(exc), spec.path, "params") from None
    return main, children


def run_sweep(lab: Lab, parent: RunRequest, children: list[RunRequest]) -> RunResult:
    """A parent run holding one child run per combination; the parent logs a summary
    table of the children's params and metrics."""
    client = lab.store.client
    keys = sorted({k for child in children for k, v in child.params.items() if parent.params.get(k) != v})
    fixed = {k: v for k, v in parent.params.items() if k not in keys}
    request = RunRequest(**{**parent.__dict__, "params": fixed, "extra_tags": {
        **parent.extra_tags, "bedrot.sweep": ", ".join(keys), "bedrot.sweep.size": str(len(children))}})
    result = RunResult("", parent.experiment.name, FINISHED, params=fixed)

    def body(ctx: Any) -> None:
        rows = []
        for child in children:
            outcome = run(lab, child, parent_run_id=ctx.run_id)
            result.children.append(outcome)
            if outcome.status == KILLED:
                raise RunTerminated() if outcome.interrupted_by == "SIGTERM" else KeyboardInterrupt()
            metrics = client.get_run(outcome.run_id).data.metrics
            rows.append({"run_id": outcome.run_id, "status": outcome.status,
                         **{k: child.params[k] for k in keys}, **metrics})
        failed = sum(child.status == FAILED for child in result.children)
        ctx.log_metrics({"sweep.runs": len(children), "sweep.failed": failed})
        import pandas as pd

        ctx.log_table(pd.DataFrame(rows), "sweep")
        if failed == len(children):
            raise RuntimeError(f"all {failed} child runs failed; see their error tags")

    return _tracked(lab, request, body, result=result)
