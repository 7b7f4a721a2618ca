"""Render the CLI reference (docs/cli.md) from the commands' own ``--help``.

``python -m bedrot_lab.cli.reference > docs/cli.md``; a test checks it is current.
"""

from __future__ import annotations

import click

from . import cli


def _walk(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command, info_name=path[-1])
        for name in command.list_commands(context):
            yield from _walk(command.get_command(context, name), [*path, name])


def render() -> str:
    """The Markdown reference: one section per command, its ``--help`` verbatim."""
    parts = ["# Command line reference", "",
             "Generated from `--help` by `python -m bedrot_lab.cli.reference > docs/cli.md`.", ""]
    for path, command in _walk(cli, ["bedrot-lab"]):
        context = click.Context(command, info_name=" ".join(path), terminal_width=88,
                                help_option_names=["-h", "--help"])
        parts += [f"## {' '.join(path)}", "", "```text", command.get_help(context), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
