"""The hooks through which a feature reaches the core: its config table, a veto before a run
exists, and the end of every run."""

from __future__ import annotations

import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start
from mlflow import MlflowClient

from bedrot_lab.config import ConfigError
from bedrot_lab.lab import Lab
from bedrot_lab.runner import RunRefused
from bedrot_lab.testing import read_run, run_experiment

FEATURE = """
    from bedrot_lab import ConfigError, experiment, hookimpl

    def check_slack(values, path):
        unknown = sorted(set(values) - {"channel"})
        if unknown:
            raise ConfigError("unknown key; [slack] takes channel", path, f"slack.{unknown[0]}")
        if not str(values.get("channel", "")).startswith("#"):
            raise ConfigError("a channel starts with #", path, "slack.channel")

    @hookimpl
    def register_settings(register):
        register("slack", check_slack)

    @experiment("hello")
    def hello(ctx):
        '''Says hello.'''
        ctx.log_metric("greetings", 1)

    @experiment("forbidden")
    def forbidden(ctx):
        '''Never runs.'''

    @hookimpl
    def register_experiments(register):
        register(hello)
        register(forbidden)

    @hookimpl
    def validate_run(experiment, settings):
        if experiment.name == "forbidden":
            return [f"{experiment.name} may not run in lake {settings.name}"]

    @hookimpl
    def on_run_end(ctx, status):
        ctx.log_metric("ended." + status.lower(), 1)
"""


def with_config(lake, text: str) -> None:
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + "\n" + text)


def test_a_feature_claims_and_checks_its_table(bedrot_lake, write_plugin):
    write_plugin("feature", FEATURE)
    with_config(bedrot_lake, '[slack]\nchannel = "#lab"\n')
    assert Lab.open(bedrot_lake).settings.tables["slack"] == {"channel": "#lab"}
    with_config(bedrot_lake, "[slack.extra]\nx = 1\n")
    with pytest.raises(ConfigError, match=r"bedrot-lab.toml: slack.extra: unknown key"):
        Lab.open(bedrot_lake)


def test_a_table_nobody_claims_is_named(bedrot_lake, write_plugin, cli_env):
    write_plugin("feature", FEATURE)
    with_config(bedrot_lake, "[slak]\nchannel = 1\n")
    with pytest.raises(ConfigError, match=r"\[slak\]: unknown table; expected one of lake, .*sandbox.*slack"):
        Lab.open(bedrot_lake)
    result = bedrot("experiments", "list", env=cli_env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "[slak]" in result.stderr


def test_a_veto_refuses_the_run_before_it_exists(bedrot_lake, write_plugin, cli_env):
    write_plugin("feature", FEATURE)
    lab = Lab.open(bedrot_lake)
    with pytest.raises(RunRefused, match="not starting the run: forbidden may not run in lake"):
        run_experiment(lab, "forbidden")
    client = MlflowClient(lab.settings.tracking_uri)
    assert client.get_experiment_by_name("forbidden") is None
    result = bedrot("run", "forbidden", env=cli_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: not starting the run: forbidden may not run")


def test_every_run_end_reaches_the_plugins(bedrot_lake, write_plugin):
    write_plugin("feature", FEATURE)
    lab = Lab.open(bedrot_lake)
    result = run_experiment(lab, "hello")
    metrics = read_run(result.run_id, lab).data.metrics
    assert metrics["ended.finished"] == 1 and metrics["greetings"] == 1
