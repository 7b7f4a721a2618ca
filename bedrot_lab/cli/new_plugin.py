"""``bedrot-lab new-plugin``: a new plugin, as an installable package or a file of the lake's plugins/ folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .output import echo_json

if TYPE_CHECKING:
    from ..lab import Lab
    from ..scaffold import PluginNames


@click.command("new-plugin")
@click.argument("name")
@click.option("--path", "parent", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the package's folder bedrot-lab-NAME/ goes (default: the current folder).")
@click.option("--local", is_flag=True,
              help="Write a single file into the lake's plugins/ folder and a spec into its experiments/, "
              "nothing to install.")
@click.option("--json", "as_json", is_flag=True, help="Print the names, the files written and the next commands "
              "as JSON.")
@click.pass_obj
def new_plugin(state, name: str, parent: Path | None, local: bool, as_json: bool) -> None:
    """Create plugin NAME with one example experiment, ready to test and run.

    \b
    By default an installable package, DIR/bedrot-lab-NAME/:
      pyproject.toml                 distribution bedrot-lab-NAME, entry point in group bedrot_lab
      bedrot_lab_NAME.py             the experiment NAME: loads dk_bank_details, logs metrics,
                                     a table, a figure and an output
      tests/test_NAME.py             its tests, with the bedrot_lab.testing fixtures
      README.md, .gitignore
    then `pip install -e`, `pytest` and `bedrot-lab plugins check NAME`.
    With --local: plugins/NAME.py and experiments/NAME.toml in the lake.

    NAME is lower-case letters, digits and hyphens (royalty-forecast); the module
    and the plugin take it with underscores (royalty_forecast). Nothing is ever
    overwritten: a file or folder already there stops it before anything is
    written.
    """
    from ..errors import BedrotLabError
    from ..scaffold import ScaffoldError, new_local_plugin, new_package, plugin_names

    names = plugin_names(name)
    if local:
        if parent is not None:
            raise click.UsageError("--path is where a package goes; --local writes into the lake's plugins/ and "
                                   "experiments/ folders (choose the lake with --lake)")
        lab = state.lab
        settings = lab.settings
        if not settings.plugin_paths or settings.specs_dir is None:
            raise ScaffoldError(f"{settings.config_file}: the lake has no plugins folder ([plugins] paths) or no "
                                "specs folder; set them, or make a package without --local")
        _check_experiment_free(lab, names)
        scaffold = new_local_plugin(names, settings.root, settings.plugin_paths[0], settings.specs_dir)
    else:
        try:
            lab = state.lab
        except BedrotLabError:  # no lake here: nothing to compare the experiment's name with
            lab = None
        if lab is not None:
            _check_experiment_free(lab, names)
        scaffold = new_package(names, (parent if parent is not None else Path.cwd()).resolve())

    if as_json:
        echo_json(scaffold.to_dict())
        return
    for path in scaffold.files:
        click.echo(f"created  {_relative(path)}")
    if scaffold.kind == "package":
        click.echo(f"\npackage {names.distribution}: plugin {names.identifier} (module {names.module}), "
                   f"experiment {names.name}")
    else:
        click.echo(f"\nplugin {names.identifier} in the lake: experiment {names.name}")
    click.echo("next:")
    for command in scaffold.next:
        click.echo(f"  {command}")


def _check_experiment_free(lab: Lab, names: PluginNames) -> None:
    """Refuse a name that a plugin of the lake, or an installed one, already gives an experiment."""
    from ..scaffold import ScaffoldError

    owner = lab.experiments.get(names.name)
    if owner is not None or names.name in lab.conflicts:
        plugin = f" by plugin {owner.plugin!r}" if owner is not None else ""
        raise ScaffoldError(f"an experiment named {names.name!r} is already registered{plugin}; "
                            "choose another NAME")


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
