"""Printing for the CLI: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import click

#: the width assumed when the terminal's is unknown (output to a pipe, no COLUMNS)
DEFAULT_WIDTH = 100
#: a column cut to fit the terminal keeps this many characters while others can give some up
KEEP = 16
#: characters of a run id shown in tables (``runs show`` accepts any unique prefix of 6 or more)
SHORT_ID = 8


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def terminal_width() -> int:
    """Columns of the terminal (COLUMNS wins), else :data:`DEFAULT_WIDTH`."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def echo_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], empty: str = "nothing to show", *,
               right: Collection[str] = (), shrink: Sequence[str] = (), width: int | None = None,
               indent: str = "") -> None:
    """Print ``rows`` as a table with a header of ``columns``, left-aligned except the
    ``right`` columns, each line after ``indent``. When the table is wider than ``width``
    (the terminal's), the ``shrink`` columns are cut to fit, in that order, with "…"
    where a value was cut: each to :data:`KEEP` characters first, then to its header."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(column), *(len(row[i]) for row in cells)) for i, column in enumerate(columns)]
    over = len(indent) + sum(widths) + 2 * (len(columns) - 1) - (width or terminal_width())
    for floor in (KEEP, 0):
        for column in shrink:
            at = list(columns).index(column)
            if over > 0:
                cut = min(over, widths[at] - max(len(column), floor))
                if cut > 0:
                    widths[at] -= cut
                    over -= cut
    cells = [[_fit(text, w) for text, w in zip(row, widths)] for row in cells]
    line = "  ".join(f"{{:{'>' if column in right else '<'}{w}}}" for column, w in zip(columns, widths))
    click.echo(indent + line.format(*(c.upper() for c in columns)).rstrip())
    for row in cells:
        click.echo(indent + line.format(*row).rstrip())


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def number(value: float, digits: int | None = None) -> str:
    """A metric for people: an integral value without ``.0`` (a count is a count), others
    as they are, or to ``digits`` significant digits."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if digits is not None and isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}g}"
    return str(value)


def duration(seconds: float | None) -> str:
    """``"0.4s"``, ``"12.3s"``, ``"2m 05s"``, ``"1h 02m"``; ``""`` for None (still running)."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def run_seconds(info: Any) -> float | None:
    """How long an MLflow run took, from the start and end times the store keeps (what
    the MLflow UI shows too); None while it runs."""
    if not info.end_time or not info.start_time:
        return None
    return max(0.0, (info.end_time - info.start_time) / 1000)
