"""The ``bedrot-lab`` command. Imports nothing heavy: each command loads what it needs, and
plugins (``register_commands``) are loaded only when a plugin command may be asked for."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..masked_logging import MaskingFormatter

if TYPE_CHECKING:
    from ..config import Settings
    from ..plugins import PluginHost

#: help is wrapped to the terminal, up to this many columns
HELP_WIDTH = 100
#: loggers whose INFO lines (store creation, system metrics, GPU probing) only --verbose shows
NOISY_LOGGERS = ("mlflow", "alembic", "sqlalchemy", "huey")
MLFLOW_LEVEL_VARIABLE = "MLFLOW_LOGGING_LEVEL"
_QUIET: dict[str, str] = {}  # the level this process gave MLFLOW_LOGGING_LEVEL, if it did

#: command name -> "module:attribute", imported only when the command is used
COMMANDS = {
    "init": "bedrot_lab.cli.init:init",
    "new-plugin": "bedrot_lab.cli.new_plugin:new_plugin",
    "plugins": "bedrot_lab.cli.catalog:plugins",
    "experiments": "bedrot_lab.cli.catalog:experiments",
    "run": "bedrot_lab.cli.run:run",
    "runs": "bedrot_lab.cli.runs:runs",
    "ui": "bedrot_lab.cli.runs:ui",
    "register": "bedrot_lab.cli.promote:register",
    "promote": "bedrot_lab.cli.promote:promote",
    "rollback": "bedrot_lab.cli.promote:rollback",
    "promotions": "bedrot_lab.cli.promote:promotions",
    "sandbox": "bedrot_lab.sandbox.cli:sandbox",
    "daemon": "bedrot_lab.daemon.cli:daemon",
    "server": "bedrot_lab.server.cli:server",
    "convert": "bedrot_lab.notebooks.cli:convert",
}
#: where an invocation keeps its :class:`PluginCommands` (in ``click.Context.meta``)
PLUGIN_COMMANDS = "bedrot_lab.plugin_commands"


class CliError(click.ClickException):
    """A user mistake: one line on stderr, no traceback, and an exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def user_error(exc: BaseException) -> CliError | None:
    """The CLI's answer to an exception that is the user's to fix (a
    :class:`~bedrot_lab.errors.BedrotLabError`), else None."""
    from ..errors import BedrotLabError

    if type(exc).__module__.startswith("mlflow."):  # a tracking server's refusal: login, permission, gone
        from ..tracking import store_error

        exc = store_error(exc) or exc
    if isinstance(exc, BedrotLabError):
        return CliError(str(exc), exit_code=exc.exit_code)
    return None


@dataclass
class PluginCommands:
    """The commands that plugins add (``register_commands``), found once per invocation,
    with the settings and plugins they were found with: the lab reuses them."""

    commands: dict[str, click.Command] = field(default_factory=dict)
    #: command name -> the plugin that added it
    plugins: dict[str, str] = field(default_factory=dict)
    settings: Settings | None = None
    host: PluginHost | None = None
    #: why no plugin command could be loaded (a broken bedrot-lab.toml, a strict-mode failure)
    problem: str = ""


def find_plugin_commands(lake: Path | None, builtin: Iterable[str]) -> PluginCommands:
    """Load the plugins (the lake's too, if a lake is found from ``lake``) and collect the
    commands they add. A command named like one of ``builtin`` or like another plugin's is
    left out with one line naming its plugin; so is every command of a plugin whose
    ``register_commands`` raises."""
    from ..config import LakeNotFound, load_settings
    from ..errors import BedrotLabError
    from ..plugins import _where_defined, make_plugin_host

    found = PluginCommands()
    try:
        found.settings = load_settings(lake)
    except LakeNotFound:
        pass  # no lake: installed plugins may still add commands
    except BedrotLabError as exc:
        found.problem = str(exc)
        return found
    settings = found.settings
    try:
        host = make_plugin_host(settings.plugin_paths, settings.disabled_plugins) if settings else make_plugin_host()
        builtin = set(builtin)
        for name, owners in sorted(_commands_by_name(host).items()):
            for plugin, command in owners:
                others = [repr(other) for other, _ in owners if other != plugin]
                if name in builtin:
                    clash = "a built-in command has that name; give the plugin's command another name"
                elif others:
                    clash = f"plugin {' and '.join(others)} adds a command of that name too; rename one"
                else:
                    found.commands[name], found.plugins[name] = whole_summaries(command), plugin
                    continue
                host._fail(host.info(plugin), clash, f"command {name!r} refused", kind="command",
                           where=_where_defined(command.callback))
    except BedrotLabError as exc:  # strict mode (BEDROT_LAB_STRICT_PLUGINS=1): the first problem
        return PluginCommands(settings=settings, problem=str(exc))
    found.host = host
    return found


