"""``bedrot-lab run``: run an experiment or a spec file as tracked MLflow runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import CliError
from .output import echo_json


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
@click.option("-P", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="Set a param (repeatable).")
@click.option("--note", default="", help="A note for the run's description.")
@click.option("--run-name", default=None, help="Name of the run in MLflow.")
@click.option("--register", "registrations", multiple=True, metavar="OUTPUT=CURATED_PATH",
              help="When the run finishes, register its OUTPUT for CURATED_PATH (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the run id and status as JSON.")
@click.pass_obj
def run(state, target: str, pairs: tuple[str, ...], note: str, run_name: str | None,
        registrations: tuple[str, ...], as_json: bool) -> None:
    """Run experiment TARGET, or the spec file TARGET (experiments/NAME.toml).

    A spec is looked for as a path, then in the lake's experiments/, then among
    the specs that come with bedrot-lab (by its file name).

    Params are checked before any run is created. Every run is recorded in
    MLflow: params, metrics, artifacts, inputs, tags and resource use. Exit code
    0 when the run finished, 1 when it failed, 130/143 when interrupted.
    """
    from ..query import terminal_progress
    from ..runner import prepare
    from ..runner import run as run_one

    lab = state.lab
    lab.progress = None if as_json else terminal_progress()
    params = parse_params(pairs)
    to_register = parse_registrations(registrations)
    if to_register:
        from ..promotion import curated_target

        for curated_path in to_register.values():
            curated_target(lab, curated_path)  # refuse a bad path before the run, not after
    spec_path = _spec_path(target, lab.settings.specs_dir)
    started = time.perf_counter()
    if spec_path:
        from ..specs import load_spec, run_sweep, spec_requests

        spec = load_spec(spec_path)
        main, children = spec_requests(lab, spec, params, note=note, run_name=run_name)
        if children and to_register:
            raise CliError("--register works with a single run, not a sweep; register a child run's output "
                           "with `bedrot-lab register`", exit_code=2)
        _announce(main.experiment.name, len(children), as_json)
        result = run_sweep(lab, main, children, spec) if children else run_one(lab, main)
    else:
        request = prepare(lab, target, params, run_name=run_name, note=note)
        _announce(request.experiment.name, 0, as_json)
        result = run_one(lab, request)
    elapsed = time.perf_counter() - started
    registered = _register(lab, result, to_register) if result.status == "FINISHED" else []

    if as_json:
        echo_json({**result.to_dict(), "seconds": round(elapsed, 3), "registered": registered})
    else:
        _report(result, elapsed)
    for version in registered if not as_json else ():
        click.echo(f"registered {version['name']} v{version['version']} for {version['curated_path']}; "
                   f"next: bedrot-lab promote {version['name']}")
    if result.exit_code:
        sys.exit(result.exit_code)


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


def _report(result, elapsed: float) -> None:
    for child in result.children:
        line = f"  {child.status:<8} {child.run_id}  {child.params}"
        click.echo(line + (f"  {child.error}" if child.error else ""))
    if result.status == "FINISHED":
        click.echo(f"{result.status} {result.experiment} run {result.run_id} in {elapsed:.1f}s")
        click.echo("see it:  bedrot-lab runs show " + result.run_id + "   (or: bedrot-lab ui)")
    else:
        click.echo(f"{result.status}: {result.experiment} run {result.run_id}: {result.error}", err=True)
        click.echo(f"details: bedrot-lab runs show {result.run_id}", err=True)
