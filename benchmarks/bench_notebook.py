"""A tracked notebook run against papermill alone on the same notebook, cold processes.

Each case runs one notebook twice over, as a person would type it:

* ``papermill NOTEBOOK OUT -p top_n 4`` (papermill's own command), and
* ``bedrot-lab run NOTEBOOK -P top_n=4`` (the same papermill inside, plus the MLflow run:
  params, the executed notebook and its HTML rendering as artifacts, the run's end).

Three shapes of notebook, in a generated lake with a catalog table of 200,000 rows:

* ``plain``: params, pandas work on generated data and a print; no bedrot-lab inside;
* ``context``: as analysts write them for the lab: ``notebook_context()``, ``ctx.load`` of the
  catalog table, metrics and a table logged (under papermill alone the context records to a
  throw-away run of its own, as it does when a notebook is opened by hand);
* ``wide``: 40 cells, each printing a 200-row table (a large executed notebook and HTML page).

Runs alternate (papermill, lab, lab, papermill, ...) so that noise on a shared machine hits
both; the median of ``--repeat`` runs each is printed with the ratio.

Target: median(bedrot-lab run) / median(papermill) <= 1.3.

    .venv/bin/python benchmarks/bench_notebook.py [--repeat 5] [--shapes plain,context,wide] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import isolate_environment

TARGET = 1.3
BIN = Path(sys.executable).parent


def cells(shape: str) -> list[str]:
    """The code cells of a notebook of ``shape``; the first is its parameters cell."""
    params = "top_n = 10  # rows to show\nscale = 1.5"
    if shape == "plain":
        return [params, "import numpy as np\nimport pandas as pd",
                "frame = pd.DataFrame({'plays': np.arange(200_000) % 97, 'track': np.arange(200_000) % 500})",
                "top = frame.groupby('track')['plays'].sum().nlargest(top_n) * scale\nprint(top)"]
    if shape == "context":
        return [params, "from bedrot_lab import notebook_context\nctx = notebook_context()",
                "plays = ctx.load('plays')",
                "top = plays.groupby('track')['plays'].sum().nlargest(top_n) * scale\n"
                "ctx.log_metric('top_plays', float(top.iloc[0]))\nctx.log_table(top.reset_index(), 'top')\nprint(top)"]
    if shape == "wide":
        return [params, "import pandas as pd\nframe = pd.DataFrame({'n': range(200), 'x': [i * scale for i in range(200)]})",
                *[f"print('section {i}')\nframe.head(200)" for i in range(40)]]
    raise SystemExit(f"unknown shape {shape!r}")


def write_notebook(path: Path, sources: list[str]) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(notebook, path)


PLUGIN = '''
from bedrot_lab import Dataset, hookimpl


@hookimpl
def register_datasets(register):
    register(Dataset("plays", "plays.csv", columns={"track": "int", "plays": "int"}))
'''


def make_bench_lake(root: Path) -> Path:
    from bedrot_lab.testing import make_lake
    from bedrot_lab.tracking import open_store

    lake = make_lake(root)
    (lake / "plugins" / "plays_catalog.py").write_text(PLUGIN)
    rows = "\n".join(f"{i % 500},{i % 97}" for i in range(200_000))
    (lake / "4_curated" / "plays.csv").write_text(f"track,plays\n{rows}\n")
    from bedrot_lab.config import load_settings

    open_store(load_settings(lake))  # the store exists, as in a lake in use
    return lake


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shapes", default="plain,context,wide")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    isolate_environment()
    os.environ.pop("BEDROT_LAB_RUN", None)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-notebook-") as folder:
        lake = make_bench_lake(Path(folder) / "lake")
        os.environ["BEDROT_LAKE"] = str(lake)
        for shape in args.shapes.split(","):
            notebook = lake / "sandbox" / f"{shape}.ipynb"
            notebook.parent.mkdir(exist_ok=True)
            write_notebook(notebook, cells(shape))
            papermill = [str(BIN / "papermill"), "--no-progress-bar", str(notebook), str(Path(folder) / "out.ipynb"),
                         "-p", "top_n", "4"]
            lab = [str(BIN / "bedrot-lab"), "run", str(notebook), "-P", "top_n=4"]
            timed(papermill, lake), timed(lab, lake)  # warm the page cache, not the processes
            times: dict[str, list[float]] = {"papermill": [], "lab": []}
            for index in range(args.repeat):
                order = [("papermill", papermill), ("lab", lab)]
                for name, command in order if index % 2 == 0 else order[::-1]:
                    times[name].append(timed(command, lake))
            papermill_median, lab_median = statistics.median(times["papermill"]), statistics.median(times["lab"])
            results.append({"shape": shape, "papermill_s": round(papermill_median, 3), "lab_s": round(lab_median, 3),
                            "ratio": round(lab_median / papermill_median, 3), "runs": args.repeat,
                            "papermill_all": [round(t, 2) for t in times["papermill"]],
                            "lab_all": [round(t, 2) for t in times["lab"]]})
    if args.json:
        print(json.dumps({"target": TARGET, "load": os.getloadavg(), "results": results}, indent=2))
        return
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeat} cold runs each")
    print(f"{'shape':<10}{'papermill':>11}{'bedrot-lab':>12}{'ratio':>8}")
    for row in results:
        verdict = "ok" if row["ratio"] <= TARGET else f"over {TARGET}"
        print(f"{row['shape']:<10}{row['papermill_s']:>10.2f}s{row['lab_s']:>11.2f}s{row['ratio']:>7.2f}x  {verdict}")


if __name__ == "__main__":
    main()
