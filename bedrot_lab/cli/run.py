"""``bedrot-lab run``: run an experiment or a spec file as tracked MLflow runs."""

from __future__ import annotations

import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from . import CliError, set_verbosity
from .output import SHORT_ID, duration, echo_json, echo_table, number, run_seconds, terminal_width

#: the param that holds a script's command-line arguments (see bedrot_lab.notebooks.script)
ARGS = "args"
#: the tag in which a sweep's parent run states its best child and why
BEST_TAG = "bedrot.sweep.best"
#: metrics the runner logs on every run: never a sweep table's columns
BOOKKEEPING = ("run.", "system/")


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"-P {pair!r}: expected KEY=VALUE", exit_code=2)
        params[key.strip()] = value
    return params


def _spec_path(target: str, specs_dir: Path | None) -> Path | None:
    """The spec file TARGET names: as a path, in the lake's specs folder, else a spec that
    comes with bedrot-lab of that file name (when TARGET names no other folder)."""
    if not target.endswith(".toml"):
        return None
    for candidate in (Path(target), *( [specs_dir / target] if specs_dir else [])):
        if candidate.is_file():
            return candidate.resolve()
    folder = Path(target).parent
    if folder == Path() or (specs_dir is not None and folder == Path(specs_dir.name)):
        from ..specs import packaged_specs

        packaged = packaged_specs().get(Path(target).name)
        if packaged is not None:
            return packaged
    raise CliError(f"spec file not found: {target}", exit_code=2)


@click.command()
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-P", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="Set a param (repeatable).")
@click.option("--note", default="", help="A note for the run's description.")
@click.option("--run-name", default=None, help="Name of the run in MLflow.")
@click.option("--register", "registrations", multiple=True, metavar="OUTPUT=CURATED_PATH",
              help="When the run finishes, register its OUTPUT for CURATED_PATH (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the run id and status as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show INFO logging, MLflow's included.")
