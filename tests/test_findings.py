"""Findings written back: `runs annotate` appends a finding to a run's description and sets its
outcome, `runs list --outcome` finds runs by it. A real lake, a real MLflow store, real processes
for the concurrent annotations; the CLI driven in-process by click's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from bedrot_lab.cli import cli
from bedrot_lab.lab import Lab
from bedrot_lab.runner import prepare, run
from bedrot_lab.secrets import MASK
from bedrot_lab.testing import read_run

pytestmark = pytest.mark.usefixtures("quiet_mlflow")  # the CLI runs in this process

LESSONS = """
    from bedrot_lab import Param, experiment, hookimpl

    @experiment("lesson", params={"n": Param(int, 1), "api_key": ""})
    def lesson(ctx):
        '''Counts to n.'''
        ctx.log_metric("counted", ctx.params["n"])

    @experiment("explode")
    def explode(ctx):
        '''Fails on purpose.'''
        raise ValueError("boom at row 7")

    @hookimpl
    def register_experiments(register):
        register(lesson)
        register(explode)
"""

SWEEP = """
experiment = "lesson"
name = "counting sweep"
[sweep]
n = [1, 2]
"""

#: appends ``count`` findings to one run through the real CLI, once the start file exists
ANNOTATOR = """
import os, sys, time
from click.testing import CliRunner
from bedrot_lab.cli import cli
lake, run_id, who, count, start = sys.argv[1:]
while not os.path.exists(start):
    time.sleep(0.01)
for i in range(int(count)):
    done = CliRunner().invoke(cli, ["--lake", lake, "runs", "annotate", run_id, "--finding", f"{who} lesson {i}"])
    assert done.exit_code == 0, done.output
