"""A notebook as an experiment: executed with papermill on a kernel of this environment,
recorded as one run (params, the executed notebook, its HTML rendering, the failing cell).

This module never opens the tracking store itself: the runner opens the run beside the
kernel's start-up, and the kernel records to it through :func:`~.session.notebook_context`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..experiments import Experiment, check_signature
from ..fsutil import file_sha256
from .errors import CellFailed, NotebookError
from .kernel import NotebookExecution
from .parameters import notebook_params
from .session import hand_off_when_open, lake_relative, run_environment

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
    params = notebook_params(path)

    def run_notebook(ctx: Any) -> None:
        execute(ctx, path, lake)

    check_signature(run_notebook, path.name)
    return Experiment(name=path.name, func=run_notebook, description=_first_markdown(path), params=params)


def _first_markdown(path: Path) -> str:
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError) as exc:
        raise NotebookError(f"{path}: not a notebook ({exc})") from None
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            return ("".join(source) if isinstance(source, list) else str(source)).strip()
    return ""


def execute(ctx: Any, path: Path, lake: Path) -> None:
    """Execute notebook ``path`` with ``ctx.params`` injected, then record the executed notebook
    and its HTML rendering; a cell that raises fails the run naming the cell."""
    relative = lake_relative(path, lake)
    with tempfile.TemporaryDirectory(prefix="bedrot-notebook-") as scratch:
        folder = Path(scratch)
        executed = folder / path.name
        handoff = folder / "run.json"
        opened = hand_off_when_open(ctx, handoff, lake)
        renderer = _Renderer()
        execution = NotebookExecution(path, executed, _injectable(ctx.params), folder=folder,
                                      env=run_environment(ctx, handoff, path.read_bytes()),
                                      on_cell_start=_progress(ctx, path, renderer))
        execution.start()
        try:
            failure = execution.wait()
        except BaseException:  # stopped (Ctrl-C, SIGTERM) or broken: no kernel outlives the run
            execution.stop()
            raise
        finally:
            _show(ctx, None)
            opened.join()
            ctx.recorder.set_tags({"bedrot.notebook": relative, "bedrot.notebook.sha256": file_sha256(path)},
                                  by_name=False)
            if executed.is_file():
                _record_executed(ctx, executed, renderer)
            execution.join()  # the kernel's shut down
        if failure is not None:
            raise _cell_failed(ctx, failure, executed)


def _injectable(params: dict[str, Any]) -> dict[str, Any]:
    """The params papermill injects: those with a value (a param without a default left as the cell has it)."""
    return {key: value for key, value in params.items() if value is not None}


def _progress(ctx: Any, path: Path, renderer: _Renderer) -> Any:
    def on_cell_start(cell: Any, cell_index: int) -> None:
        renderer.prepare()  # while the cells run: the kernel does the work, this process waits
        _show(ctx, f"{path.name}: cell {cell_index + 1}")

    return on_cell_start


def _show(ctx: Any, text: str | None) -> None:
    if ctx.lab.progress is not None:
        ctx.lab.progress(text)


def _record_executed(ctx: Any, executed: Path, renderer: _Renderer) -> None:
    """The executed notebook and its HTML rendering as the run's artifacts, credentials masked."""
    text = executed.read_text(encoding="utf-8")
    ctx.log_text(text, f"notebook/{executed.name}")
    ctx.log_text(renderer.html(text), f"notebook/{executed.stem}.html")


class _Renderer:
    """Renders a notebook as HTML with nbconvert, made ready (imported, templates loaded) on a
    thread of its own while the notebook runs: it would take a second after it otherwise."""

    def __init__(self) -> None:
        self._exporter: Any = None
        self._ready = threading.Thread(target=self._prepare, name="bedrot-html", daemon=True)

    def prepare(self) -> None:
        """Start making ready, once."""
        if self._ready.ident is None:
            self._ready.start()

    def _prepare(self) -> None:
        import nbformat
        from nbconvert import HTMLExporter

        exporter = HTMLExporter()
        exporter.from_notebook_node(nbformat.v4.new_notebook())
        self._exporter = exporter

    def html(self, notebook: str) -> str:
        import nbformat

        if self._ready.ident is not None:
            self._ready.join()
        if self._exporter is None:  # preparing failed: do it here, where its error shows
            self._prepare()
        return self._exporter.from_notebook_node(nbformat.reads(notebook, as_version=4))[0]


def _cell_failed(ctx: Any, failure: Any, executed: Path) -> CellFailed:
    """The run's error for a cell that raised: which cell of the notebook (counted without the
    cell papermill adds), its source and traceback as ``error/cell.txt``."""
    number = failure.cell_index + 1
    if executed.is_file():
        import nbformat

        tags = [cell.metadata.get("tags", []) for cell in nbformat.read(str(executed), as_version=4).cells]
        executing = [cell for cell in tags if "papermill-error-cell-tag" not in cell]  # as papermill ran it
        number -= sum(INJECTED in cell for cell in executing[:failure.cell_index])
    traceback = _ANSI.sub("", "\n".join(failure.traceback))
    ctx.log_text(f"cell {number} (In [{failure.exec_count}]):\n\n{failure.source}\n\n{traceback}\n", "error/cell.txt")
    ctx.recorder.set_tags({"bedrot.failed_cell": str(number)}, by_name=False)
    return CellFailed(f"cell {number} raised {failure.ename}: {_ANSI.sub('', failure.evalue)}")
