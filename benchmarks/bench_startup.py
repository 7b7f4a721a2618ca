"""Start-up time of the ``bedrot-lab`` command against ``mlflow --help``, in cold subprocesses.

Compared, each as a fresh process (median of ``--repeat`` runs, interleaved
round by round after one unmeasured warm-up round):

* ``bedrot-lab --help``, which loads the plugins to list their commands
* ``bedrot-lab experiments list``
* ``bedrot-lab hello``, a plugin's command (``register_commands``) that prints a line
* ``mlflow --help`` (the reference)

all in a temporary lake whose plugins/ folder holds the repo's
``plugins/revenue_per_stream.py`` and a plugin adding the ``hello`` command.

Targets: ``--help`` <= 0.3 x and ``experiments list`` <= 0.5 x the time of
``mlflow --help``. The script also verifies, with ``python -X importtime -m
bedrot_lab ...``, that ``--help`` and ``hello`` import neither mlflow nor pandas and
that ``experiments list`` does not import mlflow (it exits 1 if not).

    .venv/bin/python benchmarks/bench_startup.py [--repeat 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "plugins" / "revenue_per_stream.py"
HELP, LIST, MLFLOW = "bedrot-lab --help", "bedrot-lab experiments list", "mlflow --help"
PLUGIN_COMMAND = "bedrot-lab hello (a plugin's)"
TARGETS = {HELP: 0.3, LIST: 0.5}
#: command -> modules it must not import
FORBIDDEN = {HELP: ("mlflow", "pandas"), LIST: ("mlflow",), PLUGIN_COMMAND: ("mlflow", "pandas")}
#: a lake plugin adding one command, so that ``--help`` has a plugin command to list
COMMAND_PLUGIN = """\
import click

from bedrot_lab import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        \"\"\"Print a greeting.\"\"\"
        click.echo("hello")
"""
REPORTED = ("mlflow", "pandas", "pyarrow", "sqlalchemy", "matplotlib", "numpy", "pluggy", "click")


def _script(bin_dir: Path, name: str) -> str:
    path = bin_dir / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"cannot find the {name!r} command in {bin_dir} or on PATH")
    return found


def _environment() -> dict[str, str]:
    """This environment without variables that would point the commands at a real lake."""
    from bedrot_lab.testing import ISOLATED_VARIABLES

    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES}
    env["BEDROT_USER"] = "bench"
    # the warm-up round writes .pyc files, as an installed package has them: else every run compiles
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _make_lake(folder: Path) -> Path:
    from bedrot_lab.testing import make_lake

    root = make_lake(folder / "lake")
    shutil.copy(PLUGIN, root / "plugins" / PLUGIN.name)
    (root / "plugins" / "bench_commands.py").write_text(COMMAND_PLUGIN)
    return root


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed, done


def measure_times(commands: dict[str, list[str]], repeat: int, lake: Path, env: dict[str, str]) -> dict[str, list[float]]:
    _, listed = _run(commands[LIST], lake, env)
    if "revenue-per-stream" not in listed.stdout:
        raise SystemExit(f"`{LIST}` did not list revenue-per-stream:\n{listed.stdout}{listed.stderr}")
    _, helped = _run(commands[HELP], lake, env)
    if "Plugin commands:" not in helped.stdout or "hello" not in helped.stdout.partition("Plugin commands:")[2]:
        raise SystemExit(f"`{HELP}` did not list the plugin command hello:\n{helped.stdout}{helped.stderr}")
    for command in commands.values():  # warm-up: file caches, .pyc files
        _run(command, lake, env)
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, command in commands.items():
            times[label].append(_run(command, lake, env)[0])
    return times


def imported_modules(args: list[str], lake: Path, env: dict[str, str]) -> dict[str, float]:
    """Top-level packages imported by ``python -X importtime -m bedrot_lab ARGS``,
    with the largest cumulative import time (seconds) seen for each."""
    command = [sys.executable, "-X", "importtime", "-m", "bedrot_lab", *args]
    _, done = _run(command, lake, env)
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not cumulative.isdigit():
            continue
        top = name.split(".")[0]
        found[top] = max(found.get(top, 0.0), int(cumulative) / 1e6)
    if not found:
        raise SystemExit(f"no -X importtime output from {' '.join(command)}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", "--runs", type=int, default=7, help="cold runs of each command (default 7)")
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent,
                        help="folder holding the bedrot-lab and mlflow scripts (default: this Python's)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--top", type=int, default=8, help="slowest top-level imports to show per command (default 8)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    bedrot, mlflow = _script(args.bin, "bedrot-lab"), _script(args.bin, "mlflow")
    commands = {HELP: [bedrot, "--help"], LIST: [bedrot, "experiments", "list"], PLUGIN_COMMAND: [bedrot, "hello"],
                MLFLOW: [mlflow, "--help"]}
    env = _environment()
    with tempfile.TemporaryDirectory(prefix="bedrot-bench-") as tmp:
        lake = _make_lake(Path(tmp))
        times = measure_times(commands, args.repeat, lake, env)
        modules = {HELP: imported_modules(["--help"], lake, env), LIST: imported_modules(["experiments", "list"], lake, env),
                   PLUGIN_COMMAND: imported_modules(["hello"], lake, env)}

    medians = {label: statistics.median(values) for label, values in times.items()}
    result: dict[str, Any] = {
        "repeat": args.repeat,
        "commands": {
            label: {"median_s": round(medians[label], 3), "min_s": round(min(values), 3),
                    "max_s": round(max(values), 3)}
            for label, values in times.items()
        },
        "ratios": {label: {"ratio": round(medians[label] / medians[MLFLOW], 3), "target": target}
                   for label, target in TARGETS.items()},
        "imports": {
            label: {
                "forbidden_imported": [m for m in FORBIDDEN[label] if m in found],
                "imported": {m: round(found[m], 3) for m in REPORTED if m in found},
                "slowest": {m: round(s, 3) for m, s in sorted(found.items(), key=lambda kv: -kv[1])[: args.top]},
            }
            for label, found in modules.items()
        },
    }
    ok = not any(entry["forbidden_imported"] for entry in result["imports"].values())
    result["imports_ok"] = ok

    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if ok else 1
    print(f"cold subprocesses, median of {args.repeat} each (interleaved, after 1 warm-up round)")
    print(f"{'command':30} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, row in result["commands"].items():
        print(f"{label:30} {row['median_s']:9.3f} {row['min_s']:7.3f} {row['max_s']:7.3f}")
    for label, entry in result["ratios"].items():
        print(f"ratio = {entry['ratio']:.2f} (target <= {entry['target']})  {label} / {MLFLOW}")
    print("\nimports (python -X importtime -m bedrot_lab ...; cumulative seconds of the slowest top-level imports)")
    for label, entry in result["imports"].items():
        verdict = "FAIL imports " + ", ".join(entry["forbidden_imported"]) if entry["forbidden_imported"] else "ok"
        print(f"{label}: must not import {' or '.join(FORBIDDEN[label])}: {verdict}")
        print("    " + ", ".join(f"{m} {s:.3f}" for m, s in entry["slowest"].items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
