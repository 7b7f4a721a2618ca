"""``bedrot-lab convert NOTEBOOK --to-plugin``: a notebook as a plugin module and a spec, to edit."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli.output import echo_json


@click.command("convert")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to-plugin", is_flag=True, help="Write a plugin module and its spec (the only target for now).")
@click.option("--name", help="The experiment's name (default: the notebook's file name, with hyphens).")
@click.option("--plugins-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the plugin module goes (default: the lake's plugins folder).")
@click.option("--specs-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the spec goes (default: the lake's experiments folder).")
@click.option("--force", is_flag=True, help="Replace the module and the spec if they are there.")
@click.option("--json", "as_json", is_flag=True, help="Print the files written and the next commands as JSON.")
@click.pass_obj
def convert(state, notebook: Path, to_plugin: bool, name: str | None, plugins_dir: Path | None,
            specs_dir: Path | None, force: bool, as_json: bool) -> None:
    """Convert NOTEBOOK into a plugin module and a spec: a starting point to edit.

    \b
    sandbox/notebooks/streams_by_store.ipynb gives, in the lake:
      plugins/streams_by_store.py        the experiment streams-by-store
      experiments/streams-by-store.toml  its spec, with the params' defaults

    The experiment function's body is the notebook's code cells in order. The cell
    tagged `parameters` declares the params (typed from their defaults, helped by
    the comment on their line) and reads them from ctx.params; the lines that make
    the context (ctx = notebook_context()) are dropped; imports move to the top;
    IPython magics and shell lines (%matplotlib, !pip) are commented out, marked
    "convert:"; markdown cells become comments, the first one the docstring and the
    spec's purpose. Then check it: bedrot-lab plugins check NAME.
    Nothing is overwritten without --force.
    """
    if not to_plugin:
        raise click.UsageError("say what to convert the notebook into: --to-plugin (a plugin module and a spec, "
                               "the only target for now)")
    if notebook.suffix != ".ipynb":
        raise click.UsageError(f"{notebook} is not a notebook (.ipynb); convert takes a Jupyter notebook")
    from .convert import convert_notebook

    done = convert_notebook(state.lab, notebook, name=name, plugins_dir=plugins_dir, specs_dir=specs_dir,
                            force=force)
    if as_json:
        echo_json(done.to_dict())
        return
    for path in (done.plugin, done.spec):
        click.echo(f"{'replaced' if path in done.replaced else 'created '} {_relative(path)}")
    found = [f"{len(done.params)} param{'s' * (len(done.params) != 1)}"]
    if done.datasets:
        found.append(f"data sets {', '.join(done.datasets)}")
    if done.commented:
        found.append(f"{done.commented} IPython line{'s' * (done.commented != 1)} commented out (marked convert:)")
    click.echo(f"\nexperiment {done.names.name} from notebook {_relative(notebook)}: {', '.join(found)}")
    click.echo("read it through, then:")
    for command in done.next:
        click.echo(f"  {command}")


def _relative(path: Path) -> str:
    """``path`` relative to the current folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
