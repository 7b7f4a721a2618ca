"""Errors that teach: each mistake a plugin author makes gives one message naming the plugin,
the file and line, and the fix, at load or run time and in ``bedrot-lab plugins check``.
Each test is a row of the table "When a plugin is wrong" in docs/plugins.md."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from conftest import REPO
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab import Param, ParamError, experiment
from bedrot_lab.config import load_settings
from bedrot_lab.experiments import ExperimentError
from bedrot_lab.lab import Lab
from bedrot_lab.lake import DatasetError
from bedrot_lab.plugin_check import check_plugins
from bedrot_lab.testing import read_run, run_experiment

GOOD = """
    from bedrot_lab import experiment, hookimpl

    @experiment("hello", datasets=["dk_bank_details"])
    def hello(ctx):
        '''Say hello.'''
        ctx.log_metric("greetings", 1)

    @hookimpl
    def register_experiments(register):
        register(hello)
"""


def problems(lake: Path, plugin: str) -> list[str]:
    """What ``plugins check`` says about ``plugin``, one line per problem."""
    [report] = check_plugins(load_settings(lake), plugin)
    return [str(problem) for problem in report.problems]


def load_warnings(lake: Path, caplog, plugin: str) -> list[str]:
    """What opening the lab (as every command does) warns about ``plugin``."""
    with caplog.at_level(logging.WARNING):
        Lab.open(lake).plugin_infos()
    return [r.getMessage() for r in caplog.records if f"plugin {plugin!r}" in r.getMessage()]


def test_misspelled_hook_suggests_the_closest_hook(bedrot_lake, write_plugin, caplog):
    path = write_plugin("typo", """
        from bedrot_lab import hookimpl

        @hookimpl
        def register_experiment(register):
            pass
    """)
    expected = (f"plugin 'typo' ({path}:4): implements unknown hook 'register_experiment' (did you mean "
                "register_experiments(register)?); rename the function")
    [found] = problems(bedrot_lake, "typo")
    assert found.startswith(expected)
    [warning] = load_warnings(bedrot_lake, caplog, "typo")
    assert f"({path}:4) not loaded: implements unknown hook 'register_experiment' (did you mean" in warning


def test_hook_without_hookimpl_is_named(bedrot_lake, write_plugin):
    path = write_plugin("unmarked", """
        def register_experiments(register):
            pass
    """)
    assert problems(bedrot_lake, "unmarked") == [
        f"plugin 'unmarked' ({path}:2): function register_experiments is named like a hook but not marked "
        "@hookimpl, so it is never called; add `@hookimpl` above it (from bedrot_lab import hookimpl)"]
    assert Lab.open(bedrot_lake).plugins.infos["unmarked"].error == ""  # loading is as lenient as ever


def test_wrong_hook_argument_shows_the_signature(bedrot_lake, write_plugin, caplog):
    path = write_plugin("wrongarg", """
        from bedrot_lab import hookimpl

        @hookimpl
        def run_tags(experiment, parms):
            return {}
    """)
    expected = (f"plugin 'wrongarg' ({path}:4): hook run_tags has no argument 'parms' (did you mean 'params'?); "
                "its signature is run_tags(experiment, params, settings): take any of these, by name")
    assert problems(bedrot_lake, "wrongarg") == [expected]
    [warning] = load_warnings(bedrot_lake, caplog, "wrongarg")
    assert "not loaded: hook run_tags has no argument 'parms'" in warning


POSITIONAL = """
    from bedrot_lab import experiment, hookimpl

    @experiment("caller")
    def caller(ctx):
        pass

    @hookimpl
    def register_experiments(register):
        register(caller)

    @hookimpl
    def before_run(ctx):
        ctx.lab.plugins.hook.on_run_end(ctx, "FINISHED")
