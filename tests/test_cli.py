"""The ``bedrot-lab`` command, run for real in subprocesses against temporary lakes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_PLUGINS
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.builtin.datasets import DK_BANK_COLUMNS
from bedrot_lab.config import ZONES, default_tracking_uri

DK_ROWS = [
    ["2024-03-01", "2024-01", "Spotify", "ZONE A0", "Track One", "QZ0000000001", "000000000001",
     "1000", "100", "Song", "US", "0", "3.50"],
    ["2024-03-01", "2024-01", "Apple Music", "ZONE A0", "Track One", "QZ0000000001", "000000000001",
     "200", "100", "Song", "GB", "0", "1.60"],
    ["2024-03-01", "2024-02", "iTunes", "ZONE A0", "Track Two", "QZ0000000002", "000000000002",
     "5", "100", "Album", "US", "0", "4.95"],
]

#: prints the modules a CLI invocation imported, as JSON, on its last stdout line
IMPORTS_PROBE = """\
import json, sys
sys.argv = ["bedrot-lab", *sys.argv[1:]]
from bedrot_lab.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


@pytest.fixture
def revenue_lake(bedrot_lake: Path) -> Path:
    """``bedrot_lake`` with the repo's revenue-per-stream plugin in its plugins folder."""
    shutil.copy(REPO_PLUGINS / "revenue_per_stream.py", bedrot_lake / "plugins")
    return bedrot_lake