@click.pass_obj
def run(state, target: str, args: tuple[str, ...], pairs: tuple[str, ...], note: str, run_name: str | None,
        registrations: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    """Run an experiment, a notebook, a script, or the runs of a spec file.

    TARGET is an experiment's name, a spec file (experiments/NAME.toml), a
    notebook (path/to/NOTEBOOK.ipynb: -P sets the params of its cell tagged
    "parameters") or a Python script (path/to/SCRIPT.py; its arguments follow
    --, as in: bedrot-lab run analysis/report.py -- --year 2025).

    A spec is looked for as a path, then in the lake's experiments/, then among
    the specs that come with bedrot-lab (by its file name).

    Params are checked before any run is created. Every run is recorded in
    MLflow: params, metrics, artifacts, inputs, tags and resource use. Exit code
    0 when the run finished, 1 when it failed, 130/143 when interrupted.
    """
    from ..query import terminal_progress
    from ..runner import RunRequest
    from ..runner import run as run_one

    if verbose:
        set_verbosity(verbose=True, debug=state.debug)
    lab = state.lab
    lab.progress = None if as_json else terminal_progress()
    params = parse_params(pairs)
    if args:
        params = {**params, ARGS: shlex.join(args)} if ARGS not in params else _both_args()
    to_register = parse_registrations(registrations)
    if to_register:
        from ..promotion import curated_target

        for curated_path in to_register.values():
            curated_target(lab, curated_path)  # refuse a bad path before the run, not after
    spec_path = _spec_path(target, lab.settings.specs_dir)
    spec = None
    if spec_path:
        from ..specs import load_spec, run_sweep, spec_requests

        spec = load_spec(spec_path)
        main, children = spec_requests(lab, spec, params, note=note, run_name=run_name)
        if children and to_register:
            raise CliError("--register works with a single run, not a sweep; register a child run's output "
                           "with `bedrot-lab register`", exit_code=2)
        experiment = main.experiment
        _announce(experiment.name, len(children), as_json)
        result = run_sweep(lab, main, children, spec) if children else run_one(lab, main)
    else:
        experiment = lab.runnable(target)
        if args and ARGS not in experiment.params:
            raise CliError(f"{experiment.name} takes no arguments after TARGET (a script does); set its params "
                           "with -P KEY=VALUE", exit_code=2)
        source = {} if target == experiment.name else {"mlflow.source.name": f"bedrot-lab run {target}"}
        request = RunRequest(experiment, experiment.validate(params), run_name=run_name, note=note,
                             extra_tags=source)
        _announce(experiment.name, 0, as_json)
        result = run_one(lab, request)
    client = lab.store.client
    recorded = {r.run_id: client.get_run(r.run_id) for r in (result, *result.children) if r.run_id}
    seconds = run_seconds(recorded[result.run_id].info) if result.run_id in recorded else None
    registered = _register(lab, result, to_register) if result.status == "FINISHED" else []

    if as_json:
        echo_json({**result.to_dict(), "seconds": None if seconds is None else round(seconds, 3),
                   "registered": registered})
    else:
        if result.children:
            _sweep_table(result, spec.compared(experiment) if spec else experiment.headline, recorded)
        _report(result, seconds)
    if registered and not as_json:
        from ..promotion import lake_path

        for version in registered:
            click.echo(f"registered {version['name']} v{version['version']} for "
                       f"{lake_path(lab, version['curated_path'])}; next: bedrot-lab promote {version['name']}")
    if result.exit_code:
        sys.exit(result.exit_code)


def _both_args() -> dict[str, str]:
    raise CliError(f"give a script's arguments after -- or as -P {ARGS}=..., not both", exit_code=2)


def parse_registrations(pairs: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        output, sep, curated_path = pair.partition("=")
        if not sep or not output.strip() or not curated_path.strip():
            raise CliError(f"--register {pair!r}: expected OUTPUT=CURATED_PATH", exit_code=2)
        found[output.strip()] = curated_path.strip()
    return found


def _register(lab, result, to_register: dict[str, str]) -> list[dict]:
    from ..promotion import register

    return [register(lab, result.run_id, output, curated_path) for output, curated_path in to_register.items()]


def _announce(name: str, children: int, as_json: bool) -> None:
    if not as_json:
        extra = f" as a sweep of {children} runs" if children else ""
        click.echo(f"running {name}{extra} ...", err=True)


def _sweep_table(result, compared: Sequence[str], recorded: dict[str, Any]) -> None:
    """One line per child run: its short id, the params the sweep varies, its status and
    the metrics the sweep compares (without any, the first few the children share);
    the children's errors and the sweep's conclusion below."""
    children = result.children
    varied = [key for key in dict.fromkeys(k for child in children for k in child.params)
              if len({str(child.params.get(key)) for child in children}) > 1]
    metrics = {child.run_id: recorded[child.run_id].data.metrics if child.run_id in recorded else {}
               for child in children}
    shown = list(compared) or _shared_metrics([metrics[c.run_id] for c in children if c.status == "FINISHED"])
    rows = [{"run": child.run_id[:SHORT_ID], **{key: child.params.get(key) for key in varied}, "status": child.status,
             **{name: number(metrics[child.run_id][name], 6) if name in metrics[child.run_id] else "-"
                for name in shown}}
            for child in children]
    columns = _fitting(rows, ["run", *varied, "status"], shown)
    echo_table(rows, columns, right=set(shown), shrink=varied)
    if len(columns) < 2 + len(varied) + len(shown):
        left_out = shown[len(columns) - 2 - len(varied):]
        click.echo(textwrap.fill(f"(too wide to show here: {', '.join(left_out)}; bedrot-lab runs show RUN shows "
                                 "them)", terminal_width(), break_on_hyphens=False))
    for child in children:
        if child.error:
            click.echo(f"  {child.run_id[:SHORT_ID]}: {child.error}")
    conclusion = recorded[result.run_id].data.tags.get(BEST_TAG) if result.run_id in recorded else None
    if conclusion:
        click.echo(conclusion)


def _fitting(rows: list[dict[str, Any]], columns: list[str], more: list[str]) -> list[str]:
    """``columns`` and as many of ``more`` (at least one) as fit the terminal's width."""
    def width(column: str) -> int:
        return max(len(column), *(len(str(row.get(column, ""))) for row in rows)) + 2

    used = sum(width(column) for column in columns)
    for count, column in enumerate(more):
        used += width(column)
        if count and used > terminal_width() + 2:
            return columns + more[:count]
    return columns + more


def _shared_metrics(found: list[dict[str, float]], count: int = 3) -> list[str]:
    """The first ``count`` metric names (by name) every one of ``found`` logged, bookkeeping left out."""
    if not found:
        return []
    names = set.intersection(*(set(metrics) for metrics in found))
    return sorted(name for name in names if not name.startswith(BOOKKEEPING))[:count]


def _report(result, seconds: float | None) -> None:
    took = f" in {duration(seconds)}" if seconds is not None else ""
    if result.children:
        failed = sum(child.status != "FINISHED" for child in result.children)
        what = f"sweep run {result.run_id} ({len(result.children)} runs" + (f", {failed} failed)" if failed else ")")
    else:
        what = f"run {result.run_id}"
    if result.status == "FINISHED":
        click.echo(f"{result.status} {result.experiment} {what}{took}")
        click.echo(f"see it:  bedrot-lab runs show {result.run_id[:SHORT_ID]}   (or: bedrot-lab ui)")
    else:
        click.echo(f"{result.status}: {result.experiment} {what}{took}: {result.error}", err=True)
        click.echo(f"details: bedrot-lab runs show {result.run_id[:SHORT_ID]}", err=True)
