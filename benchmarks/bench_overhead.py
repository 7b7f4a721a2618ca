"""Per-run overhead of bedrot-lab against bare MLflow, measured side by side in one process.

Each run logs 5 params, 5 metrics and 1 text artifact to a SQLite store:

* bedrot-lab: a no-op experiment with 5 declared ``Param``s that calls
  ``ctx.log_metrics`` (5 metrics) and ``ctx.log_text``, run through
  ``bedrot_lab.runner.prepare`` + ``run`` on a lake opened once;
* bare MLflow: ``mlflow.start_run`` on an experiment of a SQLite store of the
  same URI shape (``sqlite:///<tmp>/mlruns/mlflow.db``, artifacts under the temp
  folder), ``log_params``, ``log_metrics``, ``log_text``, ``end_run``.

Each side has its own fresh temporary store. After a warm-up the two are
interleaved in pairs whose order alternates (AB BA AB ...) so that noise on a
shared machine hits both; the median and p90 wall time per run are printed.

Target: median(bedrot-lab) / median(bare MLflow) <= 1.10.

    .venv/bin/python benchmarks/bench_overhead.py [--runs 50] [--warmup 5] [--repeat 1] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import isolate_environment

TARGET = 1.10
EXPERIMENT = "bench-noop"
PARAMS = {"alpha": 0.5, "beta": 3, "gamma": "median", "delta": True, "epsilon": 10}
METRICS = {f"metric_{i}": i * 0.25 for i in range(5)}
TEXT = "a small text artifact\n" * 4
ARTIFACT = "notes/summary.txt"

PLUGIN = '''\
"""The no-op experiment the overhead benchmark runs."""

from bedrot_lab import Param, experiment, hookimpl


METRICS = {metrics!r}


@experiment(
    "{name}",
    params={{
        "alpha": Param(float, 0.5, "a float"),
        "beta": Param(int, 3, "an int", min=0),
        "gamma": Param(str, "median", "a choice", choices=("mean", "median")),
        "delta": Param(bool, True, "a flag"),
        "epsilon": Param(int, 10, "another int"),
    }},
)
def bench_noop(ctx):
    """Log 5 metrics and one text artifact; the 5 params are logged by the runner."""
    ctx.log_metrics(METRICS)
    ctx.log_text({text!r}, {artifact!r})


@hookimpl
def register_experiments(register):
    register(bench_noop)
'''




class BedrotSide:
    """A temporary lake with the no-op plugin; one call = prepare + run."""

    label = "bedrot-lab"

    def __init__(self, folder: Path):
        from bedrot_lab.lab import Lab
        from bedrot_lab.testing import make_lake

        # the bare side's mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which
        # bedrot-lab's settings would take for the lake's own store
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        root = make_lake(folder / "lake")
        (root / "plugins" / "bench_noop.py").write_text(
            PLUGIN.format(name=EXPERIMENT, metrics=METRICS, text=TEXT, artifact=ARTIFACT)
        )
        self.lab = Lab.open(root)
        self.uri = self.lab.settings.tracking_uri
        if self.uri != f"sqlite:///{root.resolve() / 'mlruns' / 'mlflow.db'}":
            raise RuntimeError(f"the benchmark lake at {root} uses the store {self.uri}")
        _ = self.lab.store  # create and migrate the store outside the timings

    def __call__(self) -> None:
        from bedrot_lab.runner import prepare, run

        result = run(self.lab, prepare(self.lab, EXPERIMENT))
        if result.status != "FINISHED":
            raise RuntimeError(f"bedrot-lab run ended {result.status}: {result.error}")


class MlflowSide:
    """A temporary SQLite store of the same URI shape; one call = one bare MLflow run."""

    label = "bare MLflow"

    def __init__(self, folder: Path):
        import mlflow

        root = (folder / "bare").resolve()
        self.uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        (root / "mlruns").mkdir(parents=True)
        mlflow.set_tracking_uri(self.uri)
        location = (root / "mlruns" / "artifacts" / EXPERIMENT).as_uri()
        self.experiment_id = mlflow.MlflowClient(self.uri).create_experiment(EXPERIMENT, artifact_location=location)

    def __call__(self) -> None:
        import mlflow

        mlflow.start_run(experiment_id=self.experiment_id)
        mlflow.log_params(PARAMS)
        mlflow.log_metrics(METRICS)
        mlflow.log_text(TEXT, ARTIFACT)
        mlflow.end_run()


def _timed(side: Callable[[], None], uri: str) -> float:
    """Seconds for one run of ``side``; the process-wide tracking URI is switched to the
    side's store before the clock starts, so neither side pays for the interleaving."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    started = time.perf_counter()
    side()
    return time.perf_counter() - started


