"""Notebooks for the tests: written with nbformat from cell sources, the parameters cell tagged."""

from __future__ import annotations

from pathlib import Path

#: a cell source starting with this is a markdown cell (the marker is dropped)
MARKDOWN = "md:"


def write_notebook(path: Path, cells: list[str], *, parameters: int | None = None) -> Path:
    """Write a notebook to ``path`` whose cells have the sources ``cells``, in order: a source that
    starts with :data:`MARKDOWN` is a markdown cell, any other a code cell; cell ``parameters``
    (an index into ``cells``) is tagged ``parameters``, as papermill wants it."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for index, source in enumerate(cells):
        if source.startswith(MARKDOWN):
            notebook.cells.append(nbformat.v4.new_markdown_cell(source[len(MARKDOWN):].strip()))
            continue
        cell = nbformat.v4.new_code_cell(source)
        if index == parameters:
            cell.metadata["tags"] = ["parameters"]
        notebook.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path