def _commands_by_name(host: PluginHost) -> dict[str, list[tuple[str, click.Command]]]:
    """Call each plugin's ``register_commands`` with a group of its own to fill: command name ->
    (plugin, command) for each plugin that added one. A plugin that raises adds nothing."""
    from ..plugins import _where_raised, call_each, describe

    collector = click.Group("bedrot-lab")
    added: dict[str, list[tuple[str, click.Command]]] = {}
    # call_each calls a plugin only when the loop reaches it: the collector holds that plugin's commands
    for call in call_each(host.hook.register_commands, cli=collector):
        if call.error is not None:
            host._fail(host.info(call.plugin), f"register_commands raised {describe(call.error)}",
                       "commands left out", error=call.error, kind="register", where=_where_raised(call.error))
        else:
            for name, command in collector.commands.items():
                added.setdefault(name, []).append((call.plugin, command))
        collector.commands.clear()
    return added


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, and which turns user
    mistakes into one-line errors (``--debug`` shows the traceback).

    Plugin commands are looked for only when ``--help`` lists the commands or a name is
    not a built-in one: a built-in command never loads a plugin before it needs to."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def builtin_names(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.builtin_names(ctx), *self.plugin_commands(ctx).commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            return whole_summaries(getattr(importlib.import_module(module), attribute))
        command = super().get_command(ctx, name)
        if command is None:
            found = self.plugin_commands(ctx)
            command = found.commands.get(name)
            if command is None and found.problem:
                raise click.UsageError(f"no command {name!r}; plugin commands could not be loaded: {found.problem}")
        return command

    def plugin_commands(self, ctx: click.Context) -> PluginCommands:
        """This invocation's plugin commands, found on first use."""
        if PLUGIN_COMMANDS not in ctx.meta:
            if "debug" in ctx.params:  # the options are parsed: a plugin's failure is logged as they say
                set_verbosity(verbose=ctx.params["verbose"], debug=ctx.params["debug"])
            # `--help` is eager: "lake" is parsed only if --lake came first; else BEDROT_LAKE or the folder
            ctx.meta[PLUGIN_COMMANDS] = find_plugin_commands(ctx.params.get("lake"), self.builtin_names(ctx))
        return ctx.meta[PLUGIN_COMMANDS]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The built-in commands, then the plugins' under their own heading, each with its plugin."""
        found = self.plugin_commands(ctx)
        sections = [
            ("Commands", [(name, self.get_command(ctx, name), "") for name in self.builtin_names(ctx)]),
            ("Plugin commands", [(name, command, f" (plugin {found.plugins[name]})")
                                 for name, command in sorted(found.commands.items())]),
        ]
        sections = [(heading, [row for row in rows if row[1] is not None and not row[1].hidden])
                    for heading, rows in sections]
        width = max((len(name) for _, rows in sections for name, _, _ in rows), default=0)
        limit = formatter.width - 6 - width
        for heading, rows in sections:
            if rows:
                with formatter.section(heading):  # names padded: both lists in one column
                    formatter.write_dl([(name.ljust(width), command.get_short_help_str(limit - len(plugin)) + plugin)
                                        for name, command, plugin in rows])
        if found.problem:
            with formatter.section("Plugin commands"):  # one line, unwrapped: a path stays whole
                formatter.write(f"{'':>{formatter.current_indent}}not loaded: {found.problem}\n")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            mapped = user_error(exc) or plugin_command_error(ctx, exc)
            if mapped is None or (ctx.obj and ctx.obj.debug):
                raise
            raise mapped from None


