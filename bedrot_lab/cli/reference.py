"""Render the references in docs/ from the code: the CLI's from the commands' own ``--help``,
the hooks' from the hookspecs.

``python -m bedrot_lab.cli.reference > docs/cli.md`` and
``python -m bedrot_lab.cli.reference hooks > docs/hooks.md``; a test checks both are current.
"""

from __future__ import annotations

import inspect
import re
import sys

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


def render_hooks() -> str:
    """The Markdown hook reference: the hookspecs module's docstring, then one section per
    hook in source order, with its signature and its docstring (Args as a list, examples
    as code)."""
    from .. import hookspecs

    specs = [f for _, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "bedrot_lab_spec")]
    specs.sort(key=lambda f: f.__code__.co_firstlineno)
    body = inspect.cleandoc(hookspecs.__doc__ or "").partition("\n\n")[2]  # after the summary line
    generated = "Generated from `bedrot_lab/hookspecs.py` by `python -m bedrot_lab.cli.reference hooks > docs/hooks.md`."
    parts = ["# Hooks", "", generated, "", _markdown(body), ""]
    for spec in specs:
        parts += [f"## {spec.__name__}", "", f"`{spec.__name__}{inspect.signature(spec)}`", "",
                  _markdown(inspect.cleandoc(spec.__doc__ or "")), ""]
    return "\n".join(parts)


def _markdown(docstring: str) -> str:
    """A Google-style docstring as Markdown: ``Args:`` becomes a list, ``Example::`` a
    Python code block, double backticks single ones."""
    out: list[str] = []
    lines = docstring.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.strip() in ("Args:", "Example::"):
            block = []
            index += 1
            while index < len(lines) and (not lines[index].strip() or lines[index].startswith("    ")):
                block.append(lines[index][4:])
                index += 1
            block = "\n".join(block).strip("\n").splitlines()
            if line.strip() == "Args:":
                out += ["Arguments:", "", *_argument_list(block), ""]
            else:
                out += ["```python", *block, "```"]
            continue
        out.append(_inline(line))
        index += 1
    return "\n".join(out).strip()


def _argument_list(block: list[str]) -> list[str]:
    items: list[str] = []
    for line in block:
        match = re.match(r"(\w+): (.*)", line)
        if match:
            items.append(f"- `{match[1]}`: {_inline(match[2])}")
        elif items and line.strip():
            items[-1] += " " + _inline(line.strip())
    return items


def _inline(text: str) -> str:
    text = re.sub(r":(?:class|func|mod|data|meth):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


if __name__ == "__main__":
    print(render_hooks() if sys.argv[1:] == ["hooks"] else render(), end="")