"""


def test_hook_called_with_positional_arguments_says_to_call_it_by_name(bedrot_lake, write_plugin):
    path = write_plugin("positional", POSITIONAL)
    assert problems(bedrot_lake, "positional") == [
        f"plugin 'positional' ({path}:14): calls hook on_run_end with positional arguments; hooks take "
        "arguments by name: hook.on_run_end(ctx=..., status=...)"]
    result = run_experiment(Lab.open(bedrot_lake), "caller")
    assert result.status == "FAILED"
    assert result.error == (
        f"HookCallError: hook on_run_end called with positional arguments by plugin 'positional' at {path}:14; "
        "hooks take arguments by name: hook.on_run_end(ctx=..., status=...)")


def test_experiment_name_registered_by_two_plugins(bedrot_lake, write_plugin):
    first = write_plugin("greeter", GOOD)
    second = write_plugin("copycat", GOOD)
    [found] = problems(bedrot_lake, "copycat")
    assert found.startswith(f"plugin 'copycat' ({second}:4): experiment 'hello' is registered by more than one "
                            f"plugin: 'greeter' ({first}) and 'copycat' ({second}); rename one")
    assert len(problems(bedrot_lake, "greeter")) == 1


DATASET = """
    from bedrot_lab import Dataset, hookimpl

    @hookimpl
    def register_datasets(register):
        register(Dataset("playlists", "playlists.csv", columns={"name": "string"}))
"""


def test_dataset_name_registered_by_two_plugins(bedrot_lake, write_plugin, caplog):
    first = write_plugin("lists", DATASET)
    second = write_plugin("more_lists", DATASET)
    message = (f"data set 'playlists' is registered by more than one plugin: 'more_lists' ({second}) and "
               f"'lists' ({first}); 'more_lists''s is used; rename one of them")
    assert problems(bedrot_lake, "lists") == [f"plugin 'lists' ({first}): {message}"]
    with caplog.at_level(logging.WARNING):
        assert Lab.open(bedrot_lake).datasets["playlists"].path == "playlists.csv"
    assert [r.getMessage() for r in caplog.records] == [message]


def test_experiment_function_with_wrong_signature(bedrot_lake, write_plugin, caplog):
    path = write_plugin("twoargs", """
        from bedrot_lab import experiment, hookimpl

        @experiment("two-args")
        def two_args(ctx, top_n):
            pass
    """)
    expected = (f"plugin 'twoargs' ({path}:4): experiment 'two-args': its function takes (ctx, top_n); an "
                "experiment function takes exactly one parameter, the run context: def my_experiment(ctx): ... "
                "and reads its params from ctx.params (declare them with @experiment(params={...}))")
    assert problems(bedrot_lake, "twoargs") == [expected]
    [warning] = load_warnings(bedrot_lake, caplog, "twoargs")
    assert "not loaded: experiment 'two-args': its function takes (ctx, top_n)" in warning
    with pytest.raises(ExperimentError, match=r"its function takes \(\)"):
        experiment("none")(lambda: None)


@pytest.mark.parametrize(("param", "message"), [
    (lambda: Param(int, "six"), "Param(int, 'six'): the default 'six' is not an int; give it as an int, or "
                                "declare the type it is: Param(str, 'six', ...)"),
    (lambda: Param(bool, 1), "Param(bool, 1): the default 1 is not a bool; give it as a bool, or declare the "
                             "type it is: Param(int, 1, ...)"),
    (lambda: Param(str, "medain", choices=("mean", "median")),
     "Param(str, 'medain', choices=('mean', 'median')): the default 'medain' is not one of the choices (did you "
     "mean 'median'?); make the default one of them, or add it to choices"),
    (lambda: Param(int, 0, min=1), "Param(int, 0, min=1): the default 0 is outside [1, None]; make the default "
                                   "a value within min and max"),
], ids=["type", "bool", "choices", "bounds"])
def test_param_default_that_does_not_fit(param, message):
    with pytest.raises(ParamError) as raised:
        param()
    assert str(raised.value) == message


def test_param_default_that_does_not_fit_names_the_plugin_line(bedrot_lake, write_plugin):
    path = write_plugin("badparam", """
        from bedrot_lab import Param, experiment

        @experiment("bad-param", params={
            "top_n": Param(int, "ten", "stores to chart"),
        })
        def bad_param(ctx):
            pass
    """)
    assert problems(bedrot_lake, "badparam") == [
        f"plugin 'badparam' ({path}:5): Param(int, 'ten'): the default 'ten' is not an int; give it as an int, "
        "or declare the type it is: Param(str, 'ten', ...)"]


def test_unknown_dataset_suggests_close_names(bedrot_lake, write_plugin):
    path = write_plugin("typo_data", GOOD.replace('"dk_bank_details"]', '"dk_bank_detail"]'))
    [found] = problems(bedrot_lake, "typo_data")
    assert found.startswith(
        f"plugin 'typo_data' ({path}:4): experiment 'hello' declares data set 'dk_bank_detail', which is not in "
        "the catalog; did you mean 'dk_bank_details' or 'dk_bank_details_staging'? known: ")
    assert found.endswith("; fix the name, or register the data set (hook register_datasets)")
    with pytest.raises(DatasetError, match="no data set named 'dk_bank_detail' in the catalog; did you mean "
                                           "'dk_bank_details' or 'dk_bank_details_staging'"):
        Lab.open(bedrot_lake).dataset("dk_bank_detail")


COLUMNS = """
    from bedrot_lab import experiment, hookimpl

    @experiment("columns")
    def columns(ctx):
        ctx.load("dk_bank_details", columns=["Store", "Quantty"])

    @hookimpl
    def register_experiments(register):
        register(columns)
