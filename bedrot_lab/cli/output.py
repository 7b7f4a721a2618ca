"""Printing for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], empty: str = "nothing to show") -> None:
    """Print ``rows`` as a left-aligned table with a header of ``columns``."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    click.echo(line.format(*(c.upper() for c in columns)).rstrip())
    for row in cells:
        click.echo(line.format(*row).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)