"""


@pytest.fixture
def lab(bedrot_lake: Path, write_plugin) -> Lab:
    write_plugin("lessons", LESSONS)
    return Lab.open(bedrot_lake)


def ran(lab: Lab, name: str, **params) -> str:
    """The id of a new run of ``name``, with a note (which the runner puts in its description)."""
    return run(lab, prepare(lab, name, params, note="weekly check")).run_id


def invoke(lake: Path, *args: str, stdin: str | None = None) -> click.testing.Result:
    """``bedrot-lab --lake LAKE ARGS`` in this process."""
    return CliRunner().invoke(cli, ["--lake", str(lake), *args], input=stdin, env={"COLUMNS": "120"})


def annotated(lake: Path, *args: str) -> dict:
    done = invoke(lake, "runs", "annotate", *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def one_line_error(done: click.testing.Result, *expected: str) -> None:
    """``done`` exited 2 with one error line holding each of ``expected``, and no traceback."""
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def listed(lake: Path, *args: str) -> list[str]:
    done = invoke(lake, "runs", "list", *args, "--json")
    assert done.exit_code == 0, done.output
    return [row["run_id"] for row in json.loads(done.stdout)]


def test_a_finished_and_a_failed_run_keep_their_description_and_gain_the_finding(lab, bedrot_lake):
    finished, failed = ran(lab, "lesson"), ran(lab, "explode")
    before = {run_id: read_run(run_id, lab).data.tags["mlflow.note.content"] for run_id in (finished, failed)}
    assert "**Note.** weekly check" in before[finished]

    done = annotated(bedrot_lake, finished[:8], "--finding", "n=1 is **enough**", "--outcome", "success")
    shown = annotated(bedrot_lake, failed, "--finding", "row 7 has a bad date", "--outcome", "FAILURE")

    section = f"**Finding ({date.today():%Y-%m-%d}, tester).**"
    assert done["run_id"] == finished and done["outcome"] == "success"
    assert done["finding"] == f"{section} n=1 is **enough**" and done["annotated_by"] == "tester"
    for run_id, text, outcome in ((finished, "n=1 is **enough**", "success"), (failed, "row 7 has a bad date",
                                                                                 "failure")):
        stored = read_run(run_id, lab)
        tags = stored.data.tags
        assert tags["mlflow.note.content"] == f"{before[run_id]}\n\n{section} {text}"
        assert tags["bedrot.outcome"] == outcome and tags["bedrot.annotated_by"] == "tester"
        assert tags["bedrot.annotated_at"].startswith(f"{date.today():%Y-%m-%d}T")
    assert shown["outcome"] == "failure"
    stored = read_run(failed, lab)
    assert stored.info.status == "FAILED" and stored.data.tags["error"] == "ValueError: boom at row 7"


def test_annotations_append_in_order_and_show_lists_them(lab, bedrot_lake):
    run_id = ran(lab, "lesson")
    description = read_run(run_id, lab).data.tags["mlflow.note.content"]
    annotated(bedrot_lake, run_id, "--finding", "first lesson", "--outcome", "inconclusive")
    annotated(bedrot_lake, run_id, "--outcome", "success")  # an outcome alone leaves the description
    markdown = "- second lesson\n- the **second** point\n"
    piped = invoke(bedrot_lake, "runs", "annotate", run_id[:6], "--finding", "-", stdin=markdown)
    assert piped.exit_code == 0, piped.output
    assert piped.stdout.strip() == (f"annotated run {run_id} (FINISHED): finding appended to its description")

    stamp = f"**Finding ({date.today():%Y-%m-%d}, tester).**"
    findings = [f"{stamp} first lesson", f"{stamp}\n\n{markdown.strip()}"]  # a list starts on a line of its own
    tags = read_run(run_id, lab).data.tags
    assert tags["mlflow.note.content"] == "\n\n".join([description, *findings])
    assert tags["bedrot.outcome"] == "success"

    shown = json.loads(invoke(bedrot_lake, "runs", "show", run_id, "--json").stdout)
    assert shown["findings"] == findings and shown["outcome"] == "success"
    text = invoke(bedrot_lake, "runs", "show", run_id).stdout
    assert "outcome     success" in text
    head, _, below = text.partition("Findings:")
    assert "weekly check" in head and "first lesson" not in head and "Finding" not in head
    assert below.index("first lesson") < below.index("second lesson") < below.index("the second point")


def test_runs_list_filters_by_outcome_and_shows_it(lab, bedrot_lake):
    (bedrot_lake / "experiments" / "sweep.toml").write_text(SWEEP)
    swept = invoke(bedrot_lake, "run", "experiments/sweep.toml")
    assert swept.exit_code == 0, swept.output
    client = MlflowClient(lab.settings.tracking_uri)
    (parent,) = [r.info.run_id for r in client.search_runs([lab.store.experiment_id("lesson")],
                                                           "tags.`bedrot.sweep` IS NOT NULL")]
    succeeded, failed, plain = ran(lab, "lesson"), ran(lab, "explode"), ran(lab, "lesson")
    plain_table = invoke(bedrot_lake, "runs", "list").stdout
    assert "OUTCOME" not in plain_table and "explode" in plain_table

    annotated(bedrot_lake, succeeded, "--outcome", "success")
    annotated(bedrot_lake, failed, "--outcome", "failure", "--finding", "the dates")
    annotated(bedrot_lake, parent, "--outcome", "success", "--finding", "n does not matter")

    assert listed(bedrot_lake, "--outcome", "failure") == [failed]
    assert set(listed(bedrot_lake, "--outcome", "success")) == {succeeded, parent}
    assert listed(bedrot_lake, "--outcome", "success", "--experiment", "explode") == []
    assert listed(bedrot_lake, "--outcome", "failure", "--status", "FAILED") == [failed]
    assert listed(bedrot_lake, "--outcome", "inconclusive") == []
    unjudged = listed(bedrot_lake, "--outcome", "none")
    assert plain in unjudged and len(unjudged) == 3  # and the sweep's two children
    assert not {succeeded, failed, parent} & set(unjudged)

    table = invoke(bedrot_lake, "runs", "list").stdout.splitlines()
    assert table[0].split()[:4] == ["RUN", "EXPERIMENT", "STATUS", "OUTCOME"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows[failed[:8]][3] == "failure" and rows[parent[:8]][3] == "success"
    assert not {"success", "failure"} & set(rows[plain[:8]])


def test_a_credential_in_a_finding_is_masked_and_earlier_masking_kept(lab, bedrot_lake):
    key = "k" + "9" * 11
    run_id = ran(lab, "lesson", api_key=key)
    assert read_run(run_id, lab).data.tags["bedrot.internal.masked"] == "param api_key (name)"
    token = "ghp_" + "fake" * 9

    done = annotated(bedrot_lake, run_id, "--finding", f"it failed with {token}; the key {key} was old")

    tags = read_run(run_id, lab).data.tags
    assert token not in json.dumps(done) and token not in tags["mlflow.note.content"]
    assert tags["mlflow.note.content"].endswith(f"it failed with {MASK}; the key {key} was old")
    assert tags["bedrot.internal.masked"] == "param api_key (name); finding (GitHub token)"


def test_concurrent_annotations_from_two_processes_keep_every_finding(lab, bedrot_lake, tmp_path):
    run_id = ran(lab, "lesson")
    description = read_run(run_id, lab).data.tags["mlflow.note.content"]
    start, count = tmp_path / "start", 8
    annotators = [subprocess.Popen([sys.executable, "-c", ANNOTATOR, str(bedrot_lake), run_id, who, str(count),
                                    str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**os.environ, "BEDROT_USER": who}) for who in ("ana", "ben")]
    start.touch()
    for annotator in annotators:
        _, stderr = annotator.communicate(timeout=300)
        assert annotator.returncode == 0, stderr

    stored = read_run(run_id, lab).data.tags["mlflow.note.content"]
    assert stored.startswith(description + "\n\n")
    sections = stored.removeprefix(description + "\n\n").split("\n\n")
    stamp = f"{date.today():%Y-%m-%d}"
    for who in ("ana", "ben"):
        own = [section for section in sections if f", {who}).**" in section]
        assert own == [f"**Finding ({stamp}, {who}).** {who} lesson {i}" for i in range(count)], sections
    assert len(sections) == 2 * count


@pytest.mark.parametrize("args, expected", [
    (["runs", "annotate", "abcdef0123", "--outcome", "success"], ["no run 'abcdef0123'", "runs list"]),
    (["runs", "annotate", "RUN", "--finding", "  \n"], ["the finding is empty", "--finding -"]),
    (["runs", "annotate", "RUN"], ["nothing to write", "--finding TEXT", "--outcome"]),
    (["runs", "annotate", "RUN", "--outcome", "great"], ["'great' is not an outcome", "success, failure"]),
    (["runs", "list", "--outcome", "maybe"], ["'maybe' is not an outcome", "inconclusive, none"]),
], ids=["unknown-run", "empty-finding", "nothing-given", "bad-outcome", "bad-list-outcome"])
def test_bad_input_is_one_line(lab, bedrot_lake, args, expected):
    run_id = ran(lab, "lesson")
    before = read_run(run_id, lab).data.tags
    done = invoke(bedrot_lake, *[run_id if arg == "RUN" else arg for arg in args])
    one_line_error(done, *expected)
    assert read_run(run_id, lab).data.tags == before


def test_a_finding_that_would_overflow_the_description_is_refused(lab, bedrot_lake):
    run_id = ran(lab, "lesson")
    before = read_run(run_id, lab).data.tags
    done = invoke(bedrot_lake, "runs", "annotate", run_id, "--finding", "-", stdin="x" * 8000)
    one_line_error(done, "does not fit", "8000", "shorten the finding")
    assert read_run(run_id, lab).data.tags == before


def test_help_names_the_outcomes():
    text = " ".join(CliRunner().invoke(cli, ["runs", "annotate", "--help"]).output.split())
    assert "[success|failure|inconclusive]" in text and "bedrot.outcome" in text
    assert "- reads it from stdin" in text