def _check_recorded(uri: str, expected: int) -> None:
    """A side really wrote what it was asked to: ``expected`` finished runs, the last with
    the 5 params, the 5 metrics (bedrot-lab adds its own ``run.*`` ones) and the artifact."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=expected + 10)
    if len(runs) != expected or any(r.info.status != "FINISHED" for r in runs):
        raise RuntimeError(f"{uri}: expected {expected} finished runs, found "
                           f"{[r.info.status for r in runs]}")
    last = client.get_run(runs[0].info.run_id)
    wanted = {k: str(v) for k, v in PARAMS.items()}
    artifacts = [a.path for a in client.list_artifacts(last.info.run_id, "notes")]
    if not (wanted.items() <= last.data.params.items() and METRICS.items() <= last.data.metrics.items()
            and artifacts == [ARTIFACT]):
        raise RuntimeError(f"{uri}: run {last.info.run_id} lacks a param, metric or artifact: "
                           f"{last.data.params}, {last.data.metrics}, {artifacts}")


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(statistics.quantiles(ms, n=10, method="inclusive")[-1], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(ms[0], 2),
    }


def measure(runs: int, warmup: int, folder: Path) -> tuple[list[float], list[float]]:
    """Seconds per run of (bedrot-lab, bare MLflow), each side in its own fresh store."""
    bedrot, bare = BedrotSide(folder), MlflowSide(folder)
    sides = ((bedrot, bedrot.uri), (bare, bare.uri))
    for _ in range(warmup):
        for side, uri in sides:
            _timed(side, uri)
    times: dict[str, list[float]] = {bedrot.label: [], bare.label: []}
    for i in range(runs):
        for side, uri in sides if i % 2 == 0 else sides[::-1]:
            times[side.label].append(_timed(side, uri))
    for _side, uri in sides:
        _check_recorded(uri, warmup + runs)
    return times[bedrot.label], times[bare.label]


def figures(rounds: list[tuple[list[float], list[float]]], runs: int, warmup: int) -> dict[str, Any]:
    """Median, p90 and ratios over the samples of every round; one ratio per round too."""
    a = [t for ours, _ in rounds for t in ours]
    b = [t for _, theirs in rounds for t in theirs]
    ours, theirs = summary(a), summary(b)
    return {
        "runs": runs,
        "warmup": warmup,
        "repeat": len(rounds),
        "bedrot_lab": ours,
        "mlflow": theirs,
        "ratio": round(statistics.median(a) / statistics.median(b), 3),
        "ratio_p90": round(ours["p90_ms"] / theirs["p90_ms"], 3),
        "paired_ratio_median": round(statistics.median(x / y for x, y in zip(a, b)), 3),
        "ratio_per_repeat": [round(statistics.median(x) / statistics.median(y), 3) for x, y in rounds],
        "extra_ms_per_run": round((statistics.median(a) - statistics.median(b)) * 1000, 2),
        "target": TARGET,
    }


def profile(runs: int, folder: Path, top: int) -> None:
    """Where the bedrot-lab side spends its extra time: cProfile of ``runs`` runs of each
    side (bedrot-lab's own functions; MLflow API calls per run of both sides), then the
    suspect steps timed alone without the profiler."""
    import cProfile
    import pstats

    bedrot, bare = BedrotSide(folder / "bedrot"), MlflowSide(folder / "bare")
    profiled = {}
    for side in (bedrot, bare):
        for _ in range(3):
            _timed(side, side.uri)
        profiler = cProfile.Profile()
        for _ in range(runs):
            profiler.enable()
            _timed(side, side.uri)
            profiler.disable()
        profiled[side.label] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def rows(stats: dict, keep: Callable[[str], bool]) -> dict[str, tuple[float, float, int]]:
        return {f"{_short(f)}:{line}({function})": (cum / runs * 1000, own / runs * 1000, ncalls / runs)
                for (f, line, function), (_, ncalls, own, cum, _) in stats.items() if keep(f)}

    site = f"{os.sep}site-packages{os.sep}"
    ours = rows(profiled[bedrot.label], lambda f: f"{os.sep}bedrot_lab{os.sep}" in f and site not in f)
    print(f"\ncProfile, {runs} bedrot-lab runs: bedrot_lab functions by cumulative time "
          "(ms per run, inflated by the profiler)")
    print(f"{'cum ms':>8} {'own ms':>8} {'calls':>6}  function")
    for name, (cum, own, calls) in sorted(ours.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{cum:8.2f} {own:8.2f} {calls:6.1f}  {name}")

    def is_api(f: str) -> bool:
        return f.endswith(("mlflow/tracking/client.py", "mlflow/tracking/fluent.py"))

    api = {label: rows(stats, is_api) for label, stats in profiled.items()}
    names = sorted(set(api[bedrot.label]) | set(api[bare.label]),
                   key=lambda n: -max(api[bedrot.label].get(n, (0,))[0], api[bare.label].get(n, (0,))[0]))
    print("\nMLflow client/fluent API per run, both sides (cumulative ms and calls per run, profiled)")
    print(f"{'bedrot ms':>9} {'calls':>5} {'bare ms':>8} {'calls':>5}  function")
    for name in names[:top]:
        a = api[bedrot.label].get(name, (0.0, 0.0, 0.0))
        b = api[bare.label].get(name, (0.0, 0.0, 0.0))
        if a[0] >= 0.05 or b[0] >= 0.05:
            print(f"{a[0]:9.2f} {a[2]:5.1f} {b[0]:8.2f} {b[2]:5.1f}  {name}")

    _component_timings(bedrot, bare, runs)


def _component_timings(bedrot: BedrotSide, bare: MlflowSide, runs: int) -> None:
    """The steps bedrot-lab adds to each run, each timed alone (median ms, no profiler)."""
    import mlflow

    from bedrot_lab import tracking
    from bedrot_lab.runner import _run_tags, prepare, run

    lab = bedrot.lab
    request = prepare(lab, EXPERIMENT)

    def system_metrics() -> None:
        tracking.SystemMetrics("0" * 32, lab.settings).stop()

    steps: dict[str, tuple[Callable[[], Any], str]] = {
        "prepare(lab, name)": (lambda: prepare(lab, EXPERIMENT), bedrot.uri),
        "runner._run_tags(lab, request)": (lambda: _run_tags(lab, request), bedrot.uri),
        "tracking.SystemMetrics(...).stop()": (system_metrics, bedrot.uri),
        "bare MLflow run": (bare, bare.uri),
        "runner.run(lab, request)": (lambda: run(lab, request), bedrot.uri),
    }
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(runs):  # interleaved, like the main measurement
        for label, (step, uri) in steps.items():
            mlflow.set_tracking_uri(uri)
            started = time.perf_counter()
            step()
            times[label].append(time.perf_counter() - started)
    medians = {label: statistics.median(values) * 1000 for label, values in times.items()}
    base = medians["bare MLflow run"]
    print(f"\nsteps timed alone, interleaved, {runs} times each, no profiler (median ms)")
    for label, ms in medians.items():
        ratio = f"  ratio {ms / base:.2f}" if label == "runner.run(lab, request)" else ""
        print(f"{ms:8.2f}  {label}{ratio}")


def _short(filename: str) -> str:
    for marker in (f"{os.sep}site-packages{os.sep}", f"{os.sep}work{os.sep}main{os.sep}"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="measured runs per side (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured runs per side first (default 5)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="independent rounds of --runs, each in fresh stores; samples are pooled (default 1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--profile", action="store_true",
                        help="then cProfile the bedrot-lab side and print where it spends its time")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile to print (default 30)")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.repeat < 1:
        parser.error("--runs must be at least 2 and --repeat at least 1")

    isolate_environment()
    with tempfile.TemporaryDirectory(prefix="bedrot-bench-") as tmp:
        rounds = [measure(args.runs, args.warmup, Path(tmp) / f"round-{i}") for i in range(args.repeat)]
        result = figures(rounds, args.runs, args.warmup)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            rounds_text = f" x {args.repeat} rounds in fresh stores" if args.repeat > 1 else ""
            print(f"{args.runs} runs per side{rounds_text}, after {args.warmup} warm-up runs, interleaved; "
                  "each run logs 5 params, 5 metrics, 1 text artifact to SQLite")
            print(f"{'':12} {'median ms':>10} {'p90 ms':>10} {'mean ms':>10} {'min ms':>10}")
            for label, key in (("bedrot-lab", "bedrot_lab"), ("bare MLflow", "mlflow")):
                row = result[key]
                print(f"{label:12} {row['median_ms']:10.2f} {row['p90_ms']:10.2f} "
                      f"{row['mean_ms']:10.2f} {row['min_ms']:10.2f}")
            print(f"extra per run = {result['extra_ms_per_run']:.2f} ms (median); "
                  f"p90 ratio = {result['ratio_p90']:.2f}; median of paired ratios = {result['paired_ratio_median']:.2f}")
            if args.repeat > 1:
                print("ratio per round = " + ", ".join(f"{r:.2f}" for r in result["ratio_per_repeat"]))
            print(f"ratio = {result['ratio']:.2f} (target <= {TARGET:.2f})")
        if args.profile:
            profile(args.runs, Path(tmp) / "profile", args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
