"""Notebooks and scripts as tracked runs: executed for real (papermill on an ipykernel, a Python
subprocess), read back from a real MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bedrot_forked
from notebooks import MARKDOWN, write_notebook

from bedrot_lab.runner import RunRequest, run
from bedrot_lab.testing import read_run

DATASET_PLUGIN = """
    from bedrot_lab import Dataset, hookimpl

    @hookimpl
    def register_datasets(register):
        register(Dataset("plays", "plays.csv", columns={"track": "string", "plays": "int"}))
"""

#: a notebook as analysts write them: params, the lab's context, a catalog input, a metric, an output
REVENUE = [
    f"{MARKDOWN} # Plays check\nSums the plays of the catalog's plays table.",
    "top_n = 10  # tracks to keep\nrate = 0.5",
    "from bedrot_lab import notebook_context\nctx = notebook_context()",
    "plays = ctx.load('plays')\nctx.log_metric('score', top_n * rate)\nctx.log_metric('plays', int(plays['plays'].sum()))",
    "ctx.log_output(plays.head(top_n), 'top_plays')\nctx.report('## Top plays\\nchecked')\nprint('done', top_n)",
]


@pytest.fixture
def lake(bedrot_lake: Path, write_plugin) -> Path:
    write_plugin("plays_catalog", DATASET_PLUGIN)
    (bedrot_lake / "4_curated" / "plays.csv").write_text("track,plays\na,3\nb,4\n")
    return bedrot_lake


def run_file(lake: Path, path: Path, **params):
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    experiment = lab.runnable(str(path))
    return lab, run(lab, RunRequest(experiment, experiment.validate(params)))


def artifact_names(lab, run_id: str, folder: str) -> list[str]:
    return sorted(Path(item.path).name for item in lab.store.client.list_artifacts(run_id, folder))


def artifact_text(lab, run_id: str, path: str) -> str:
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=path, tracking_uri=lab.settings.tracking_uri)).read_text()


def test_a_notebook_runs_as_one_run_with_its_params_outputs_and_html(lake: Path):
    notebook = write_notebook(lake / "sandbox" / "notebooks" / "plays_check.ipynb", REVENUE, parameters=1)

    lab, default = run_file(lake, notebook)
    _, changed = run_file(lake, notebook, top_n="4")

    assert (default.status, changed.status) == ("FINISHED", "FINISHED"), (default.error, changed.error)
    first, second = read_run(default.run_id, lab), read_run(changed.run_id, lab)
    assert first.data.params == {"top_n": "10", "rate": "0.5"}
    assert second.data.params == {"top_n": "4", "rate": "0.5"}
    assert first.data.metrics["score"] == 5.0 and second.data.metrics["score"] == 2.0
    assert second.data.metrics["plays"] == 7.0
    assert second.info.run_name == "plays_check.ipynb top_n=4"
    assert second.data.tags["bedrot.notebook"] == "sandbox/notebooks/plays_check.ipynb"
    assert second.data.tags["bedrot.plugin"] == "notebooks"
    assert second.data.tags["output.top_plays.rows"] == "2"
    assert "Plays check" in second.data.tags["mlflow.note.content"]
    assert [item.dataset.name for item in second.inputs.dataset_inputs] == ["plays"]
    assert artifact_names(lab, changed.run_id, "notebook") == ["plays_check.html", "plays_check.ipynb"]
    executed = json.loads(artifact_text(lab, changed.run_id, "notebook/plays_check.ipynb"))
    injected = [cell for cell in executed["cells"] if "injected-parameters" in cell["metadata"].get("tags", [])]
    assert "top_n = 4" in "".join(injected[0]["source"])
    assert "done 4" in json.dumps(executed["cells"][-1]["outputs"])
    assert "done 4" in artifact_text(lab, changed.run_id, "notebook/plays_check.html")
    assert "Top plays" in artifact_text(lab, changed.run_id, "report.md")


def test_a_cell_that_raises_fails_the_run_naming_the_cell(lake: Path):
    notebook = write_notebook(lake / "sandbox" / "broken.ipynb", [
        "n = 2", f"{MARKDOWN} a note", "from bedrot_lab import notebook_context\nctx = notebook_context()\n"
        "ctx.log_metric('before', n)", "x = 1\nraise ValueError('the statement has no rows for 2026-11')",
        "ctx.log_metric('after', 1)"], parameters=0)

    lab, result = run_file(lake, notebook, n="3")

    assert result.status == "FAILED"
    assert result.error == "CellFailed: cell 4 raised ValueError: the statement has no rows for 2026-11"
    record = read_run(result.run_id, lab)
    assert record.info.status == "FAILED"
    assert record.data.tags["error"] == result.error
    assert record.data.tags["bedrot.failed_cell"] == "4"
    assert record.data.metrics["before"] == 3.0 and "after" not in record.data.metrics
    cell = artifact_text(lab, result.run_id, "error/cell.txt")
    assert "raise ValueError" in cell and "\x1b[" not in cell and "Traceback" in cell
    assert artifact_names(lab, result.run_id, "notebook") == ["broken.html", "broken.ipynb"]


def test_an_unknown_param_is_refused_before_anything_runs(lake: Path):
    notebook = write_notebook(lake / "sandbox" / "n.ipynb", ["top_n = 10  # tracks to keep", "print(top_n)"],
                              parameters=0)

    done = bedrot_forked("run", str(notebook), "-P", "topn=3", cwd=lake)
    typed = bedrot_forked("run", str(notebook), "-P", "top_n=three", cwd=lake)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "has no param 'topn'; valid params: top_n (int, default 10): tracks to keep" in done.stderr
    assert typed.returncode == 2 and "param 'top_n' must be int, got 'three'" in typed.stderr
    assert not (lake / "mlruns" / "artifacts" / "n.ipynb").exists()


def test_a_missing_file_or_one_nothing_runs_is_one_line(lake: Path):
    (lake / "notes.txt").write_text("x")

    missing = bedrot_forked("run", "sandbox/nope.ipynb", cwd=lake)
    unrunnable = bedrot_forked("run", "notes.txt", cwd=lake)

    assert missing.returncode == 2 and "sandbox/nope.ipynb: no such file" in missing.stderr
    assert unrunnable.returncode == 2 and "no plugin runs .txt files" in unrunnable.stderr
    assert "Traceback" not in missing.stderr + unrunnable.stderr


SCRIPT = '''"""Counts the plays, as the seed's analysis scripts do."""
import sys
from pathlib import Path

