"""The ``bedrot-lab`` command. Imports nothing heavy: each command loads what it needs."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from ..masked_logging import MaskingFormatter

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
}


class CliError(click.ClickException):
    """A user mistake: one line on stderr, no traceback, and an exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def user_error(exc: BaseException) -> CliError | None:
    """The CLI's answer to an exception that is the user's to fix (a
    :class:`~bedrot_lab.errors.BedrotLabError`), else None."""
    from ..errors import BedrotLabError

    if isinstance(exc, BedrotLabError):
        return CliError(str(exc), exit_code=exc.exit_code)
    return None


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use, and which turns user
    mistakes into one-line errors (``--debug`` shows the traceback)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attribute = self.lazy[name].split(":")
            return whole_summaries(getattr(importlib.import_module(module), attribute))
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            mapped = user_error(exc)
            if mapped is None or (ctx.obj and ctx.obj.debug):
                raise
            raise mapped from None


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

    def __init__(self, lake: Path | None, debug: bool):
        self.lake = lake
        self.debug = debug
        self._lab = None

    @property
    def lab(self):
        if self._lab is None:
            from ..lab import Lab

            self._lab = Lab.open(self.lake)
        return self._lab


@click.group(cls=LazyGroup, lazy=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": HELP_WIDTH})
@click.option("--lake", type=click.Path(file_okay=False, path_type=Path), envvar="BEDROT_LAKE",
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
    ctx.obj = State(lake, debug)


def main() -> None:
    """Console entry point."""
    cli(prog_name="bedrot-lab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
