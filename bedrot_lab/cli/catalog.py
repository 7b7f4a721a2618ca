"""``bedrot-lab plugins ...`` and ``bedrot-lab experiments ...``: what the plugins contribute."""

from __future__ import annotations

import click

from .output import echo_json, echo_table


@click.group()
def plugins() -> None:
    """Plugins: built-in, installed and in the lake's plugins/ folder."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def plugins_list(state, as_json: bool) -> None:
    """List plugins: name, version, source, hooks and status.

    A plugin that failed to load, or raised in a hook that contributes experiments
    or data sets, shows as failed with the reason.
    """
    infos = [info.to_dict() for info in state.lab.plugin_infos()]
    if as_json:
        echo_json(infos)
        return
    for info in infos:
        if info["status"] == "failed":
            info["status"] = f"failed: {info['error']}"
    echo_table(infos, ["name", "version", "source", "hooks", "status"], empty="no plugins")


@plugins.command("check")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: each plugin with its problems.")
@click.pass_obj
def plugins_check(state, name: str | None, as_json: bool) -> None:
    """Check plugins strictly: every mistake in each, with the fix; exit 1 if any.

    Loads the installed plugins and the lake's plugins/ folder as every command
    does, but reports each problem instead of skipping the plugin: a misspelled
    hook, an argument a hook does not have, a hook called with positional
    arguments, an experiment or data set name two plugins register, an
    experiment function that does not take one ctx parameter, a Param default
    that does not fit, a data set or column that is not in the catalog, a plugin
    that fails or exits at import. NAME checks one plugin (a built-in too).
    """
    from ..config import load_settings
    from ..errors import UsageError
    from ..plugin_check import check_plugins
    from ..plugins import DEFAULT_PLUGINS, close_names

    reports = check_plugins(load_settings(state.lake), name)
    if name is not None and not reports:
        known = [*DEFAULT_PLUGINS, *(report.info.name for report in check_plugins(load_settings(state.lake)))]
        listed = ", ".join(known) or "none; add one to the lake's plugins/ folder"
        raise UsageError(f"no plugin named {name!r}{close_names(name, known) or ';'} plugins: {listed}")
    problems = sum(len(report.problems) for report in reports)
    if as_json:
        echo_json([report.to_dict() for report in reports])
    else:
        for report in reports:
            if not report.problems:
                click.echo(f"ok  {report.info.name} ({report.info.location})")
            for problem in report.problems:
                click.echo(str(problem))
        if not reports:
            click.echo("no plugins to check; add one to the lake's plugins/ folder")
        elif problems:
            failing = sum(1 for report in reports if report.problems)
            click.echo(f"{problems} problem{'s' * (problems != 1)} in {failing} plugin{'s' * (failing != 1)}",
                       err=True)
    if problems:
        click.get_current_context().exit(1)


@plugins.command("hooks")
def plugins_hooks() -> None:
    """List the hooks a plugin can implement, each with its summary."""
    import inspect

    from .. import hookspecs

    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(function, "bedrot_lab_spec"):
            args = ", ".join(inspect.signature(function).parameters)
            summary = (function.__doc__ or "").strip().splitlines()[0]
            click.echo(f"{name}({args})\n    {summary}")


@click.group()
def experiments() -> None:
    """Experiments that plugins contribute."""


@experiments.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def experiments_list(state, as_json: bool) -> None:
    """List experiments with their plugin and a one-line summary.

    An experiment that needs a module which is not installed is listed as
    unavailable, with the command that installs it.
    """
    items = [_describe(exp) for exp in state.lab.experiments.values()]
    for conflict in state.lab.conflicts.values():
        click.echo(f"warning: {conflict}", err=True)
    if as_json:
        echo_json(items)
        return
    for item in items:
        if item["unavailable"]:
            item["summary"] = f"unavailable: {item['unavailable']}"
    echo_table(items, ["name", "plugin", "summary"],
               empty="no experiments; add a plugin to the lake's plugins/ folder")


@experiments.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def experiments_show(state, name: str, as_json: bool) -> None:
    """Show one experiment: description, params and data sets."""
    exp = state.lab.experiment(name, runnable=False)
    data = _describe(exp)
    if as_json:
        echo_json(data)
        return
    click.echo(f"{exp.name}  (plugin {exp.plugin})\n")
    if exp.unavailable:
        click.echo(f"Unavailable here: {exp.unavailable}\n")
    click.echo(exp.description or "(no description)")
    click.echo("\nParams:")
    for param in data["params"]:
        line = f"  {param['name']} ({param['type']}, default {param['default']!r})"
        click.echo(line + (f": {param['help']}" if param["help"] else ""))
    if not data["params"]:
        click.echo("  (none)")
    click.echo("\nData sets: " + (", ".join(exp.datasets) or "(none)"))
    click.echo(f"\nRun it:  bedrot-lab run {exp.name}" + "".join(f" -P {p['name']}=..." for p in data["params"][:1]))


def _describe(exp) -> dict:
    from ..experiments import PARAM_TYPES

    return {
        "name": exp.name,
        "plugin": exp.plugin,
        "summary": exp.summary,
        "description": exp.description,
        "datasets": list(exp.datasets),
        "unavailable": exp.unavailable,
        "params": [
            {"name": p.name, "type": PARAM_TYPES[p.type], "default": p.default, "help": p.help,
             **({"choices": list(p.choices)} if p.choices else {})}
            for p in exp.params.values()
        ],
    }
