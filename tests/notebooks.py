"""Notebooks for the tests: written with nbformat from cell sources, the parameters cell tagged."""

from __future__ import annotations

from pathlib import Path

from conftest import STATEMENT_HEADER

#: a cell source starting with this is a markdown cell (the marker is dropped)
MARKDOWN = "md:"

#: a DistroKid statement of 1,600 streams
STATEMENT = STATEMENT_HEADER + (
    "2025-06-01,2025-04,Spotify,Zone A,First Light,QZ0000000001,000000000001,1000,100,Song,US,0,4.00\n"
    "2025-06-01,2025-04,Apple Music,Zone A,First Light,QZ0000000001,000000000001,600,100,Song,DE,0,2.50\n"
)
#: what the notebook's triple-quoted string holds: converted, its lines must not gain the function's indent
HEADER = "\nstreams\n  scaled\n"
#: a notebook whose metrics come from its params (so a -P changes them) and from the statement it loads;
#: its parameters cell is the third: ``write_notebook(path, STREAMS_NOTEBOOK, parameters=2)``
STREAMS_NOTEBOOK = [
    "md: # Streams, scaled\n\nThe statement's streams, counted `scale` times.",
    "%matplotlib inline\nimport math\nimport pandas as pd\nfrom bedrot_lab import notebook_context\n\n"
    "ctx = notebook_context()",
    'scale = 2  # times each stream is counted\nlabel = "all"  # what the run is about\nratio = 0.25\nexact = False',
    "md: The numbers.",
    '!echo counting\nstatement = ctx.load("dk_bank_details")\nstreams = int(statement["Quantity"].sum())\n'
    'ctx.log_metric("streams_scaled", streams * scale)\nctx.log_metric("ratio_root", math.sqrt(ratio))\n'
    f'header = """{HEADER}"""\nctx.log_metric("header_chars", len(header))\nframe = pd.DataFrame({{"x": [1]}})',
]


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
