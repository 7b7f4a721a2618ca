"""Housekeeping jobs from plugins, and the [daemon] table that schedules them."""

from __future__ import annotations

import pytest

from bedrot_lab import HousekeepingJob, hookimpl
from bedrot_lab.config import ConfigError
from bedrot_lab.daemon.settings import DaemonSettings
from bedrot_lab.jobs import parse_duration
from bedrot_lab.lab import Lab


def noop(ctx):
    return "nothing to do"


class Jobs:
    @hookimpl
    def housekeeping_jobs(self, register):
        register(HousekeepingJob("prune", noop, every="1h", options={"keep": 3, "dry": True}))


@pytest.fixture
def lab(bedrot_lake):
    lab = Lab.open(bedrot_lake)
    lab.plugins.pm.register(Jobs(), name="pruner")
    return lab


def test_jobs_come_from_plugins_with_their_plugin(lab):
    assert {"watch", "reconcile", "check", "clean", "prune"} <= set(lab.jobs)
    assert lab.job_plugins["prune"] == "pruner" and lab.job_plugins["check"] == "sandbox"


def test_a_schedule_and_options_come_from_the_table(lab):
    daemon = DaemonSettings.from_table({"jobs": {"prune": {"every": "30s", "keep": 5}, "check": {"enabled": False}}})
    schedule = daemon.schedule(lab.jobs["prune"])
    assert (schedule.every, schedule.cron, schedule.enabled, dict(schedule.options)) == (30.0, None, True,
                                                                                        {"keep": 5, "dry": True})
    assert daemon.schedule(lab.jobs["check"]).enabled is False
    assert daemon.schedule(lab.jobs["clean"]).cron == "0 3 * * *"


@pytest.mark.parametrize(("table", "key"), [
    ({"jobs": {"prune": {"every": "soon"}}}, "daemon.jobs.prune.every"),
    ({"jobs": {"prune": {"cron": "0 25 * * *"}}}, "daemon.jobs.prune.cron"),
    ({"jobs": {"prune": {"cron": "daily"}}}, "daemon.jobs.prune.cron"),
    ({"jobs": {"prune": {"every": "1h", "cron": "0 3 * * *"}}}, "daemon.jobs.prune"),
    ({"jobs": {"prune": {"enabled": "yes"}}}, "daemon.jobs.prune.enabled"),
    ({"alerts": {"webhook": "ftp://x"}}, "daemon.alerts.webhook"),
    ({"stop_timout": 3}, "daemon.stop_timout"),
])
def test_a_mistake_names_the_key(table, key, tmp_path):
    with pytest.raises(ConfigError) as caught:
        DaemonSettings.from_table(table, tmp_path / "bedrot-lab.toml")
    assert caught.value.key == key


@pytest.mark.parametrize(("table", "key"), [
    ({"jobs": {"prune": {"kep": 5}}}, "daemon.jobs.prune.kep"),
    ({"jobs": {"prune": {"keep": "five"}}}, "daemon.jobs.prune.keep"),
    ({"jobs": {"watch": {"every": "1m"}}}, "daemon.jobs.watch"),
])
def test_a_jobs_options_are_checked_against_the_job(lab, table, key):
    daemon = DaemonSettings.from_table(table)
    with pytest.raises(ConfigError) as caught:
        for job in lab.jobs.values():
            daemon.schedule(job)
    assert caught.value.key == key


def test_a_table_for_a_job_nobody_registers_is_named(lab):
    with pytest.raises(ConfigError, match=r"no housekeeping job is called 'prun'"):
        DaemonSettings.from_table({"jobs": {"prun": {}}}).unknown_jobs(lab.jobs)


def test_a_bad_daemon_table_fails_every_command(bedrot_lake):
    config = bedrot_lake / "bedrot-lab.toml"
    config.write_text(config.read_text() + '\n[daemon.jobs.check]\nevery = "often"\n')
    with pytest.raises(ConfigError, match=r"daemon\.jobs\.check\.every: not a duration"):
        Lab.open(bedrot_lake)


def test_durations():
    assert [parse_duration(t) for t in ("30s", "15m", "1h", "1d", "1.5h")] == [30, 900, 3600, 86400, 5400]
    for bad in ("", "5", "m", "-1m", "0s", "5 minutes"):
        with pytest.raises(ValueError):
            parse_duration(bad)
