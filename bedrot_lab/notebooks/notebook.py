"""A notebook as an experiment: executed with papermill on a kernel of this environment,
recorded as one run (params, the executed notebook, its HTML rendering, the failing cell).

The notebook runs in a process of its own (:mod:`.kernel`). This module never opens the
tracking store itself, so the runner opens the run while that process and its kernel start;
the kernel records to the run through :func:`~.session.notebook_context`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from ..experiments import Experiment
from ..fsutil import file_sha256
from .errors import CellFailed, NotebookError
from .kernel import NotebookProcess, html_of
from .parameters import cell_source, notebook_params, read_cells
from .session import lake_relative, relayed_run

#: what running a notebook imports (the ``notebooks`` extra)
NEEDS = ("papermill", "ipykernel", "nbconvert")
#: the tag papermill gives the cell it adds with the params
INJECTED = "injected-parameters"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def notebook_experiment(path: Path, lake: Path) -> Experiment:
    """The experiment that runs notebook ``path``: named by its file name, its params from its
    ``parameters`` cell, described by its first Markdown cell."""
    missing = [module for module in NEEDS if importlib.util.find_spec(module) is None]
    if missing:
        raise NotebookError(f"{path.name}: running a notebook needs {', '.join(missing)}, which is not installed: "
                            "pip install 'bedrot-lab[notebooks]'")
    cells = read_cells(path)

    def run_notebook(ctx: Any) -> None:
        execute(ctx, path, lake)

    return Experiment(name=path.name, func=run_notebook, description=_first_markdown(cells),
                      params=notebook_params(path, cells))


def _first_markdown(cells: list[Any]) -> str:
    """The first Markdown cell's text, a heading's marks left out (it reads as the description's first line)."""
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            return cell_source(cell).strip().lstrip("#").strip()
    return ""


def execute(ctx: Any, path: Path, lake: Path) -> None:
    """Execute notebook ``path`` with ``ctx.params`` injected, then record the executed notebook
    and its HTML rendering; a cell that raises fails the run naming the cell."""
    relative = lake_relative(path, lake)
    with tempfile.TemporaryDirectory(prefix="bedrot-notebook-") as scratch:
        folder = Path(scratch)
        try:
            with relayed_run(ctx, folder, lake, path.read_bytes()) as env:
                execution = NotebookProcess(path, folder / path.name, _injectable(ctx.params), folder=folder, env=env)
                execution.start()
                try:
                    for index in execution.cells():
                        _show(ctx, f"{path.name}: cell {index + 1}")
                    failure = execution.wait()
                except BaseException:  # stopped (Ctrl-C, SIGTERM) or broken: no kernel outlives the run
                    execution.stop()
                    raise
        finally:
            _show(ctx, None)
            ctx.recorder.set_tags({"bedrot.notebook": relative, "bedrot.notebook.sha256": file_sha256(path)},
                                  by_name=False)
            _record_executed(ctx, folder / path.name)
        if failure is not None:
            raise _cell_failed(ctx, failure, folder / path.name)


def _injectable(params: dict[str, Any]) -> dict[str, Any]:
    """The params papermill injects: those with a value (a param without a default left as the cell has it)."""
    return {key: value for key, value in params.items() if value is not None}


def _show(ctx: Any, text: str | None) -> None:
    if ctx.lab.progress is not None:
        ctx.lab.progress(text)


def _record_executed(ctx: Any, executed: Path) -> None:
    """The executed notebook and its HTML rendering as the run's artifacts, credentials masked."""
    for made in (executed, html_of(executed)):
        if made.is_file():
            ctx.log_text(made.read_text(encoding="utf-8"), f"notebook/{made.name}")


def _cell_failed(ctx: Any, failure: dict[str, Any], executed: Path) -> CellFailed:
    """The run's error for a cell that raised (papermill's account of it): which cell of the
    notebook, counted without the cell papermill adds; its source and traceback as ``error/cell.txt``."""
    index = failure["cell_index"]
    number = index + 1
    if executed.is_file():
        cells = json.loads(executed.read_text(encoding="utf-8")).get("cells", [])
        tags = [cell.get("metadata", {}).get("tags", []) for cell in cells]
        executing = [cell for cell in tags if "papermill-error-cell-tag" not in cell]  # as papermill ran it
        number -= sum(INJECTED in cell for cell in executing[:index])
    traceback = _ANSI.sub("", "\n".join(failure["traceback"]))
    ctx.log_text(f"cell {number} (In [{failure['exec_count']}]):\n\n{failure['source']}\n\n{traceback}\n",
                 "error/cell.txt")
    ctx.recorder.set_tags({"bedrot.failed_cell": str(number)}, by_name=False)
    return CellFailed(f"cell {number} raised {failure['ename']}: {_ANSI.sub('', failure['evalue'])}")
