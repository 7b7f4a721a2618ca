"""A broken plugin never takes the lab down: failures at import, in collecting hooks, name
clashes between plugins, and every hook call made through pluggy with failures isolated."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.lab import Lab
from bedrot_lab.plugins import PluginError
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.violations import ViolationStore, check
from bedrot_lab.testing import read_run, run_experiment

GOOD = """
    from bedrot_lab import experiment, hookimpl

    @experiment("hello")
    def hello(ctx):
        '''Say hello.'''

    @hookimpl
    def register_experiments(register):
        register(hello)
"""


def plugin_warnings(caplog, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"plugin {name!r}" in r.getMessage()]


def assert_one_line(stderr: str, *expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], stderr


# -- a plugin that raises a BaseException at import --------------------------------------------

EXITS = {
    "sys-exit-message": ("import sys\nsys.exit('bye from the plugin')\n", "SystemExit: bye from the plugin"),
    "sys-exit-code": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    "bare-sys-exit": ("import sys\nsys.exit()\n", "SystemExit"),
    "base-exception": ("class Stop(BaseException):\n    pass\n\nraise Stop('odd')\n", "Stop: odd"),
}


@pytest.mark.parametrize("source,problem", EXITS.values(), ids=EXITS)
def test_a_plugin_exiting_at_import_is_reported_by_name(bedrot_lake, write_plugin, caplog, source, problem):
    write_plugin("greeter", GOOD)
    write_plugin("quitter", source)
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["quitter"].error.startswith(f"{problem} (at import); ")
    assert lab.plugins.pm.get_plugin("quitter") is None
    assert "hello" in lab.experiments
    [warning] = plugin_warnings(caplog, "quitter")
    assert f"not loaded: {problem} (at import)" in warning and "quitter.py:" in warning


def test_an_installed_plugin_exiting_at_import_is_reported_by_name(bedrot_lake, tmp_path, monkeypatch,
                                                                   installed_plugins):
    site = tmp_path / "site"
    (site / "bedrot_quitter-1.0.dist-info").mkdir(parents=True)
    (site / "bedrot_quitter-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bedrot-quitter\nVersion: 1.0\n")
    (site / "bedrot_quitter-1.0.dist-info" / "entry_points.txt").write_text(
        "[bedrot_lab]\nquitter = bedrot_quitter\n")
    (site / "bedrot_quitter.py").write_text("raise SystemExit('installed, then gone')\n")
    monkeypatch.syspath_prepend(str(site))
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["quitter"].error.startswith("SystemExit: installed, then gone (at import)")
    assert "dk_bank_details" in lab.datasets


def test_ctrl_c_while_a_plugin_imports_still_stops(bedrot_lake, write_plugin):
    write_plugin("interrupted", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        Lab.open(bedrot_lake)


def test_strict_mode_turns_a_plugin_exiting_at_import_into_an_error(bedrot_lake, write_plugin, monkeypatch):
    write_plugin("quitter", EXITS["sys-exit-message"][0])
    monkeypatch.setenv("BEDROT_LAB_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'quitter' .* not loaded: SystemExit: bye from the plugin"):
        Lab.open(bedrot_lake)


def test_cli_names_a_plugin_exiting_at_import_and_goes_on(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    write_plugin("quitter", EXITS["sys-exit-message"][0])
    result = bedrot("experiments", "list", env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    assert_one_line(result.stderr, "plugin 'quitter'", "SystemExit: bye from the plugin")


# -- a collecting hook that raises -------------------------------------------------------------

HALF_EXPERIMENTS = """
    from bedrot_lab import experiment, hookimpl

    @hookimpl
    def register_experiments(register):
        register(experiment("half-1")(lambda ctx: None))
        register(experiment("half-2")(lambda ctx: None))
        raise RuntimeError("broke after two")
"""

HALF_DATASETS = """
    from bedrot_lab import Dataset, hookimpl

    @hookimpl
    def register_datasets(register):
        register(Dataset("half", "half.csv"))
        raise RuntimeError("broke after one")