"""


def test_unknown_column_names_the_close_ones(bedrot_lake, write_plugin):
    from conftest import STATEMENT_HEADER

    path = write_plugin("typo_column", COLUMNS)
    [found] = problems(bedrot_lake, "typo_column")
    assert found.startswith(
        f"plugin 'typo_column' ({path}:6): experiment 'columns' reads column 'Quantty' of data set "
        "'dk_bank_details', which has no such column; did you mean 'Quantity'? its columns: Artist, ")
    statement = bedrot_lake / "4_curated" / "dk_bank_details.csv"
    statement.write_text(STATEMENT_HEADER)
    result = run_experiment(Lab.open(bedrot_lake), "columns")
    assert result.status == "FAILED"
    assert result.error == (
        f"DatasetError: {statement}: data set 'dk_bank_details' is missing column 'Quantty'; did you mean "
        f"'Quantity'? (has: {STATEMENT_HEADER.strip().replace(',', ', ')})")


def test_plugin_raising_at_import(bedrot_lake, write_plugin, caplog):
    path = write_plugin("raiser", """
        import os

        TOKEN = os.environ["NO_SUCH_VARIABLE_FOR_THE_TEST"]
    """)
    expected = (f"plugin 'raiser' ({path}:4): KeyError: 'NO_SUCH_VARIABLE_FOR_THE_TEST' (at import); fix it, or "
                "move the code that can fail into a hook or an experiment, where a failure is reported and the "
                "rest keeps working")
    assert problems(bedrot_lake, "raiser") == [expected]
    [warning] = load_warnings(bedrot_lake, caplog, "raiser")
    assert warning == expected.replace("): KeyError", ") not loaded: KeyError")


def test_plugin_exiting_at_import(bedrot_lake, write_plugin, caplog):
    path = write_plugin("quitter", """
        import sys

        sys.exit("nothing to do")
    """)
    expected = (f"plugin 'quitter' ({path}:4): SystemExit: nothing to do (at import); a plugin must not exit: "
                'raise an exception in the hook or experiment instead, or put script code under '
                '`if __name__ == "__main__":`')
    assert problems(bedrot_lake, "quitter") == [expected]
    write_plugin("greeter", GOOD)
    [warning] = load_warnings(bedrot_lake, caplog, "quitter")
    assert "not loaded: SystemExit: nothing to do (at import)" in warning
    assert "hello" in Lab.open(bedrot_lake).experiments


def test_missing_module_at_import_says_what_to_install(bedrot_lake, write_plugin):
    path = write_plugin("needs", "import no_such_module_xyz\n")
    assert problems(bedrot_lake, "needs") == [
        f"plugin 'needs' ({path}:1): ModuleNotFoundError: No module named 'no_such_module_xyz'; pip install it, "
        "or import it inside the experiment that needs it and declare it: "
        "@experiment(..., requires={'no_such_module_xyz': '<what to pip install>'})"]


METRICS = """
    from bedrot_lab import experiment, hookimpl

    @experiment("two-types")
    def two_types(ctx):
        ctx.log_metric("best_store", 3)
        ctx.log_metric("best_store", "Spotify")

    @experiment("not-a-number")
    def not_a_number(ctx):
        ctx.log_metric("ratio", float("nan"))

    @hookimpl
    def register_experiments(register):
        register(two_types)
        register(not_a_number)