from bedrot_lab import notebook_context

ctx = notebook_context()
year = int(sys.argv[sys.argv.index("--year") + 1])
ctx.log_metric("year", year)
Path("summary.txt").write_text(f"plays in {year}: {int(ctx.load('plays')['plays'].sum())}\\n")
Path("charts").mkdir()
Path("charts/a.csv").write_text("x\\n1\\n")
print("plays counted for", year)
'''


def test_a_script_runs_as_a_run_with_its_output_files_and_arguments(lake: Path):
    script = lake / "sandbox" / "analysis" / "count_plays.py"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT)

    done = bedrot_forked("run", "sandbox/analysis/count_plays.py", "--json", "--", "--year", "2025", cwd=lake)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "FINISHED" and result["params"] == {"args": "--year 2025"}
    assert "plays counted for 2025" in done.stderr
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    record = read_run(result["run_id"], lab)
    assert record.data.metrics["year"] == 2025.0 and record.data.metrics["script.exit_code"] == 0
    assert record.data.tags["bedrot.script"] == "sandbox/analysis/count_plays.py"
    assert record.data.tags["mlflow.source.name"] == "bedrot-lab run sandbox/analysis/count_plays.py"
    assert "Counts the plays" in record.data.tags["mlflow.note.content"]
    assert artifact_text(lab, result["run_id"], "script/stdout.txt") == "plays counted for 2025\n"
    assert artifact_text(lab, result["run_id"], "workdir/summary.txt") == "plays in 2025: 7\n"
    assert artifact_names(lab, result["run_id"], "workdir/charts") == ["a.csv"]
    assert [item.dataset.name for item in record.inputs.dataset_inputs] == ["plays"]


def test_a_script_that_exits_3_fails_the_run_with_its_stderr(lake: Path):
    script = lake / "sandbox" / "analysis" / "fails.py"
    script.parent.mkdir(parents=True)
    script.write_text("import sys\nprint('reading')\nprint('no statement for 2026-11', file=sys.stderr)\nsys.exit(3)\n")

    done = bedrot_forked("run", str(script), cwd=lake)

    assert done.returncode == 1
    assert "FAILED: fails.py run" in done.stderr and "ScriptFailed: fails.py exited with code 3: no statement for 2026-11" in done.stderr
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    record = lab.store.client.search_runs([lab.store.experiment_id("fails.py")])[0]
    assert record.info.status == "FAILED"
    assert record.data.tags["error"] == "ScriptFailed: fails.py exited with code 3: no statement for 2026-11"
    assert record.data.metrics["script.exit_code"] == 3.0
    assert artifact_text(lab, record.info.run_id, "script/stderr.txt") == "no statement for 2026-11\n"


def test_arguments_after_the_target_are_for_scripts_only(lake: Path):
    notebook = write_notebook(lake / "n.ipynb", ["print(1)"])

    done = bedrot_forked("run", str(notebook), "--", "--year", "2025", cwd=lake)

    assert done.returncode == 2 and "takes no arguments after TARGET" in done.stderr


def test_opened_by_hand_the_context_records_to_a_throwaway_run_or_none(lake: Path):
    script = lake / "by_hand.py"
    script.write_text("from bedrot_lab import notebook_context\nimport sys\n"
                      "ctx = notebook_context(track=sys.argv[1] == 'track', params={'k': 2})\n"
                      "ctx.log_metric('k', ctx.params['k'])\nprint(len(ctx.load('plays')))\n")
    env = {key: value for key, value in os.environ.items() if key != "BEDROT_LAB_RUN"}

    for mode in ("track", "none"):
        done = subprocess.run([sys.executable, str(script), mode], cwd=lake, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0 and done.stdout == "2\n", done.stderr

    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    runs = lab.store.client.search_runs([lab.store.experiment_id("by_hand.py")])
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["bedrot.interactive"] == "true"
    assert runs[0].data.metrics["k"] == 2.0 and runs[0].data.params == {"k": "2"}


def test_a_spec_names_a_notebook_with_a_sweep_and_its_output_registers(lake: Path):
    write_notebook(lake / "sandbox" / "verified" / "plays_check.ipynb", REVENUE, parameters=1)
    spec = lake / "experiments" / "plays.toml"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text('notebook = "sandbox/verified/plays_check.ipynb"\npurpose = "Do the top plays hold?"\n'
                    'methodology = "Sum plays per track."\n[params]\nrate = 2.0\n[sweep]\ntop_n = [1, 3]\n')
    broken = lake / "experiments" / "broken.toml"
    broken.write_text('notebook = "sandbox/verified/missing.ipynb"\n')

    swept = bedrot_forked("run", "plays.toml", "--json", cwd=lake)
    registered = bedrot_forked("run", "sandbox/verified/plays_check.ipynb", "-P", "top_n=1",
                               "--register", "top_plays=plays/top.parquet", "--json", cwd=lake)
    missing = bedrot_forked("run", "broken.toml", cwd=lake)

    assert swept.returncode == 0, swept.stderr
    sweep = json.loads(swept.stdout)
    assert [child["params"]["top_n"] for child in sweep["children"]] == [1, 3]
    assert [child["status"] for child in sweep["children"]] == ["FINISHED", "FINISHED"]
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    parent = read_run(sweep["run_id"], lab)
    assert "Do the top plays hold?" in parent.data.tags["mlflow.note.content"]
    scores = sorted(read_run(child["run_id"], lab).data.metrics["score"] for child in sweep["children"])
    assert scores == [2.0, 6.0]
    assert registered.returncode == 0, registered.stderr
    version = json.loads(registered.stdout)["registered"][0]
    assert version["curated_path"].endswith("plays/top.parquet")
    assert missing.returncode == 2 and "broken.toml: notebook:" in missing.stderr and "no such file" in missing.stderr


def test_a_notebook_run_stopped_by_sigterm_ends_killed_and_leaves_no_kernel(lake: Path, cli_env):
    import signal
    import time

    marker = lake / "kernel.pid"
    notebook = write_notebook(lake / "sandbox" / "slow.ipynb", [
        "from bedrot_lab import notebook_context\nctx = notebook_context()\nctx.log_metric('started', 1)",
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"])
    lab_process = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "run", str(notebook), "--json"], cwd=lake,
                                   env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and lab_process.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), lab_process.communicate()
    kernel_pid = int(marker.read_text())

    lab_process.send_signal(signal.SIGTERM)
    out, err = lab_process.communicate(timeout=60)

    assert lab_process.returncode == 143, err
    result = json.loads(out)
    assert result["status"] == "KILLED" and result["error"] == "interrupted by SIGTERM"
    import psutil

    assert not psutil.pid_exists(kernel_pid) or psutil.Process(kernel_pid).status() == psutil.STATUS_ZOMBIE
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    record = read_run(result["run_id"], lab)
    assert record.info.status == "KILLED" and record.data.metrics["started"] == 1.0
    assert artifact_names(lab, result["run_id"], "notebook") == ["slow.ipynb"]  # as far as it ran; no HTML
    executed = json.loads(artifact_text(lab, result["run_id"], "notebook/slow.ipynb"))
    assert executed["cells"][0]["execution_count"] == 1


SQL_PLUGIN = """
    from bedrot_lab import experiment, hookimpl

    @hookimpl
    def experiment_from_file(path):
        if path.suffix == ".sql":
            @experiment(path.name, description=f"runs {path.name}")
            def query(ctx):
                ctx.log_metric("rows", len(ctx.sql(path.read_text())))
            return query
        if path.suffix == ".bad":
            return "not an experiment"
        if path.suffix == ".boom":
            raise RuntimeError("cannot read it")
"""


def test_a_lake_plugin_makes_other_files_runnable_through_the_same_hook(lake: Path, write_plugin):
    write_plugin("sql_files", SQL_PLUGIN)
    (lake / "count.sql").write_text("SELECT * FROM plays")
    (lake / "x.bad").write_text("")
    (lake / "x.boom").write_text("")

    done = bedrot_forked("run", "count.sql", "--json", cwd=lake)
    bad = bedrot_forked("run", "x.bad", cwd=lake)
    boom = bedrot_forked("run", "x.boom", cwd=lake)

    assert done.returncode == 0, done.stderr
    from bedrot_lab.lab import Lab

    lab = Lab.open(lake)
    record = read_run(json.loads(done.stdout)["run_id"], lab)
    assert record.data.metrics["rows"] == 2.0 and record.data.tags["bedrot.plugin"] == "sql_files"
    assert bad.returncode == 1 and "plugin 'sql_files' returned 'not an experiment'" in bad.stderr
    assert boom.returncode == 1 and "plugin 'sql_files' could not make an experiment of" in boom.stderr
    assert "RuntimeError: cannot read it" in boom.stderr and "Traceback" not in bad.stderr + boom.stderr


def test_a_token_in_a_param_an_output_or_an_error_is_masked_in_everything_the_run_keeps(lake: Path):
    import secrets as random_tokens

    token = "ghp_" + random_tokens.token_hex(20)[:36]  # a fake GitHub token, made for this test
    notebook = write_notebook(lake / "sandbox" / "leaky.ipynb", [
        "api_token = ''  # the notebook's own secret", "print('using', api_token)",
        "raise RuntimeError('refused: ' + api_token)"], parameters=0)

    lab, result = run_file(lake, notebook, api_token=token)

    assert result.status == "FAILED" and token not in result.error and "****" in result.error
    record = read_run(result.run_id, lab)
    assert token not in json.dumps({**record.data.params, **record.data.tags})
    for artifact in ("notebook/leaky.ipynb", "notebook/leaky.html", "error/cell.txt", "error/traceback.txt"):
        text = artifact_text(lab, result.run_id, artifact)
        assert token not in text and "****" in text, artifact


def limit(lake: Path, table: str) -> None:
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + f"\n[compute.limits]\n{table}\n")


def test_a_notebook_past_its_wall_time_ends_killed_with_its_kernel(lake: Path):
    limit(lake, "wall_seconds = 4")
    marker = lake / "kernel.pid"
    notebook = write_notebook(lake / "sandbox" / "sleepy.ipynb", [
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"])

    done = bedrot_forked("run", str(notebook), "--json", cwd=lake)

    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "KILLED" and "wall_seconds = 4" in result["error"]
    import psutil

    kernel = int(marker.read_text())
    assert not psutil.pid_exists(kernel) or psutil.Process(kernel).status() == psutil.STATUS_ZOMBIE
    from bedrot_lab.lab import Lab

    record = read_run(result["run_id"], Lab.open(lake))
    assert record.info.status == "KILLED" and record.data.tags["bedrot.limit"] == "wall_seconds"


def test_a_script_past_its_memory_limit_ends_failed_naming_the_limit(lake: Path):
    limit(lake, 'memory = "700MiB"')
    script = lake / "hungry.py"
    script.write_text("import time\nchunks = []\nfor _ in range(40):\n    chunks.append(bytearray(64 * 2**20))\n"
                      "    time.sleep(0.05)\nprint('never', flush=True)\n")

    done = bedrot_forked("run", str(script), "--json", cwd=lake)

    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "FAILED" and "memory = 700MiB" in result["error"]
    from bedrot_lab.lab import Lab

    record = read_run(result["run_id"], Lab.open(lake))
    assert record.data.tags["bedrot.limit"] == "memory" and record.info.status == "FAILED"


def test_a_notebook_that_calls_mlflow_itself_records_to_the_same_run(lake: Path):
    notebook = write_notebook(lake / "sandbox" / "direct.ipynb", [
        "import mlflow\nmlflow.log_metric('direct', 3)\nmlflow.set_tag('logged_by', 'the notebook')"])

    lab, result = run_file(lake, notebook)

    assert result.status == "FINISHED", result.error
    record = read_run(result.run_id, lab)
    assert record.data.metrics["direct"] == 3.0 and record.data.tags["logged_by"] == "the notebook"
    assert record.info.status == "FINISHED"
    assert len(lab.store.client.search_runs([lab.store.experiment_id("direct.ipynb")])) == 1


def test_kill_9_of_the_lab_leaves_no_notebook_process_or_kernel_running(lake: Path, cli_env):
    import signal
    import time

    import psutil

    marker = lake / "kernel.pid"
    notebook = write_notebook(lake / "sandbox" / "orphan.ipynb", [
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)"])
    lab_process = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "run", str(notebook)], cwd=lake, env=cli_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()
    kernel = psutil.Process(int(marker.read_text()))
    helpers = [process for process in psutil.Process(lab_process.pid).children(recursive=True)]

    lab_process.send_signal(signal.SIGKILL)
    lab_process.wait()

    _, alive = psutil.wait_procs([kernel, *helpers], timeout=30)
    assert not alive, [process.cmdline() for process in alive]


def test_the_sample_lake_s_notebook_and_script_run_as_the_tour_says(bedrot_lake: Path):
    from bedrot_lab.lab import Lab
    from bedrot_lab.sample import write_sample

    write_sample(Lab.open(bedrot_lake).settings)

    notebook = bedrot_forked("run", "sandbox/notebooks/streams_by_store.ipynb", "-P", "top_n=5", "--json",
                             cwd=bedrot_lake)
    script = bedrot_forked("run", "sandbox/analysis/revenue_report.py", "--json", "--", "--year", "2025",
                           cwd=bedrot_lake)

    assert notebook.returncode == 0 and script.returncode == 0, (notebook.stderr, script.stderr)
    lab = Lab.open(bedrot_lake)
    by_store = read_run(json.loads(notebook.stdout)["run_id"], lab)  # ctx.aggregate: DuckDB in a Jupyter kernel
    assert by_store.data.metrics["top_store_streams"] > 0 and by_store.data.params == {"top_n": "5"}
    report = read_run(json.loads(script.stdout)["run_id"], lab)
    assert report.data.metrics["revenue_usd"] > 0 and "total" in script.stderr
    assert artifact_names(lab, report.info.run_id, "workdir") == ["revenue_by_month.csv"]
