"""What a person sees in the terminal: widths, short run ids, a sweep's table, a run shown
plainly, and sandbox usage that adds up and says when it is stale. A real lake, a real
MLflow store and real files; the CLI driven by click's CliRunner (or a subprocess)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import bedrot

from bedrot_lab.cli import cli
from bedrot_lab.cli.output import duration, run_seconds
from bedrot_lab.lab import Lab
from bedrot_lab.testing import read_run

pytestmark = pytest.mark.usefixtures("quiet_mlflow")  # the CLI runs in this process

WIDTH = 100

COUNTER = """
    from bedrot_lab import Param, experiment, hookimpl

    @experiment("count-things-in-a-rather-long-experiment-name", datasets=["track_catalog"],
                headline=["things", "share"], params={"n": Param(int, 3), "factor": Param(float, 1.0)})
    def count(ctx):
        '''Counts things, and reports them.'''
        catalog = ctx.load("track_catalog")
        ctx.log_metrics({"things": ctx.params["n"] * 10, "share": ctx.params["factor"] / 3,
                         "tracks": len(catalog)})
        ctx.report("## Findings\\n\\nWe counted **many** things, see `things`.\\n\\n"
                   "| what | count |\\n|---|---:|\\n| things | 30 |\\n| tracks | 2 |")

    @hookimpl
    def register_experiments(register):
        register(count)