"""

NOT_AN_EXPERIMENT = """
    from bedrot_lab import hookimpl

    @hookimpl
    def register_experiments(register):
        register("half-1")
"""

EXITS_IN_HOOK = """
    import sys
    from bedrot_lab import experiment, hookimpl

    @hookimpl
    def register_experiments(register):
        register(experiment("half-1")(lambda ctx: None))
        sys.exit("no more")
"""


@pytest.mark.parametrize(
    ("source", "catalog", "problem"),
    [
        (HALF_EXPERIMENTS, "experiments", "register_experiments raised RuntimeError: broke after two"),
        (HALF_DATASETS, "datasets", "register_datasets raised RuntimeError: broke after one"),
        (NOT_AN_EXPERIMENT, "experiments", "register_experiments raised TypeError: registered 'half-1'; register takes what @experiment returns"),
        (EXITS_IN_HOOK, "experiments", "register_experiments raised SystemExit: no more"),
    ],
    ids=["experiments", "datasets", "not-an-experiment", "sys-exit"],
)
def test_a_collecting_hook_that_raises_leaves_out_all_that_plugin_registered(
    bedrot_lake, write_plugin, caplog, source, catalog, problem
):
    write_plugin("greeter", GOOD)
    write_plugin("half", source)
    lab = Lab.open(bedrot_lake)
    found = getattr(lab, catalog)
    assert not {"half", "half-1", "half-2"} & set(found)
    assert "hello" in lab.experiments and "dk_bank_details" in lab.datasets
    assert lab.plugins.infos["half"].error.startswith(problem)
    assert lab.plugins.infos["greeter"].error == ""
    [warning] = plugin_warnings(caplog, "half")
    assert "half.py" in warning and problem in warning and "\n" not in warning


def test_strict_mode_turns_a_failing_collecting_hook_into_an_error(bedrot_lake, write_plugin, monkeypatch):
    write_plugin("half", HALF_EXPERIMENTS)
    monkeypatch.setenv("BEDROT_LAB_STRICT_PLUGINS", "1")
    lab = Lab.open(bedrot_lake)
    with pytest.raises(PluginError, match=r"plugin 'half' .*register_experiments raised RuntimeError: broke after two"):
        _ = lab.experiments


def test_cli_plugins_list_shows_a_failing_collecting_hook(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    write_plugin("half", HALF_EXPERIMENTS)
    listed = bedrot("plugins", "list", "--json", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    plugins = {info["name"]: info for info in json.loads(listed.stdout)}
    assert plugins["half"]["status"] == "failed"
    assert plugins["half"]["error"] == "register_experiments raised RuntimeError: broke after two"
    assert plugins["greeter"]["status"] == "ok"
    table = bedrot("plugins", "list", env=cli_env)
    [row] = [line for line in table.stdout.splitlines() if line.startswith("half ")]
    assert "failed: register_experiments raised RuntimeError: broke after two" in row


def test_cli_commands_work_beside_a_failing_collecting_hook(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    write_plugin("half", HALF_EXPERIMENTS)
    listed = bedrot("experiments", "list", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout and "half-1" not in listed.stdout
    assert_one_line(listed.stderr, "plugin 'half'", "register_experiments raised RuntimeError: broke after two")
    shown = bedrot("experiments", "show", "hello", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    strict = bedrot("experiments", "list", env={**cli_env, "BEDROT_LAB_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1
    assert_one_line(strict.stderr, "Error: plugin 'half'", "broke after two")
    debug = bedrot("--debug", "experiments", "list", env=cli_env)
    assert debug.returncode == 0, debug.stderr
    assert "Traceback" in debug.stderr and 'half.py", line 8, in register_experiments' in debug.stderr


RULES = """
    from bedrot_lab import hookimpl
    from bedrot_lab.sandbox.violation import Violation

    class Always:
        def __init__(self, name):
            self.name = name

        def evaluate(self, index, now):
            yield Violation(self.name, "sandbox", 1, 0, "soft", "always")

    @hookimpl
    def sandbox_rules(settings):
        if (settings.root / "BREAK_{name}").exists():
            raise RuntimeError("rules unavailable")
        return [Always("{name}.always")]