def write_dk_statement(lake: Path) -> Path:
    path = lake / "4_curated" / "dk_bank_details.csv"
    lines = [",".join(DK_BANK_COLUMNS), *(",".join(row) for row in DK_ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def store_client(lake: Path):
    from mlflow import MlflowClient

    return MlflowClient(default_tracking_uri(lake.resolve()))


def all_runs(lake: Path) -> list:
    client = store_client(lake)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids) if ids else []


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with the bytes of each file (None for folders); the
    store and its lock are left out, since SQLite may touch them on a read."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith("mlruns/mlflow.db"):
            continue
        found[relative] = None if path.is_dir() else path.read_bytes()
    return found


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- init ---------------------------------------------------------------------------


def test_init_lays_out_a_lake_then_leaves_it_alone(tmp_path: Path, bedrot_env) -> None:
    env = {**os.environ, "BEDROT_USER": "tester"}
    lake = tmp_path / "new-lake"

    first = bedrot("init", str(lake), "--json", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["root"] == str(lake.resolve())
    for folder in [folder for folder, _ in ZONES.values()] + ["sandbox/users", "plugins", "experiments"]:
        assert (lake / folder).is_dir(), folder
        assert str(lake.resolve() / folder) in report["created"]
    assert (lake / "bedrot-lab.toml").is_file()
    assert str(lake.resolve() / "bedrot-lab.toml") in report["created"]
    assert (lake / "mlruns" / "mlflow.db").stat().st_size > 0
    assert report["existing"] == []

    config = lake / "bedrot-lab.toml"
    config.write_bytes(config.read_bytes().replace(b'name = "new-lake"', b'name = "edited by hand"')
                       + b"# keep this line\n")
    own_file = lake / "2_raw" / "notes.bin"
    own_file.write_bytes(b"written by hand\x00\xff\n")
    before = tree(lake)

    second = bedrot("init", str(lake), env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert not [line for line in second.stdout.splitlines() if line.startswith("created")], second.stdout
    assert "left as it was" in second.stdout
    assert "bedrot-lab.toml" in second.stdout and "4_curated" in second.stdout
    assert tree(lake) == before
    assert b'name = "edited by hand"' in config.read_bytes()
    assert own_file.read_bytes() == b"written by hand\x00\xff\n"


@pytest.mark.parametrize("size", [[], ["--scale", "10"]], ids=["sample", "scale"])
def test_init_names_each_file_once_as_it_is_called_and_nothing_else(tmp_path: Path, bedrot_env, size) -> None:
    env = {**os.environ, "BEDROT_USER": "tester"}
    done = bedrot("init", str(tmp_path / "lake"), "--sample", *size, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "created  mlruns/mlflow.db" in out
    assert not [line for line in out if "//" in line], done.stdout
    created = [line.removeprefix("created  ") for line in out if line.startswith("created  ")]
    assert len(created) == len(set(created)) and "4_curated/dk_bank_details.csv" in created
    # progress on stderr: the store being created, then the statement's rows; no file list, no
    # temporary name, none of MLflow's own log lines
    progress = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    assert progress[0] == "creating the tracking store mlruns/mlflow.db", done.stderr
    rows = "10 of 10" if size else "4,000 of 4,000"
    assert progress[1:] == [f"4_curated/dk_bank_details.csv: {rows} rows", f"3_staging/dk_bank_details.csv: {rows} rows",
                            "3_staging/metaads/metaads_staging_latest.csv: 31 rows, 1 of 1 copies of the ad sets"
                            ], done.stderr


# -- catalogs -----------------------------------------------------------------------


def test_plugins_list_json(revenue_lake: Path, cli_env) -> None:
    result = bedrot("plugins", "list", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    plugins = {info["name"]: info for info in json.loads(result.stdout)}
    assert {"datasets", "run_tags", "revenue_per_stream"} <= set(plugins)
    local = plugins["revenue_per_stream"]
    assert local["source"] == "path"
    assert local["version"] == "1.0.0"
    assert local["hooks"] == ["register_experiments"]
    assert local["error"] == ""
    assert plugins["datasets"]["source"] == "builtin"


def test_experiments_list_and_show_json(revenue_lake: Path, cli_env) -> None:
    listed = bedrot("experiments", "list", "--json", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert [item["name"] for item in items] == ["revenue-per-stream"]
    assert items[0]["plugin"] == "revenue_per_stream"

    shown = bedrot("experiments", "show", "revenue-per-stream", "--json", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["datasets"] == ["dk_bank_details"]
    params = {p["name"]: p for p in data["params"]}
    assert set(params) == {"min_streams", "chart_top"}
    assert params["min_streams"]["type"] == "int" and params["min_streams"]["default"] == 0
    assert params["chart_top"]["default"] == 12
    assert data["summary"].startswith("Revenue per stream by platform")


# -- run: mistakes are caught before any run exists ---------------------------------


@pytest.mark.parametrize(("param", "problem"), [
    ("bad=1", "has no param 'bad'"),
    ("min_streams=abc", "must be int"),
])
def test_run_with_a_bad_param_creates_no_run(revenue_lake: Path, cli_env, param: str, problem: str) -> None:
    result = bedrot("run", "revenue-per-stream", "-P", param, env=cli_env)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert problem in line
    assert "valid params" in line and "min_streams (int" in line and "chart_top (int" in line
    assert all_runs(revenue_lake) == []
    assert store_client(revenue_lake).get_experiment_by_name("revenue-per-stream") is None


def test_run_a_malformed_param_pair(revenue_lake: Path, cli_env) -> None:
    result = bedrot("run", "revenue-per-stream", "-P", "min_streams", env=cli_env)
    assert result.returncode == 2, result.stderr
    assert "KEY=VALUE" in error_line(result.stderr)


def test_run_an_unknown_experiment_lists_the_known_ones(revenue_lake: Path, cli_env) -> None:
    result = bedrot("run", "no-such-experiment", env=cli_env)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert "'no-such-experiment'" in line and "revenue-per-stream" in line


# -- run, then look at it -----------------------------------------------------------


def bedrot_together(*commands: list[str], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent read-only commands at once (each pays MLflow's import time)."""
    processes = [subprocess.Popen([sys.executable, "-m", "bedrot_lab", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for args in commands]
    done = []
    for args, process in zip(commands, processes):
        try:
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def test_run_json_then_runs_list_and_show(revenue_lake: Path, cli_env) -> None:
    statement = write_dk_statement(revenue_lake)

    ran = bedrot("run", "revenue-per-stream", "-P", "chart_top=2", "--json", env=cli_env)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    run_id = result["run_id"]
    assert result["status"] == "FINISHED"
    assert result["experiment"] == "revenue-per-stream"
    assert result["params"] == {"min_streams": 0, "chart_top": 2}

    listed, shown, unknown = bedrot_together(
        ["runs", "list", "--json"], ["runs", "show", run_id, "--json"], ["runs", "show", "nonexistent"],
        env=cli_env,
    )

    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["run_id"], r["status"], r["experiment"], r["user"]) for r in rows] == [
        (run_id, "FINISHED", "revenue-per-stream", "tester")
    ]

    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["run_id"] == run_id and data["status"] == "FINISHED"
    assert data["params"] == {"min_streams": "0", "chart_top": "2"}
    assert data["metrics"]["streams"] == 1205
    assert data["metrics"]["gross_revenue_usd"] == pytest.approx(10.05)
    assert data["metrics"]["revenue_per_stream_spotify_usd"] == pytest.approx(0.0035)
    assert data["tags"]["bedrot.experiment"] == "revenue-per-stream"
    assert [i["name"] for i in data["inputs"]] == ["dk_bank_details"]
    assert str(statement) in data["inputs"][0]["source"]
    assert {"tables/by_store.parquet", "tables/by_platform.parquet", "report.md"} <= set(data["artifacts"])

    assert unknown.returncode == 2, unknown.stderr
    assert "'nonexistent'" in error_line(unknown.stderr)
    assert unknown.stdout == ""

    run = store_client(revenue_lake).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["chart_top"] == "2"


# -- ui -----------------------------------------------------------------------------


def test_ui_on_a_port_in_use_says_so_in_one_line_and_starts_nothing(bedrot_lake: Path, cli_env) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a server would run until killed: the timeout fails the test instead of hanging it
        done = bedrot("ui", "--port", str(port), env=cli_env, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    expected = (f"Error: port {port} on 127.0.0.1 is in use (address already in use); "
                "stop what listens there or choose another with --port")
    assert done.stderr.strip().splitlines() == [expected], done.stderr


def test_ui_says_where_it_listens_and_the_two_clicks_the_lab_cannot_make(bedrot_lake: Path, cli_env) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "ui", "--port", str(port)], env=cli_env,
                              cwd=bedrot_lake, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first, second = server.stderr.readline(), server.stderr.readline()
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert f"at http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning" in first, first
    assert second.startswith('first visit in a browser: click "Model training"') and "Assistant" in second


def test_ui_on_an_address_not_of_this_machine_says_so_in_one_line(bedrot_lake: Path, cli_env) -> None:
    done = bedrot("ui", "--host", "192.0.2.1", "--port", "5999", env=cli_env, timeout=60)  # TEST-NET-1
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("Error: cannot listen on 192.0.2.1:5999 (") and "--host" in line, line


# -- start-up hygiene ---------------------------------------------------------------


def imported_by(args: list[str], env: dict[str, str], cwd: Path) -> set[str]:
    result = subprocess.run([sys.executable, "-c", IMPORTS_PROBE, *args], capture_output=True,
                            text=True, env=env, cwd=cwd, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["code"] == 0, result.stderr
    return {name.split(".")[0] for name in probe["modules"]}


def test_help_imports_neither_mlflow_nor_pandas(bedrot_lake: Path, cli_env) -> None:
    modules = imported_by(["--help"], cli_env, bedrot_lake)
    assert "click" in modules
    assert "mlflow" not in modules
    assert "pandas" not in modules


def test_experiments_list_imports_no_mlflow(revenue_lake: Path, cli_env) -> None:
    modules = imported_by(["experiments", "list"], cli_env, revenue_lake)
    assert "bedrot_lab_local" in modules  # the lake's plugin really was loaded
    assert "mlflow" not in modules