def plugin_command_error(ctx: click.Context, exc: Exception) -> CliError | None:
    """One line naming the plugin, if ``exc`` escaped a plugin's command; else None."""
    found = ctx.meta.get(PLUGIN_COMMANDS)
    plugin = found.plugins.get(ctx.invoked_subcommand or "") if found else None
    if plugin is None:
        return None
    from ..plugins import describe

    return CliError(f"{ctx.invoked_subcommand} (a command of plugin {plugin!r}) failed: {describe(exc)}; "
                    "--debug shows the traceback")


def summary(help_text: str) -> str:
    """The first sentence of ``help_text``'s first paragraph, whole (click would cut it with "...")."""
    words = help_text.partition("\n\n")[0].split()
    words = words[1:] if words[:1] == ["\b"] else words
    for i, word in enumerate(words):
        if word.endswith(".") and (i == len(words) - 1 or not words[i + 1][0].islower()):
            return " ".join(words[:i + 1])
    return " ".join(words)


def whole_summaries(command: click.Command) -> click.Command:
    """Give ``command`` and its subcommands their whole first sentence as ``short_help``:
    a group's command list then wraps a long summary instead of cutting it."""
    if command.short_help is None and command.help:
        command.short_help = summary(command.help)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            whole_summaries(sub)
    return command


def set_verbosity(*, verbose: bool, debug: bool) -> None:
    """Log warnings only (errors only for MLflow and the database libraries); ``verbose``
    adds INFO lines, MLflow's among them; ``debug`` logs everything. Called again (by
    ``run --verbose``), it changes the levels the first call set."""
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, handlers=[handler])
    if not debug:
        warnings.filterwarnings("ignore")
    if debug or verbose:
        logging.getLogger().setLevel(level)
        if "level" in _QUIET and os.environ.get(MLFLOW_LEVEL_VARIABLE) == _QUIET["level"]:
            del os.environ[MLFLOW_LEVEL_VARIABLE]
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(level)
        if not debug:  # SQLAlchemy describes every ORM mapping at INFO: hundreds of lines
            logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
        return
    # MLflow sets its own logger to INFO when it is imported (later, lazily), from this
    # variable if it is set. Set both, for an MLflow imported before or after this.
    if MLFLOW_LEVEL_VARIABLE not in os.environ:
        os.environ[MLFLOW_LEVEL_VARIABLE] = _QUIET["level"] = "ERROR"
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.ERROR)


class State:
    """Per-invocation state: the ``--lake`` option and the lab, opened on first use."""

    def __init__(self, lake: Path | None, debug: bool, plugin_commands: PluginCommands | None = None):
        self.lake = lake
        self.debug = debug
        self._lab = None
        self._plugin_commands = plugin_commands

    @property
    def lab(self):
        """The :class:`~bedrot_lab.Lab` of ``--lake`` (or the lake found from here)."""
        if self._lab is None:
            from ..lab import Lab

            found = self._plugin_commands
            if found is not None and found.settings is not None and found.host is not None:
                self._lab = Lab(found.settings, found.host)  # the plugins are loaded already: once is enough
            else:
                self._lab = Lab.open(self.lake)
        return self._lab


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH})
@click.option("--lake", type=click.Path(file_okay=False, path_type=Path), envvar="BEDROT_LAKE", is_eager=True,
              help="Lake root (default: BEDROT_LAKE, else the nearest folder with a bedrot-lab.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Show INFO logging, MLflow's included.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="bedrot-lab")
@click.pass_context
def cli(ctx: click.Context, lake: Path | None, verbose: bool, debug: bool) -> None:
    """bedrot-lab: tracked experiments for the BEDROT data lake's sandbox.

    \b
    Start here:
      bedrot-lab init PATH              adopt a lake (its zones are found, nothing moved)
      bedrot-lab init PATH --sample     or a new lake with synthetic data
      bedrot-lab experiments list       what can be run
      bedrot-lab run revenue-per-stream run one, recorded in MLflow
      bedrot-lab ui                     look at the runs
    """
    set_verbosity(verbose=verbose, debug=debug)
    ctx.obj = State(lake, debug, ctx.meta.get(PLUGIN_COMMANDS))


def main() -> None:
    """Console entry point."""
    cli(prog_name="bedrot-lab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
