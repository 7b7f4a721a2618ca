"""Royalty-adjusted revenue on a large DistroKid statement: three ways, side by side.

Gross, actual (after splits) and streams by artist, track, month and platform,
from the same generated CSV (``bedrot-lab init --scale ROWS``), each way in a
fresh process, interleaved over ``--repeat`` rounds:

  (a) the lake's original approach: pandas ``read_csv`` + a row-wise ``apply`` of
      the split lookup + ``groupby``, timed on a 1,000,000-row slice and scaled
      linearly to the whole file;
  (b) the same query in DuckDB over the CSV (a development-only dependency);
  (c) bedrot-lab's computation in-process: ``ctx.aggregate``'s streamed group-by plus
      the plugin's ``royalty_tables``;

and the whole ``bedrot-lab run royalty-adjusted-revenue`` wall time.

Targets: (c) <= 1.2 x (b), so >= 15 x faster than (a); peak memory of (c) <= 1 GB.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SLICE_ROWS = 1_000_000
KEYS = ["Artist", "Title", "Sale Month", "Store"]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the three ways, each run in a child process ----------------------------------------


def way_original(csv: Path, catalog: Path) -> dict:
    """(a) read_csv, row-wise apply of the split lookup, groupby: on a slice."""
    import pandas as pd

    started = time.perf_counter()
    statement = pd.read_csv(csv, nrows=SLICE_ROWS)
    splits = pd.read_csv(catalog)
    shares = {f"{a.strip().upper()}_{t.strip().upper()}": s / 100
              for a, t, s in zip(splits["artist"], splits["title"], splits["your_revenue_share"])}
    statement["share"] = statement.apply(
        lambda row: shares.get(f"{row['Artist'].upper()}_{row['Title'].upper()}", 1.0), axis=1)
    statement["actual"] = statement["Earnings (USD)"] * statement["share"]
    measures = {"Quantity": "sum", "Earnings (USD)": "sum", "actual": "sum"}
    tables = [statement.groupby(keys).agg(measures) for keys in (["Artist"], ["Artist", "Title"],
                                                                  ["Sale Month"], ["Store"])]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": len(statement), "peak_mb": peak_mb(),
            "actual": float(tables[0]["actual"].sum())}


def way_duckdb(csv: Path, catalog: Path) -> dict:
    """(b) DuckDB over the CSV, the catalog joined, grouping sets for the four tables."""
    import duckdb

    started = time.perf_counter()
    connection = duckdb.connect()
    result = connection.execute(
        """
        with splits as (
            select upper(trim(artist)) as a, upper(trim(title)) as t, last(your_revenue_share) / 100 as share
            from read_csv_auto(?, header = true) group by all
        ), lines as (
            select s."Artist", s."Title", s."Sale Month", s."Store", s."Quantity", s."Earnings (USD)" as gross,
                   s."Earnings (USD)" * coalesce(splits.share, 1.0) as actual
            from read_csv_auto(?, header = true) s
            left join splits on upper(trim(s."Artist")) = splits.a and upper(trim(s."Title")) = splits.t
        )
        select "Artist", "Title", "Sale Month", "Store", sum("Quantity") as streams, sum(gross) as gross,
               sum(actual) as actual
        from lines
        group by grouping sets (("Artist"), ("Artist", "Title"), ("Sale Month"), ("Store"))
        """,
        [str(catalog), str(csv)],
    ).df()
    seconds = time.perf_counter() - started
    by_artist = result[result["Artist"].notna() & result["Title"].isna()]
    return {"seconds": seconds, "peak_mb": peak_mb(), "actual": float(by_artist["actual"].sum()),
            "streams": int(by_artist["streams"].sum())}


def way_bedrot(csv: Path, catalog: Path) -> dict:
    """(c) bedrot-lab: the streamed group-by behind ctx.aggregate, then the plugin's tables."""
    from bedrot_lab.aggregate import aggregate_csv
    from bedrot_lab.builtin.datasets import CATALOG
    from bedrot_lab.lake import read_dataset

    spec = importlib.util.spec_from_file_location("royalty_plugin", REPO / "plugins" / "royalty_adjusted_revenue.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    datasets = {d.name: d for d in CATALOG}

    started = time.perf_counter()
    statement = aggregate_csv(datasets["dk_bank_details"], csv, plugin.KEYS, plugin.SUMS)
    splits = read_dataset(datasets["track_catalog"], catalog, ["artist", "title", "your_revenue_share"])
    tables = plugin.royalty_tables(statement, splits)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_mb": peak_mb(), "actual": tables["totals"]["actual_revenue_usd"],
            "streams": tables["totals"]["streams"]}


