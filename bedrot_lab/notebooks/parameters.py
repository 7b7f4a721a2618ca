"""A notebook's parameters: the cell tagged ``parameters``, read as typed experiment params."""

from __future__ import annotations

import ast
from pathlib import Path

from ..experiments import PARAM_TYPES, Param, ParamError
from .errors import NotebookError


def notebook_params(path: Path) -> dict[str, Param]:
    """The params of notebook ``path``: one per assignment in its cell tagged ``parameters``
    (papermill's inspection reads it), typed from its default (``top_n = 10`` is an int) and
    helped by the comment on its line. A default that is not a plain literal (``start =
    str(2020)``) makes a text param without a default value. No such cell: no params."""
    import papermill

    try:
        found = papermill.inspect_notebook(str(path))
    except Exception as exc:
        raise NotebookError(f"{path}: cannot read its parameters cell ({exc})") from None
    params = {}
    for name, about in found.items():
        default = _literal(about.get("default"))
        kind = type(default) if type(default) in PARAM_TYPES else str
        if default is not None and type(default) not in PARAM_TYPES:
            default = None  # a list, a dict or an expression: given as text, injected as text
        help_text = about.get("help") or ""
        if default is None and about.get("default"):
            help_text = f"{help_text} (default: {about['default']})".strip()
        try:
            params[name] = Param(kind, default, help_text, name=name)
        except ParamError as exc:
            raise NotebookError(f"{path}: parameters cell: {exc}") from None
    return params


def _literal(source: str | None) -> object:
    """The value of ``source`` if it is a Python literal, else None."""
    if not source:
        return None
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
