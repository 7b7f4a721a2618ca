"""The sample lake's sandbox: a notebook and a loose script, as analysts keep them, to run with
``bedrot-lab run`` (written as JSON and text: the sample needs no notebook package)."""

from __future__ import annotations

import json
from pathlib import Path

#: the sample notebook's cells: (kind, source); the second is its parameters cell
STREAMS_BY_STORE = [
    ("markdown", "# Streams by store\n\nWhich stores bring the streams, from the DistroKid statement. "
                 "Run it as a tracked run: `bedrot-lab run sandbox/notebooks/streams_by_store.ipynb -P top_n=5`"),
    ("code", "top_n = 10  # stores to list"),
    ("code", "from bedrot_lab import notebook_context\n\nctx = notebook_context()"),
    ("code", 'by_store = ctx.aggregate("dk_bank_details", by=["Store"], sums=["Quantity", "Earnings (USD)"])\n'
             'top = by_store.sort_values("Quantity", ascending=False).head(top_n).reset_index(drop=True)\ntop'),
    ("code", 'ctx.log_metric("stores", len(by_store))\n'
             'ctx.log_metric("top_store_streams", int(top["Quantity"].iloc[0]))\n'
             'ctx.log_table(top, "streams_by_store")'),
]

REVENUE_REPORT = '''"""Revenue by sale month from the DistroKid statement, printed: one of the sandbox's loose
scripts. Run it as a tracked run: bedrot-lab run sandbox/analysis/revenue_report.py -- --year 2025"""

import argparse

from bedrot_lab import notebook_context

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--year", type=int, help="only this year's sale months")
year = parser.parse_args().year

ctx = notebook_context()
months = ctx.aggregate("dk_bank_details", by=["Sale Month"], sums=["Earnings (USD)"])
months = months.sort_values("Sale Month")
if year is not None:
    months = months[months["Sale Month"].dt.year == year]
for month, earnings in zip(months["Sale Month"], months["Earnings (USD)"]):
    print(f"{month:%Y-%m}  {earnings:>10,.2f} USD")
total = float(months["Earnings (USD)"].sum())
print(f"total    {total:>10,.2f} USD")
ctx.log_metric("revenue_usd", total)
months.to_csv("revenue_by_month.csv", index=False)  # in the run's workdir: kept with the run
'''


def write_notebook(path: Path) -> None:
    """The sample notebook, in nbformat 4."""
    cells = []
    for index, (kind, source) in enumerate(STREAMS_BY_STORE):
        cell = {"cell_type": kind, "metadata": {"tags": ["parameters"]} if index == 1 else {},
                "source": source.splitlines(keepends=True)}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append({"id": f"cell-{index}", **cell})
    notebook = {"cells": cells, "nbformat": 4, "nbformat_minor": 5, "metadata": {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}}}
    path.write_text(json.dumps(notebook, indent=1) + "\n")


def write_script(path: Path) -> None:
    """The sample script."""
    path.write_text(REVENUE_REPORT)
