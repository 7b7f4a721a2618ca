"""Royalty-adjusted revenue end to end: `bedrot-lab run` against DuckDB, each side a cold process.

For each of three generated DistroKid statements of ``--rows`` rows (default 10,000,000):

  (a) ``bedrot-lab init --scale ROWS``'s statement, sorted by month (about 2,000 groups);
  (b) ~40,000 (Artist, Title, Sale Month, Store) groups, rows spread over them at random;
  (c) ~1,000,000 groups (12,000 tracks), rows spread at random, one country per row;

these sides run on the same file, each as a fresh process, interleaved over ``--repeat``
rounds whose order flips every round (ABCD DCBA ...):

  * ``bedrot-lab run royalty-adjusted-revenue`` with the lake's digest cache warm;
  * the same with a cold digest cache (``.bedrot-lab/digests.json`` deleted just before), every round;
  * a DuckDB script: the experiment's query (streams, gross and actual = gross x share summed
    by artist, track, month and platform, the split matched on upper(trim()) of artist and title,
    100 % when the track is not in the catalog) with DuckDB's defaults, into a DataFrame;
  * the lake's original pandas code (``read_csv`` + a row-wise ``apply`` of the split lookup
    + ``groupby``) on the first 1,000,000 rows: its computation's time, taken in the child
    without the start-up, x (rows / 1,000,000); no target.

Wall time is taken around each child process, peak memory is the child's ``ru_maxrss`` as
GNU time (``/usr/bin/time -f %M``) reports it; medians over the rounds, the highest peak.
The totals (gross, actual, streams) must agree to the cent: the runs' MLflow metrics and
the DuckDB script's on the whole file, the pandas code's and DuckDB's on its slice.

Then a no-op experiment (5 params, 5 metrics, one text artifact): a cold
``bedrot-lab run bench-noop`` against a cold ``python`` doing the same logging with bare MLflow.

Targets, on each statement: warm run <= 1.2 x DuckDB's wall time, cold run <= 1.5 x; peak
memory of either run <= 1.5 x DuckDB's and <= 1 GB. No-op run <= 1.2 x bare MLflow.
Exits 1 when the totals disagree.

    .venv/bin/python benchmarks/bench_royalty.py [--rows N] [--distributions a,b,c] [--repeat 3]
                                                 [--lake-root DIR] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import isolate_environment

SLICE_ROWS = 1_000_000
SEED = 20_240_601
#: bump when the generated statements change, so kept lakes are rebuilt
GENERATOR_VERSION = 1
MARKER = ".bench-royalty.json"
EXPERIMENT = "royalty-adjusted-revenue"
STATEMENT = Path("4_curated") / "dk_bank_details.csv"
CATALOG = Path("4_curated") / "track_catalog_royalty_splits.csv"
DIGEST_CACHE = Path(".bedrot-lab") / "digests.json"
TOTALS = ("gross", "actual", "streams")
METRIC_OF = {"gross": "gross_revenue_usd", "actual": "royalty_adjusted_revenue_usd", "streams": "streams"}
KIB_PER_MB = 1024
GNU_TIME = "/usr/bin/time"

WARM_TARGET, COLD_TARGET, MEMORY_TARGET, MEMORY_CAP_MB, NOOP_TARGET = 1.2, 1.5, 1.5, 1024, 1.2


@dataclass(frozen=True)
class Distribution:
    """A generated statement: ``tracks`` spellings x 18 months x 11 stores, ``groups`` of those
    cells drawn at random; ``tracks == 0`` is ``init --scale``'s month-sorted statement."""

    label: str
    tracks: int = 0
    groups: int = 0

    def groups_for(self, rows: int) -> int:
        """Fewer groups for a small statement, so that each keeps about 10 rows or more."""
        return min(self.groups, max(1, rows // 10))


DISTRIBUTIONS = {
    "a": Distribution("sorted by month (bedrot-lab init --scale)"),
    "b": Distribution("spread at random", tracks=200, groups=39_600),
    "c": Distribution("spread at random, per-country rows", tracks=12_000, groups=1_000_000),
}
SIDES = ("run_warm", "run_cold", "duckdb", "original")
SIDE_LABELS = {
    "run_warm": "bedrot-lab run, warm digest cache",
    "run_cold": "bedrot-lab run, cold digest cache",
    "duckdb": "DuckDB script",
    "original": "pandas original, x{scale:g} of a {rows:,}-row slice",
}


# -- children: the DuckDB script and the lake's original pandas code --------------------------


def way_duckdb(csv_path: Path, catalog: Path, limit: int | None) -> dict:
    """The experiment's query in DuckDB, defaults: sums per (artist, title, month, store), the
    split joined on the normalised track, then the four tables and the total as grouping sets."""
    import duckdb

    source = "read_csv_auto(?, header = true)"
    if limit is not None:
        source = f"(select * from {source} limit {int(limit)})"
    tables = duckdb.connect().execute(
        f"""
        with statement as (
            select "Artist" as artist, "Title" as title, "Sale Month" as month, "Store" as store,
                   sum("Quantity") as streams, sum("Earnings (USD)") as gross
            from {source} group by all
        ), catalog as (
            select upper(trim(artist)) as artist, upper(trim(title)) as title, your_revenue_share,
                   row_number() over () as line
            from read_csv_auto(?, header = true)
        ), splits as (  -- a track listed twice keeps its last row
            select artist, title, arg_max(your_revenue_share, line) / 100 as share from catalog group by all
        ), lines as (
            select upper(trim(s.artist)) as artist, upper(trim(s.title)) as title, s.month, s.store, s.streams,
                   s.gross, s.gross * coalesce(splits.share, 1.0) as actual
            from statement s
            left join splits on upper(trim(s.artist)) = splits.artist and upper(trim(s.title)) = splits.title
        )
        select artist, title, month, store, grouping(artist, title, month, store) as level,
               sum(streams)::bigint as streams, sum(gross) as gross, sum(actual) as actual
        from lines
        group by grouping sets ((artist), (artist, title), (month), (store), ())
        """,
        [str(csv_path), str(catalog)],
    ).df()
    total = tables[tables["level"] == 0b1111].iloc[0]  # the () grouping set: none of the four keys
    return {name: float(total[name]) for name in TOTALS}


def way_original(csv_path: Path, catalog: Path, limit: int | None) -> dict:
    """The lake's original code: read_csv, a row-wise apply of the split lookup, groupby; on a slice."""
    import pandas as pd

    started = time.perf_counter()
    statement = pd.read_csv(csv_path, nrows=limit)
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
    by_artist = tables[0]
    return {"seconds": seconds, "rows": len(statement), "gross": float(by_artist["Earnings (USD)"].sum()),
            "actual": float(by_artist["actual"].sum()), "streams": float(by_artist["Quantity"].sum())}


CHILDREN = {"duckdb": way_duckdb, "original": way_original}


def child_command(way: str, lake: Path, limit: int | None = None) -> list[str]:
    """This script run as the child ``way`` on the lake's statement (its first ``limit`` rows)."""
    command = [sys.executable, __file__, "--child", way, "--csv", str(lake / STATEMENT),
               "--catalog", str(lake / CATALOG)]
    return command + ([] if limit is None else ["--limit", str(limit)])


# -- measuring a cold process ------------------------------------------------------------------


@dataclass
class Sample:
    """One side's cold process: wall time, peak RSS, what it printed."""

    seconds: float
    peak_mb: float
    stdout: str


def measure(command: list[str], cwd: Path) -> Sample:
    """Wall time and peak RSS of ``command`` as a new process, and its stdout; raises when it fails.

    The peak is GNU time's ``%M`` (its child's ``ru_maxrss``). ``os.wait4`` on a child of this
    process would report at least this process's own peak: exec keeps the high-water mark of
    the memory it replaces, the forked copy of this process.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        started = time.perf_counter()
        done = subprocess.run([GNU_TIME, "-f", "%M", "-o", rss.name, *command], cwd=cwd, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:6])} ... exited {done.returncode}:\n{done.stderr[-3000:]}")
        return Sample(seconds, int(rss.read().split()[-1]) / KIB_PER_MB, done.stdout)


def bedrot_run(lake: Path, experiment: str) -> list[str]:
    """``bedrot-lab run`` as a user types it, with ``--json`` for the run id."""
    return [sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "run", experiment, "--json"]


def finished_run_id(sample: Sample) -> str:
    """The run id ``bedrot-lab run --json`` printed, once the run is known to have finished."""
    result = json.loads(sample.stdout)
    if result["status"] != "FINISHED":
        raise RuntimeError(f"bedrot-lab run ended {result['status']}: {result['error']}")
    return result["run_id"]


def interleaved(commands: dict[str, list[str]], cwd: Path, repeat: int, before=None) -> dict[str, list[Sample]]:
    """``repeat`` rounds of every command, the order flipped every round; ``before(side)`` runs
    just before each side's clock starts."""
    samples: dict[str, list[Sample]] = {side: [] for side in commands}
    for number in range(repeat):
        order = list(commands) if number % 2 == 0 else list(reversed(commands))
        print(f"  round {number + 1}/{repeat}: {', '.join(order)}", file=sys.stderr)
        for side in order:
            if before:
                before(side)
            samples[side].append(measure(commands[side], cwd))
    return samples


# -- the generated lakes -----------------------------------------------------------------------


def statement_tracks(count: int) -> tuple[list[tuple[str, ...]], list[list]]:
    """``count`` tracks as the statement spells them (artist, title, ISRC, UPC), and catalog rows to add.

    The sample's 17 tracks (16 in the catalog, some spelled there unlike DistroKid, 1 not),
    8 of them again in another case, then invented tracks; every third invented track gets a
    catalog row, every other of those spelled in another case with spaces around.
    """
    from bedrot_lab.sample.catalog import TRACKS

    sample = [(t.artist, t.title, t.isrc, t.upc) for t in TRACKS]
    respelled = [(a.title(), t.title(), i, u) for a, t, i, u in sample[:4]]
    respelled += [(a, t.lower(), i, u) for a, t, i, u in sample[4:8]]
    invented_count = max(0, count - len(sample) - len(respelled))
    artists = max(8, invented_count // 25)
    invented = [(f"ACT {n % artists:03d}", f"SIGNAL {n:05d}", f"QZBX7{n:07d}", f"19687{n:07d}")
                for n in range(invented_count)]
    shares = (100, 90, 75, 60, 50, 40)
    catalog_rows = []
    for n, (artist, title, isrc, upc) in enumerate(invented[::3]):
        if n % 2:
            artist, title = f" {artist.title()}", f"{title.lower()} "
        share = shares[n % len(shares)]
        catalog_rows.append([artist, title, share, isrc, upc, "2024-06-07", "single", share])
    return (sample + respelled + invented)[:count], catalog_rows


class RandomStatement:
    """Statement rows spread uniformly at random over ``groups`` (track, month, store) cells."""

    EXTRA_STORES = {"Deezer": 0.0035}

    def __init__(self, tracks: list[tuple[str, ...]], groups: int, seed: int):
        import numpy as np
        import pyarrow as pa

        from bedrot_lab.sample.statement import COUNTRIES, SALE_MONTHS, STORES

        self.rng = np.random.default_rng(seed)
        rates = {**{name: rate for name, (_, rate) in STORES.items()}, **self.EXTRA_STORES}
        months, stores = len(SALE_MONTHS), len(rates)
        cells = self.rng.choice(len(tracks) * months * stores, size=groups, replace=False)
        self.track, rest = np.divmod(cells, months * stores)
        self.month, self.store = np.divmod(rest, stores)
        self.store_rate = np.array(list(rates.values()))
        self.country_p = np.array(list(COUNTRIES.values())) / sum(COUNTRIES.values())
        report_months = np.arange(SALE_MONTHS[0] + 1, SALE_MONTHS[-1] + 4)
        report_days = report_months.astype("datetime64[D]") + self.rng.integers(2, 27, len(report_months))
        self.text = {
            "report": pa.array(np.datetime_as_string(report_days, unit="D")),
            "month": pa.array(np.datetime_as_string(SALE_MONTHS, unit="M")),
            "store": pa.array(list(rates)),
            "country": pa.array(list(COUNTRIES)),
            **{column: pa.array([t[i] for t in tracks]) for i, column in enumerate(("artist", "title", "isrc", "upc"))},
        }

    def batch(self, size: int):
        """``size`` rows in the DistroKid header's order: a random group each, a random country,
        a positive quantity, earnings with up to 8 decimals (a few zero or negative)."""
        import numpy as np
        import pyarrow as pa

        from bedrot_lab.sample.statement import DK_HEADER

        rng, text = self.rng, self.text
        group = rng.integers(0, len(self.track), size)
        track, month, store = (pa.array(a[group]) for a in (self.track, self.month, self.store))
        quantity = np.floor(rng.lognormal(1.7, 1.1, size)).astype(np.int64) + 1
        earnings = np.round(quantity * self.store_rate[self.store[group]] * rng.lognormal(0.0, 0.2, size), 8)
        adjustment = rng.random(size)
        earnings[adjustment < 0.004] = 0.0
        earnings[adjustment > 0.998] *= -1.0
        columns = [
            text["report"].take(pa.array(self.month[group] + rng.integers(0, 3, size))),
            text["month"].take(month),
            text["store"].take(store),
            text["artist"].take(track),
            text["title"].take(track),
            text["isrc"].take(track),
            text["upc"].take(track),
            pa.array(quantity),
            pa.array(np.full(size, 100.0)),
            pa.array(["Song"] * size),
            text["country"].take(pa.array(rng.choice(len(self.country_p), size, p=self.country_p))),
            pa.array(np.zeros(size)),
            pa.array(earnings + 0.0),
        ]
        return pa.table(dict(zip(DK_HEADER, columns, strict=True)))


def write_random_statement(path: Path, rows: int, statement: RandomStatement) -> None:
    """The DK header, then ``rows`` rows written a batch at a time, which bounds memory."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    from bedrot_lab.sample.statement import BATCH_ROWS, DK_HEADER

    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(path), "wb") as sink:
        sink.write((",".join(DK_HEADER) + "\n").encode())
        writer = None
        for start in range(0, rows, BATCH_ROWS):
            batch = statement.batch(min(BATCH_ROWS, rows - start))
            writer = writer or pacsv.CSVWriter(sink, batch.schema, write_options=options)
            writer.write_table(batch)
        if writer is not None:
            writer.close()


def init_lake(folder: Path, *options: str) -> None:
    """``bedrot-lab init FOLDER [OPTIONS]``, which also creates the lake's store."""
    subprocess.run([sys.executable, "-m", "bedrot_lab", "init", str(folder), *options], check=True,
                   capture_output=True)


def prepare_lake(folder: Path, key: str, rows: int) -> Path:
    """The lake of distribution ``key``, kept between invocations; rebuilt when its marker differs."""
    wanted = {"distribution": key, "rows": rows, "version": GENERATOR_VERSION}
    marker = folder / MARKER
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    distribution = DISTRIBUTIONS[key]
    print(f"generating ({key}) {rows:,} rows, {distribution.label}, in {folder} ...", file=sys.stderr)
    if not distribution.tracks:
        init_lake(folder, "--scale", str(rows))
    else:
        init_lake(folder, "--sample")
        tracks, catalog_rows = statement_tracks(distribution.tracks)
        with (folder / CATALOG).open("a", newline="") as catalog:
            csv.writer(catalog, lineterminator="\n").writerows(catalog_rows)
        statement = RandomStatement(tracks, distribution.groups_for(rows), SEED + ord(key))
        write_random_statement(folder / STATEMENT, rows, statement)
    marker.write_text(json.dumps(wanted))
    return folder


# -- the royalty benchmark on one lake ---------------------------------------------------------


def run_metrics(lake: Path, run_ids: list[str]) -> list[dict]:
    """The totals each run logged, read from the lake's store."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{lake.resolve() / 'mlruns' / 'mlflow.db'}")
    return [{name: client.get_run(run_id).data.metrics[METRIC_OF[name]] for name in TOTALS} for run_id in run_ids]


def cents(totals: dict) -> dict:
    """The totals rounded to the cent, the precision they must agree to."""
    return {name: round(totals[name], 2) for name in TOTALS}


def check_totals(lake: Path, samples: dict[str, list[Sample]], reference: dict, slice_reference: dict) -> dict:
    """Each side's totals to the cent against the reference, every round: per side, whether all
    agree, the last round's totals and the reference."""
    found = {
        "run_warm": run_metrics(lake, [finished_run_id(s) for s in samples["run_warm"]]),
        "run_cold": run_metrics(lake, [finished_run_id(s) for s in samples["run_cold"]]),
        "duckdb": [json.loads(s.stdout) for s in samples["duckdb"]],
        "original": [json.loads(s.stdout) for s in samples["original"]],
    }
    checks = {}
    for side, totals in found.items():
        wanted = cents(slice_reference if side == "original" else reference)
        checks[side] = {"agree": all(cents(t) == wanted for t in totals), "totals": cents(totals[-1]),
                        "reference": wanted}
    return checks


def bench_statement(lake: Path, rows: int, repeat: int) -> dict:
    """Every side on one lake's statement: medians, peaks, ratios to DuckDB, checks."""
    commands = {"run_warm": bedrot_run(lake, EXPERIMENT), "run_cold": bedrot_run(lake, EXPERIMENT),
                "duckdb": child_command("duckdb", lake), "original": child_command("original", lake, SLICE_ROWS)}

    def cold_cache(side: str) -> None:
        if side == "run_cold":
            (lake / DIGEST_CACHE).unlink(missing_ok=True)

    finished_run_id(measure(commands["run_warm"], lake))  # warm-up, untimed: fills the digest cache
    samples = interleaved(commands, lake, repeat, before=cold_cache)
    reference = json.loads(samples["duckdb"][0].stdout)
    slice_reference = json.loads(measure(child_command("duckdb", lake, SLICE_ROWS), lake).stdout)
    originals = [json.loads(s.stdout) for s in samples["original"]]
    scale = rows / originals[0]["rows"]
    rounds = {side: [s.seconds for s in samples[side]] for side in SIDES}
    rounds["original"] = [o["seconds"] * scale for o in originals]
    seconds = {side: statistics.median(values) for side, values in rounds.items()}
    peak = {side: max(s.peak_mb for s in samples[side]) for side in SIDES}
    time_ratio = {side: seconds[side] / seconds["duckdb"] for side in SIDES}
    memory_ratio = {side: peak[side] / peak["duckdb"] for side in SIDES}
    time_target = {"run_warm": WARM_TARGET, "run_cold": COLD_TARGET}
    passed = {side: {"time": time_ratio[side] <= target,
                     "memory": memory_ratio[side] <= MEMORY_TARGET and peak[side] <= MEMORY_CAP_MB}
              for side, target in time_target.items()}
    return {
        "csv_mb": round((lake / STATEMENT).stat().st_size / 2**20, 1),
        "original_rows": originals[0]["rows"],
        "original_scale": round(scale, 3),
        "seconds": {side: round(v, 3) for side, v in seconds.items()},
        "rounds_seconds": {side: [round(v, 3) for v in values] for side, values in rounds.items()},
        "peak_mb": {side: round(v, 1) for side, v in peak.items()},
        "ratio_to_duckdb": {side: round(v, 3) for side, v in time_ratio.items()},
        "memory_ratio_to_duckdb": {side: round(v, 3) for side, v in memory_ratio.items()},
        "targets": {side: {"time": target, "memory": MEMORY_TARGET, "memory_cap_mb": MEMORY_CAP_MB}
                    for side, target in time_target.items()},
        "passed": passed,
        "totals": check_totals(lake, samples, reference, slice_reference),
    }


# -- the no-op experiment against bare MLflow --------------------------------------------------

BARE_MLFLOW = """\
import json
import sys

import mlflow

uri, experiment_id, payload = sys.argv[1:]
params, metrics, text, artifact = json.loads(payload)
mlflow.set_tracking_uri(uri)
mlflow.start_run(experiment_id=experiment_id)
mlflow.log_params(params)
mlflow.log_metrics(metrics)
mlflow.log_text(text, artifact)
mlflow.end_run()
"""


def bench_noop(folder: Path, repeat: int) -> dict:
    """A cold ``bedrot-lab run`` of a no-op experiment against a cold bare-MLflow script; fresh stores."""
    import mlflow
    from bench_overhead import ARTIFACT, METRICS, PARAMS, PLUGIN, TEXT
    from bench_overhead import EXPERIMENT as NOOP

    shutil.rmtree(folder, ignore_errors=True)
    lake, bare = folder / "lake", (folder / "bare").resolve()
    init_lake(lake)
    (lake / "plugins" / "bench_noop.py").write_text(
        PLUGIN.format(name=NOOP, metrics=METRICS, text=TEXT, artifact=ARTIFACT))
    (bare / "mlruns").mkdir(parents=True)
    uri = f"sqlite:///{bare / 'mlruns' / 'mlflow.db'}"
    location = (bare / "mlruns" / "artifacts" / NOOP).as_uri()
    experiment_id = mlflow.MlflowClient(uri).create_experiment(NOOP, artifact_location=location)
    commands = {"run": bedrot_run(lake, NOOP),
                "bare": [sys.executable, "-c", BARE_MLFLOW, uri, experiment_id,
                         json.dumps([PARAMS, METRICS, TEXT, ARTIFACT])]}
    for command in commands.values():  # warm-up, untimed: .pyc files, the run's MLflow experiment
        measure(command, folder)
    print(f"no-op experiment, {repeat} rounds", file=sys.stderr)
    samples = interleaved(commands, folder, repeat)
    for sample in samples["run"]:
        finished_run_id(sample)
    seconds = {side: statistics.median(s.seconds for s in values) for side, values in samples.items()}
    ratio = seconds["run"] / seconds["bare"]
    return {"seconds": {side: round(v, 3) for side, v in seconds.items()},
            "peak_mb": {side: round(max(s.peak_mb for s in values), 1) for side, values in samples.items()},
            "ratio": round(ratio, 3), "target": NOOP_TARGET, "passed": ratio <= NOOP_TARGET}


# -- report ------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def side_label(side: str, figures: dict) -> str:
    return SIDE_LABELS[side].format(scale=figures["original_scale"], rows=figures["original_rows"])


def print_statement(key: str, rows: int, repeat: int, figures: dict) -> None:
    distribution = DISTRIBUTIONS[key]
    groups = f"{distribution.groups_for(rows):,} groups " if distribution.tracks else ""
    print(f"\n({key}) {groups}{distribution.label}: {rows:,} rows, {figures['csv_mb']:,} MB of CSV; "
          f"median of {repeat} interleaved rounds, each side a cold process")
    print(f"{'side':44} {'seconds':>8} {'x DuckDB':>9} {'target':>7} {'':4}  {'peak MB':>7} {'x DuckDB':>9}")
    for side in SIDES:
        label = side_label(side, figures)
        line = f"{label:44} {figures['seconds'][side]:8.2f} {figures['ratio_to_duckdb'][side]:9.2f}"
        passed = figures["passed"].get(side)
        if passed:
            target = figures["targets"][side]
            line += f" {'<= ' + format(target['time'], 'g'):>7} {mark(passed['time']):4}"
        else:
            line += f" {'':7} {'':4}"
        line += f"  {figures['peak_mb'][side]:7.0f} {figures['memory_ratio_to_duckdb'][side]:9.2f}"
        if passed:
            line += f" {mark(passed['memory'])}"
        print(line.rstrip())
    print(f"memory target for the runs: <= {MEMORY_TARGET:g} x DuckDB's peak and <= {MEMORY_CAP_MB} MB")
    reference = figures["totals"]["duckdb"]["reference"]
    print("totals (DuckDB): " + ", ".join(f"{name} {reference[name]:,.2f}" for name in TOTALS))
    for side, check in figures["totals"].items():
        if not check["agree"]:
            print(f"  {side_label(side, figures)} DIFFERS: {check['totals']} against {check['reference']}")
    agree = all(check["agree"] for check in figures["totals"].values())
    print(f"totals agree to the cent on every side (pandas: against DuckDB on the same slice): "
          f"{'yes' if agree else 'NO'}")


def print_noop(noop: dict) -> None:
    print(f"\nno-op experiment, cold processes: bedrot-lab run {noop['seconds']['run']:.2f} s "
          f"({noop['peak_mb']['run']:.0f} MB), bare MLflow script {noop['seconds']['bare']:.2f} s "
          f"({noop['peak_mb']['bare']:.0f} MB): ratio {noop['ratio']:.2f} (target <= {noop['target']:g}) "
          f"{mark(noop['passed'])}")


def distributions(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = set(keys) - set(DISTRIBUTIONS)
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"choose among {', '.join(DISTRIBUTIONS)}")
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="statement rows (default 10,000,000)")
    parser.add_argument("--distributions", type=distributions, default=list(DISTRIBUTIONS),
                        help="which statements, among a,b,c (default all)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--lake-root", type=Path, default=Path(tempfile.gettempdir()) / "bedrot-bench-royalty-e2e",
                        help="where the generated lakes are kept between invocations")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--catalog", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.csv, args.catalog, args.limit)))
        return 0

    isolate_environment()
    root = args.lake_root.resolve()
    statements = {}
    for key in args.distributions:
        lake = prepare_lake(root / key, key, args.rows)
        print(f"({key}) {args.repeat} rounds on {lake}", file=sys.stderr)
        statements[key] = bench_statement(lake, args.rows, args.repeat)
    noop = bench_noop(root / "noop", args.repeat)
    agree = all(check["agree"] for figures in statements.values() for check in figures["totals"].values())
    if args.json:
        print(json.dumps({"rows": args.rows, "repeat": args.repeat, "statements": statements, "noop": noop,
                          "totals_agree": agree}, indent=2))
    else:
        for key, figures in statements.items():
            print_statement(key, args.rows, args.repeat, figures)
        print_noop(noop)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
