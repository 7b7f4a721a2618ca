"""A notebook's parameters: the cell tagged ``parameters``, read as typed experiment params.

The cell is read as papermill reads it (each top-level ``name = value``, the comment on its
line as help), with :mod:`ast` rather than by importing papermill: ``bedrot-lab run`` checks
``-P`` before anything starts, and papermill takes a second to import.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path
from typing import Any

from ..experiments import PARAM_TYPES, Param, ParamError
from .errors import NotebookError

#: the tag of the cell that declares a notebook's parameters (papermill's)
PARAMETERS_TAG = "parameters"


def notebook_params(path: Path, cells: list[Any] | None = None) -> dict[str, Param]:
    """The params of notebook ``path``: one per assignment in its cell tagged ``parameters``,
    typed from its default (``top_n = 10`` is an int) and helped by the comment on its line.
    A default that is not a plain literal (``start = str(2020)``) makes a text param without a
    default value, whose help shows the expression. No such cell: no params. ``cells``: the
    notebook's cells, when :func:`read_cells` has read them already."""
    source = parameters_source(read_cells(path) if cells is None else cells)
    if source is None:
        return {}
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NotebookError(f"{path}: its parameters cell is not Python (line {exc.lineno}: {exc.msg})") from None
    comments = _comments(source)
    params = {}
    for node in tree.body:
        found = _assignment(node)
        if found is None:
            continue
        name, value = found
        expression = ast.get_source_segment(source, value) or ""
        default = _literal(value)
        kind = type(default) if type(default) in PARAM_TYPES else str
        help_text = comments.get(node.end_lineno or node.lineno, "")
        if default is not None and type(default) not in PARAM_TYPES:
            default = None  # a list, a dict or an expression: given as text, injected as text
        if default is None and expression != "None":
            help_text = f"{help_text} (default: {expression})".strip()
        try:
            params[name] = Param(kind, default, help_text, name=name)
        except ParamError as exc:
            raise NotebookError(f"{path}: parameters cell: {exc}") from None
    return params


def read_cells(path: Path) -> list[Any]:
    """The cells of notebook ``path`` (its JSON, as nbformat writes it)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        if not isinstance(cells, list):
            raise TypeError("its cells are not a list")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise NotebookError(f"{path}: not a notebook that can be read ({type(exc).__name__}: {exc})") from None
    return cells


def parameters_source(cells: list[Any]) -> str | None:
    """The source of the cell tagged ``parameters`` among ``cells``, or None when there is none."""
    for cell in cells:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        if PARAMETERS_TAG in cell.get("metadata", {}).get("tags", []):
            return cell_source(cell)
    return None


def cell_source(cell: dict[str, Any]) -> str:
    """A cell's source as one string (nbformat keeps it as a list of lines or one string)."""
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _assignment(node: ast.stmt) -> tuple[str, ast.expr] | None:
    """``(name, value)`` of ``name = value`` or ``name: type = value``; None for anything else."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line."""
    found = {}
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                found[token.start[0]] = token.string.lstrip("#").strip()
    except (tokenize.TokenError, SyntaxError):
        pass
    return found


def _literal(value: ast.expr) -> Any:
    """The value of expression ``value`` if it is a Python literal, else None."""
    try:
        return ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