"""


def test_a_failing_sandbox_rules_hook_leaves_out_that_plugin_and_keeps_its_violations_open(
    bedrot_lake, write_plugin, caplog
):
    write_plugin("steady", RULES.replace("{name}", "steady"))
    write_plugin("flaky", RULES.replace("{name}", "flaky"))
    lab = Lab.open(bedrot_lake)
    with UsageIndex.for_settings(lab.settings) as index:
        index.full_scan()
        first = check(lab.settings, index, lab.plugins.hook, now=1000)
        assert {t.violation.rule for t in first.transitions} == {"steady.always", "flaky.always"}
        (bedrot_lake / "BREAK_flaky").touch()
        second = check(lab.settings, index, lab.plugins.hook, now=1060)
    assert second.transitions == []  # flaky's violation is not "resolved" by its failure
    assert [v.rule for v in second.violations] == ["steady.always"]
    with ViolationStore.for_settings(lab.settings) as store:
        assert {s.violation.rule for s in store.open_violations()} == {"steady.always", "flaky.always"}
    [warning] = plugin_warnings(caplog, "flaky")
    assert "sandbox_rules" in warning and "RuntimeError: rules unavailable" in warning


def test_sandbox_rules_that_are_no_rules_or_clash_leave_out_only_that_plugin(bedrot_lake, write_plugin, caplog):
    write_plugin("steady", RULES.replace("{name}", "steady"))
    write_plugin("twin", RULES.replace("{name}", "steady"))  # the same rule name as steady's
    write_plugin("junk", """
        from bedrot_lab import hookimpl

        @hookimpl
        def sandbox_rules(settings):
            return ["not a rule"]
    """)
    lab = Lab.open(bedrot_lake)
    with UsageIndex.for_settings(lab.settings) as index:
        index.full_scan()
        result = check(lab.settings, index, lab.plugins.hook, now=1000)
    assert [v.rule for v in result.violations] == ["steady.always"]
    [junk] = plugin_warnings(caplog, "junk")
    assert "not a Rule" in junk and "left out" in junk
    clash = [r.getMessage() for r in caplog.records if "returns a rule named 'steady.always' too" in r.getMessage()]
    assert len(clash) == 1 and "\n" not in clash[0]


# -- two plugins registering one experiment name -----------------------------------------------


def test_an_experiment_name_from_two_plugins_fails_only_where_it_is_needed(bedrot_lake, write_plugin):
    first = write_plugin("greeter", GOOD)
    second = write_plugin("copycat", GOOD)
    write_plugin("other", GOOD.replace('"hello"', '"other"'))
    lab = Lab.open(bedrot_lake)
    assert set(lab.experiments) == {"other"}
    assert lab.experiment("other").plugin == "other"
    with pytest.raises(PluginError) as raised:
        lab.experiment("hello")
    message = str(raised.value)
    assert "\n" not in message
    for text in ("'hello'", "'greeter'", str(first), "'copycat'", str(second)):
        assert text in message


def test_cli_an_experiment_name_from_two_plugins(bedrot_lake, write_plugin, cli_env):
    first = write_plugin("greeter", GOOD)
    second = write_plugin("copycat", GOOD)
    write_plugin("other", GOOD.replace('"hello"', '"other"'))
    names = ("'greeter'", str(first), "'copycat'", str(second))
    for command in (["experiments", "show", "hello"], ["run", "hello"]):
        result = bedrot(*command, env=cli_env)
        assert result.returncode == 1, result.stderr
        assert_one_line(result.stderr, "Error: experiment 'hello'", *names)
    shown = bedrot("experiments", "show", "other", env=cli_env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip() == ""
    listed = bedrot("experiments", "list", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["other"]
    assert_one_line(listed.stderr, "experiment 'hello'", *names)


# -- every hook call through pluggy, failures isolated -----------------------------------------

RECORDER = """
    from bedrot_lab import experiment, hookimpl

    @experiment("fine")
    def fine(ctx):
        pass

    @experiment("crash")
    def crash(ctx):
        raise ValueError("the experiment broke")

    @hookimpl
    def register_experiments(register):
        register(fine)
        register(crash)

    @hookimpl
    def run_tags(experiment):
        return {"team": "recorders"}

    @hookimpl
    def on_run_failure(ctx, error):
        (ctx.settings.root / "failure-seen.txt").write_text(str(error))