"""


def test_metric_logged_with_two_types(bedrot_lake, write_plugin):
    path = write_plugin("metrics", METRICS)
    result = run_experiment(Lab.open(bedrot_lake), "two-types")
    assert result.status == "FAILED"
    assert result.error == (
        f"MetricError: experiment 'two-types' (plugin 'metrics') logs metric 'best_store' as text ('Spotify') at "
        f"{path}:7, and as a number at {path}:6; a metric keeps one type: log numbers only (a yes/no as 1 or 0), "
        "and text as a tag: ctx.set_tag('best_store', ...)")
    assert read_run(result.run_id, Lab.open(bedrot_lake)).data.metrics["best_store"] == 3


def test_nan_metric_says_how_to_skip_on_purpose(bedrot_lake, write_plugin, caplog):
    path = write_plugin("metrics", METRICS)
    lab = Lab.open(bedrot_lake)
    with caplog.at_level(logging.WARNING):
        result = run_experiment(lab, "not-a-number")
    assert result.status == "FINISHED", result.error
    assert read_run(result.run_id, lab).data.tags["skipped.ratio"] == "value is nan"
    [warning] = [r.getMessage() for r in caplog.records if "metric 'ratio'" in r.getMessage()]
    assert warning == (
        f"experiment 'not-a-number' (plugin 'metrics'): metric 'ratio' is nan at {path}:11, so it is not logged "
        "(the run has tag skipped.ratio); if that can happen, skip it on purpose and say why: "
        "ctx.skip_metric('ratio', '<why there is no value>')")


# -- the command -------------------------------------------------------------------------------


def test_cli_check_passes_a_good_plugin(bedrot_lake, write_plugin, cli_env):
    path = write_plugin("greeter", GOOD)
    result = bedrot("plugins", "check", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ok  greeter ({path})\n"
    assert bedrot("plugins", "check", "greeter", env=cli_env).stdout == result.stdout


def test_cli_check_reports_every_problem_of_a_broken_plugin(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    path = write_plugin("broken", """
        from bedrot_lab import experiment, hookimpl

        @experiment("broken", datasets=["dk_bank_detail"])
        def broken(ctx):
            ctx.load("dk_bank_details", columns=["Quantty"])

        @hookimpl
        def register_experiments(register):
            register(broken)

        @hookimpl
        def register_dataset(register):
            pass

        @hookimpl
        def run_tags(experiment, parms):
            return {}
    """)
    result = bedrot("plugins", "check", env=cli_env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[-1] == f"ok  greeter ({bedrot_lake / 'plugins' / 'greeter.py'})"
    assert [line.split(": ")[0] for line in lines[:-1]] == [
        f"plugin 'broken' ({path}:12)", f"plugin 'broken' ({path}:16)", f"plugin 'broken' ({path}:4)",
        f"plugin 'broken' ({path}:6)"]
    assert result.stderr == "4 problems in 1 plugin\n"
    as_json = bedrot("plugins", "check", "broken", "--json", env=cli_env)
    assert as_json.returncode == 1
    [report] = json.loads(as_json.stdout)
    assert report["status"] == "problems"
    assert [p["kind"] for p in report["problems"]] == [
        "unknown-hook", "hook-argument", "unknown-dataset", "unknown-column"]
    listed = bedrot("experiments", "list", env=cli_env)  # every other command: reported, skipped, the rest work
    assert listed.returncode == 0 and "hello" in listed.stdout and "broken" not in listed.stdout
    assert "(and 1 more: bedrot-lab plugins check broken)" in listed.stderr


def test_cli_check_of_an_unknown_plugin_suggests_names(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    result = bedrot("plugins", "check", "greter", env=cli_env)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no plugin named 'greter'; did you mean 'greeter'? plugins: ")


def test_every_row_of_the_errors_table_has_its_test():
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("## When a plugin is wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| mistake")]
    named = [re.fullmatch(r"`(test_\w+)`", row.strip(" |").rsplit("|", 1)[-1].strip()) for row in rows]
    assert len(named) >= 14 and all(named), rows
    defined = {name for name in globals() if name.startswith("test_")}
    missing = [match.group(1) for match in named if match.group(1) not in defined]
    assert not missing, f"docs/plugins.md names tests that do not exist: {missing}"