"""

CATALOG_CSV = """artist,title,your_revenue_share,isrc,upc,release_date,release_type,royalty_percentage
NOVA VANTA,NIGHT DRIVE,100,QZABC2400001,123456789012,2024-02-01,single,100
NOVA VANTA,GLASS HEART,60,QZABC2400002,123456789013,2024-05-10,single,100
"""

SWEEP = """
experiment = "count-things-in-a-rather-long-experiment-name"
name = "a sweep whose name is long enough to need cutting in a table of one hundred columns"
[params]
factor = 1.5
[sweep]
n = [1, 2, 3]
"""


@pytest.fixture
def lake(bedrot_lake: Path, write_plugin) -> Path:
    write_plugin("counter", COUNTER)
    (bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(CATALOG_CSV)
    (bedrot_lake / "experiments" / "count-sweep.toml").write_text(SWEEP)
    return bedrot_lake


def invoke(lake: Path, *args: str) -> click.testing.Result:
    """``bedrot-lab --lake LAKE ARGS`` in this process, in a terminal 100 columns wide."""
    return CliRunner().invoke(cli, ["--lake", str(lake), *args], env={"COLUMNS": str(WIDTH)},
                              catch_exceptions=False)


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def too_wide(text: str) -> list[str]:
    return [line for line in lines_of(text) if len(line) > WIDTH]


# -- --help -----------------------------------------------------------------------------


def every_command(command: click.Command, path: list[str]):
    yield path, command
    if isinstance(command, click.Group):
        context = click.Context(command, info_name=path[-1] if path else "bedrot-lab")
        for name in command.list_commands(context):
            yield from every_command(command.get_command(context, name), [*path, name])


def test_help_fits_100_columns_and_no_command_summary_is_cut(lake: Path) -> None:
    commands = list(every_command(cli, []))
    assert len(commands) > 20
    for path, command in commands:
        done = invoke(lake, *path, "--help")
        assert done.exit_code == 0, (path, done.output)
        assert not too_wide(done.output), (path, too_wide(done.output))
        if not isinstance(command, click.Group):
            continue
        listing = " ".join(done.output.split("\nCommands:\n", 1)[1].split())
        assert "..." not in listing, (path, listing)
        context = click.Context(command)
        for name in command.list_commands(context):
            help_text = command.get_command(context, name).help or ""
            first_sentence = re.split(r"(?<=\.)\s+(?=[^a-z])", " ".join(help_text.split("\n\n")[0].split()))[0]
            assert f"{name} {first_sentence}" in listing, (path, name, first_sentence)


# -- run: a sweep's table, durations -----------------------------------------------------


def test_a_sweep_prints_a_table_of_its_children_not_dicts(lake: Path) -> None:
    done = invoke(lake, "run", "count-sweep.toml")
    assert done.exit_code == 0, done.output
    out = done.stdout
    assert "{" not in out and "'n'" not in out, out
    lines = lines_of(out)
    assert lines[0].split() == ["RUN", "N", "STATUS", "THINGS", "SHARE"], out
    client_runs = {}
    lab = Lab.open(lake)
    for line, n in zip(lines[1:4], (1, 2, 3)):
        short, value, status, things, share = line.split()
        assert len(short) == 8 and (value, status, things) == (str(n), "FINISHED", str(n * 10)), line
        assert share == "0.5"
        client_runs[short] = n
    summary = next(line for line in lines if line.startswith("FINISHED count-things"))
    parent = re.search(r"sweep run ([0-9a-f]{32}) \(3 runs\)", summary).group(1)
    stored = read_run(parent, lab)
    children = lab.store.client.search_runs([stored.info.experiment_id],
                                            filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert {child.info.run_id[:8]: int(child.data.params["n"]) for child in children} == client_runs
    # the duration the run reports is the one the store keeps
    assert summary.endswith(f" in {duration(run_seconds(stored.info))}"), summary

    listed = invoke(lake, "runs", "list")
    assert listed.exit_code == 0, listed.output
    assert not too_wide(listed.output), too_wide(listed.output)
    rows = lines_of(listed.stdout)
    assert rows[0].split() == ["RUN", "EXPERIMENT", "STATUS", "STARTED", "DURATION", "NAME"]
    assert rows[1].startswith(parent[:8] + " ")  # the parent first, its children indented under it
    assert [row[:10] for row in rows[2:5]] == ["  " + child.info.run_id[:8] for child in
                                               sorted(children, key=lambda c: c.info.start_time)]
    assert rows[1].rstrip().endswith("…")  # the long run name is cut to fit
    assert f" {duration(run_seconds(stored.info))}  " in rows[1]


def test_runs_list_limit_counts_rows(lake: Path) -> None:
    for n in (1, 2, 3):
        assert invoke(lake, "run", "count-things-in-a-rather-long-experiment-name", "-P", f"n={n}").exit_code == 0
    assert len(lines_of(invoke(lake, "runs", "list", "--limit", "2").stdout)) == 1 + 2
    assert len(json.loads(invoke(lake, "runs", "list", "--limit", "2", "--json").stdout)) == 2
    zero = invoke(lake, "runs", "list", "--limit", "0")
    assert zero.exit_code == 2 and "--limit" in zero.output


def test_run_reports_the_duration_the_store_keeps(lake: Path) -> None:
    done = invoke(lake, "run", "count-things-in-a-rather-long-experiment-name")
    assert done.exit_code == 0, done.output
    found = re.search(r"^FINISHED \S+ run ([0-9a-f]{32}) in (\S+)$", done.stdout, re.M)
    assert found, done.stdout
    stored = read_run(found.group(1), Lab.open(lake))
    assert found.group(2) == duration(run_seconds(stored.info))
    listed = invoke(lake, "runs", "list").stdout
    assert f"  {found.group(2)}  " in listed.splitlines()[1]


# -- runs show: short ids, plain text -------------------------------------------------------


def test_runs_show_takes_a_unique_prefix_and_refuses_short_or_ambiguous_ones(lake: Path) -> None:
    done = invoke(lake, "run", "count-things-in-a-rather-long-experiment-name", "--json")
    run_id = json.loads(done.stdout)["run_id"]
    lab = Lab.open(lake)
    client = lab.store.client
    experiment_id = read_run(run_id, lab).info.experiment_id
    # a second run whose id shares its first 10 characters (run ids are random: made so in the store)
    twin = client.create_run(experiment_id).info.run_id
    twin_id = run_id[:10] + ("0" if run_id[10] != "0" else "1") + twin[11:]
    db = sqlite3.connect(lake / "mlruns" / "mlflow.db")
    try:
        with db:
            for table in ("runs", "tags"):
                db.execute(f"UPDATE {table} SET run_uuid = ? WHERE run_uuid = ?", (twin_id, twin))
    finally:
        db.close()
    client.set_terminated(twin_id)

    by_prefix = invoke(lake, "runs", "show", run_id[:11], "--json")
    assert by_prefix.exit_code == 0, by_prefix.output
    assert json.loads(by_prefix.stdout)["run_id"] == run_id
    assert json.loads(invoke(lake, "runs", "show", twin_id[:11].upper(), "--json").stdout)["run_id"] == twin_id

    ambiguous = invoke(lake, "runs", "show", run_id[:8])
    assert ambiguous.exit_code == 2
    [line] = lines_of(ambiguous.output)
    assert line.startswith(f"Error: run id '{run_id[:8]}' is ambiguous: it matches 2 runs: ")
    assert run_id in line and twin_id in line and "give more characters" in line

    short = invoke(lake, "runs", "show", run_id[:5])
    assert short.exit_code == 2
    assert lines_of(short.output) == [f"Error: run id '{run_id[:5]}' is too short: give at least 6 characters "
                                      f"of it (see `bedrot-lab runs list`)"]
    unknown = invoke(lake, "runs", "show", "ffffff" if not run_id.startswith("ffffff") else "eeeeee")
    assert unknown.exit_code == 2 and "no run" in unknown.output and len(lines_of(unknown.output)) == 1


def test_runs_show_prints_counts_as_integers_inputs_in_a_line_and_the_report_as_text(lake: Path) -> None:
    done = invoke(lake, "run", "count-things-in-a-rather-long-experiment-name", "-P", "n=4", "--json")
    run_id = json.loads(done.stdout)["run_id"]
    shown = invoke(lake, "runs", "show", run_id[:6])
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert not too_wide(out), too_wide(out)
    metrics = dict(line.split() for line in out.split("\nMetrics:\n")[1].split("\n\n")[0].splitlines()
                   if len(line.split()) == 2)
    assert metrics["things"] == "40" and metrics["tracks"] == "2"  # counts, not 40.0
    assert metrics["share"] == "0.333333"  # to 6 significant digits, as people read it

    catalog = lake / "4_curated" / "track_catalog_royalty_splits.csv"
    inputs = out.split("\nInputs:\n")[1].split("\n\n")[0].splitlines()
    assert inputs[0].split() == ["NAME", "PATH", "ROWS", "SHA256"]
    cells = inputs[1].split()
    stored = read_run(run_id, Lab.open(lake)).inputs.dataset_inputs[0]
    profile = json.loads(stored.dataset.profile or "{}")
    rows = profile.get("rows", profile.get("num_rows", {t.key: t.value for t in stored.tags}.get("rows")))
    expected = ["track_catalog", "4_curated/track_catalog_royalty_splits.csv", *([str(rows)] if rows is not None else []),
                hashlib.sha256(catalog.read_bytes()).hexdigest()[:12]]
    assert cells == expected

    report = out.split("\nReport:\n")[1].split("\nArtifacts:\n")[0]
    assert "Findings\n  --------" in report
    assert "We counted many things, see things." in report
    assert re.search(r"what\s+count\n  -+\s+-+\n  things\s+30\n  tracks\s+2\n", report), report
    for markup in ("**", "##", "|", "`"):
        assert markup not in report, (markup, report)


# -- sandbox usage ----------------------------------------------------------------------


def write(path: Path, nbytes: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"s" * nbytes)
    return path


@pytest.mark.parametrize("by", ["user", "project", "run", "area"])
def test_usage_rows_add_up_to_the_total(bedrot_lake: Path, by: str) -> None:
    sandbox = bedrot_lake / "sandbox"
    write(sandbox / "users/ana/churn/model.bin", 4096)
    write(sandbox / "users/ana/churn/runs/0123456789abcdef0123456789abcdef/out.bin", 1000)
    write(sandbox / "users/ana/loose.txt", 10)
    write(sandbox / "users/bob/royalties/splits.parquet", 2048)
    write(sandbox / "analysis/q3/report.html", 300)
    write(sandbox / "notebooks/scratch.ipynb", 70)
    write(sandbox / "README.md", 5)

    data = json.loads(invoke(bedrot_lake, "sandbox", "usage", "--by", by, "--json").stdout)
    assert data["total"] == {"bytes": 4096 + 1000 + 10 + 2048 + 300 + 70 + 5, "files": 7}
    listed = data["rows"] + data["others"]
    assert sum(row["bytes"] for row in listed) == data["total"]["bytes"]
    assert sum(row["files"] for row in listed) == data["total"]["files"]

    table = invoke(bedrot_lake, "sandbox", "usage", "--by", by)
    assert table.exit_code == 0, table.output
    lines = lines_of(table.stdout)
    header = lines[0].split()
    rows = lines[1:lines.index(next(line for line in lines if line.startswith("total: ")))]
    files_at = header.index("FILES")
    # the FILES column ends where its header does: read each row's number there
    end = lines[0].index("FILES") + len("FILES")
    counted = [int(row[:end].split()[-1].replace(",", "")) for row in rows]
    assert sum(counted) == 7 and files_at > 0, table.stdout
    assert "total: 7.4 KiB in 7 files" in table.stdout
    if by != "area":
        assert any("analysis/ (shared)" in row for row in rows) and any("(sandbox root)" in row for row in rows)


def test_a_small_sandbox_is_refreshed_by_usage_itself(bedrot_lake: Path) -> None:
    write(bedrot_lake / "sandbox/users/ana/churn/a.bin", 100)
    assert json.loads(invoke(bedrot_lake, "sandbox", "usage", "--json").stdout)["total"]["bytes"] == 100
    write(bedrot_lake / "sandbox/users/ana/churn/b.bin", 23)
    again = invoke(bedrot_lake, "sandbox", "usage")
    assert "total: 123 B in 2 files" in again.stdout, again.output
    assert "stale since" not in again.output
    assert "watcher not running" in again.stderr


def test_a_large_stale_sandbox_says_so_plainly(bedrot_lake: Path) -> None:
    from bedrot_lab.sandbox.cli import AUTO_REFRESH_FILES

    folder = bedrot_lake / "sandbox/users/ana/many"
    folder.mkdir(parents=True)
    for i in range(AUTO_REFRESH_FILES):
        (folder / f"f{i:05d}").touch()
    built = invoke(bedrot_lake, "sandbox", "usage")  # the first use scans: current, not stale
    assert built.exit_code == 0 and "stale since" not in built.output, built.output
    write(bedrot_lake / "sandbox/users/ana/late.bin", 10)

    stale = invoke(bedrot_lake, "sandbox", "usage")
    assert stale.exit_code == 0, stale.output
    assert f"total: 0 B in {AUTO_REFRESH_FILES:,} files" in stale.stdout  # as of the index
    [line] = [line for line in lines_of(stale.stderr) if "stale since" in line]
    assert re.fullmatch(r"stale since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d, run with --refresh \(.*\)", line), line
    data = json.loads(invoke(bedrot_lake, "sandbox", "usage", "--json").stdout)
    assert data["stale_since"] and data["total"]["files"] == AUTO_REFRESH_FILES

    refreshed = invoke(bedrot_lake, "sandbox", "usage", "--refresh")
    assert f"total: 10 B in {AUTO_REFRESH_FILES + 1:,} files" in refreshed.stdout, refreshed.output
    assert "stale since" not in refreshed.output


# -- MLflow's own log lines ---------------------------------------------------------------


NOISY = '''
    import mlflow
    from bedrot_lab import experiment, hookimpl

    @experiment("noisy")
    def noisy(ctx):
        """Calls an MLflow API that logs at INFO, and skips a metric (the lab says so at INFO)."""
        mlflow.clear_active_model()  # MLflow logs "Active model is cleared"
        ctx.skip_metric("ratio", "no streams")  # the lab logs "metric ratio skipped: no streams"

    @hookimpl
    def register_experiments(register):
        register(noisy)
'''


def test_run_prints_no_info_lines_unless_verbose(lake: Path, write_plugin, cli_env) -> None:
    write_plugin("noisy", NOISY)
    cli_env = {key: value for key, value in cli_env.items() if key != "MLFLOW_LOGGING_LEVEL"}
    quiet = bedrot("run", "noisy", env=cli_env)
    assert quiet.returncode == 0, quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == ["running noisy ..."], quiet.stderr
    loud = bedrot("run", "noisy", "--verbose", env=cli_env)
    assert loud.returncode == 0, loud.stderr
    assert "Active model is cleared" in loud.stderr and "metric ratio skipped" in loud.stderr, loud.stderr