"""

RAISES_EVERYWHERE = """
    from bedrot_lab import hookimpl

    @hookimpl
    def run_tags(experiment, params, settings):
        raise RuntimeError("no tags today")

    @hookimpl
    def on_run_failure(ctx, error):
        raise RuntimeError("cannot even fail")

    @hookimpl
    def handle_violation(transition, settings):
        raise RuntimeError("sink down")
"""


def test_a_failing_run_tags_or_on_run_failure_is_isolated(bedrot_lake, write_plugin, caplog):
    write_plugin("recorder", RECORDER)
    write_plugin("zz_raiser", RAISES_EVERYWHERE)  # registered last: called first
    lab = Lab.open(bedrot_lake)
    caplog.set_level(logging.WARNING)

    fine = run_experiment(lab, "fine")
    assert fine.status == "FINISHED", fine.error
    assert read_run(fine.run_id, lab).data.tags["team"] == "recorders"
    assert any("run_tags of plugin 'zz_raiser' raised RuntimeError: no tags today" in m
               for m in plugin_warnings(caplog, "zz_raiser"))

    crash = run_experiment(lab, "crash")
    assert crash.status == "FAILED" and "the experiment broke" in crash.error
    assert (bedrot_lake / "failure-seen.txt").read_text() == "the experiment broke"
    assert any("on_run_failure of plugin 'zz_raiser' raised RuntimeError: cannot even fail" in m
               for m in plugin_warnings(caplog, "zz_raiser"))
    assert all("\n" not in m for m in plugin_warnings(caplog, "zz_raiser"))


def test_every_hook_call_is_seen_by_pluggy_monitoring(bedrot_lake, write_plugin):
    write_plugin("recorder", RECORDER)
    write_plugin("zz_raiser", RAISES_EVERYWHERE)
    write_plugin("rules", RULES.replace("{name}", "rules"))
    lab = Lab.open(bedrot_lake)
    calls: list[tuple[str, tuple[str, ...]]] = []
    lab.plugins.pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append((name, tuple(sorted(kwargs)))), lambda *args: None)

    assert {"fine", "crash"} <= set(lab.experiments) and "dk_bank_details" in lab.datasets
    run_experiment(lab, "crash")
    with UsageIndex.for_settings(lab.settings) as index:
        index.full_scan()
        result = check(lab.settings, index, lab.plugins.hook, now=1000)
    assert result.sink_failures == 1  # zz_raiser's sink; the built-in sinks still wrote
    assert (lab.settings.state_dir / "violations.jsonl").read_text().count("rules.always") == 1

    seen = dict(calls)
    assert seen["register_experiments"] == seen["register_datasets"] == ("register",)
    assert seen["run_tags"] == ("experiment", "params", "settings")
    assert seen["on_run_failure"] == ("ctx", "error")
    assert seen["sandbox_rules"] == ("settings",)
    assert seen["handle_violation"] == ("settings", "transition")
    assert {"before_run"} <= set(seen)


def test_cli_trace_shows_the_collecting_hooks(bedrot_lake, write_plugin, cli_env):
    write_plugin("greeter", GOOD)
    result = bedrot("experiments", "list", env={**cli_env, "BEDROT_LAB_TRACE_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    traced = [line for line in result.stderr.splitlines() if "hook" in line]
    assert any("register_experiments" in line for line in traced), result.stderr