WAYS = {"original": way_original, "duckdb": way_duckdb, "bedrot": way_bedrot}


def child(way: str, csv: Path, catalog: Path) -> dict:
    """Run one way in a fresh interpreter and return what it printed."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", way, "--csv", str(csv), "--catalog", str(catalog)],
        capture_output=True, text=True, check=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


def whole_run(lake: Path) -> float:
    """Wall time of ``bedrot-lab run royalty-adjusted-revenue`` as a user types it."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "run", "royalty-adjusted-revenue"],
                   capture_output=True, text=True, check=True)
    return time.perf_counter() - started


def make_lake(folder: Path, rows: int) -> Path:
    """A lake with a ``rows``-row statement, generated once and reused while it has that size."""
    marker = folder / f".rows-{rows}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating a {rows:,}-row statement in {folder} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "bedrot_lab", "init", str(folder), "--scale", str(rows)],
                       check=True, capture_output=True)
        shutil.copy(REPO / "plugins" / "royalty_adjusted_revenue.py", folder / "plugins")
        marker.touch()
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="statement rows (default 10,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--lake", type=Path, default=Path(tempfile.gettempdir()) / "bedrot-bench-royalty",
                        help="where the generated lake is kept between invocations")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--catalog", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(WAYS[args.child](args.csv, args.catalog)))
        return 0

    lake = make_lake(args.lake, args.rows)
    csv = lake / "4_curated" / "dk_bank_details.csv"
    catalog = lake / "4_curated" / "track_catalog_royalty_splits.csv"
    samples: dict[str, list[dict]] = {way: [] for way in WAYS}
    runs: list[float] = []
    digest_cache = lake / ".bedrot-lab" / "digests.json"
    digest_cache.unlink(missing_ok=True)
    first_run = whole_run(lake)  # pays the input's sha256 once; later runs find it cached
    for round_number in range(args.repeat):
        for way in (WAYS if round_number % 2 == 0 else reversed(list(WAYS))):
            samples[way].append(child(way, csv, catalog))
        runs.append(whole_run(lake))

    scale = args.rows / SLICE_ROWS
    median = {way: statistics.median(s["seconds"] for s in values) for way, values in samples.items()}
    median["original"] *= scale
    peak = {way: max(s["peak_mb"] for s in values) for way, values in samples.items()}
    figures = {
        "rows": args.rows,
        "csv_mb": round(csv.stat().st_size / 2**20, 1),
        "seconds": {k: round(v, 3) for k, v in median.items()},
        "peak_mb": {k: round(v, 1) for k, v in peak.items()},
        "run_seconds_median": round(statistics.median(runs), 3),
        "run_seconds_first_with_sha256": round(first_run, 3),
        "ratio_bedrot_to_duckdb": round(median["bedrot"] / median["duckdb"], 3),
        "speedup_over_original": round(median["original"] / median["bedrot"], 1),
        "actual_usd": {way: round(values[-1]["actual"], 4) for way, values in samples.items()},
    }
    agree = abs(figures["actual_usd"]["bedrot"] - figures["actual_usd"]["duckdb"]) < 1e-6 * max(
        1.0, abs(figures["actual_usd"]["duckdb"]))
    if args.json:
        print(json.dumps({**figures, "bedrot_and_duckdb_agree": agree}, indent=2))
        return 0 if agree else 1
    print(f"{args.rows:,} rows, {figures['csv_mb']:,} MB of CSV; median of {args.repeat} interleaved rounds, "
          "each way in a fresh process")
    print(f"{'':44} {'seconds':>9} {'peak MB':>9}")
    labels = {"original": f"(a) pandas + row-wise apply (x{scale:g} of a 1M slice)", "duckdb": "(b) DuckDB",
              "bedrot": "(c) bedrot-lab aggregate + royalty_tables"}
    for way, label in labels.items():
        print(f"{label:44} {median[way]:9.2f} {peak[way]:9.0f}")
    print(f"{'bedrot-lab run royalty-adjusted-revenue':44} {figures['run_seconds_median']:9.2f}"
          f"   (first run, hashing the input: {first_run:.2f} s)")
    print(f"ratio (c)/(b) = {figures['ratio_bedrot_to_duckdb']:.2f} (target <= 1.2)")
    print(f"speed-up (a)/(c) = {figures['speedup_over_original']:.1f} x (target >= 15)")
    print(f"peak memory (c) = {peak['bedrot']:.0f} MB (target <= 1024)")
    print(f"actual revenue agrees between (b) and (c): {'yes' if agree else 'NO'}")
    return 0 if agree else 1


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.exit(main())
