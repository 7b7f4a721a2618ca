"""Sandbox rules (quotas, stale files, secrets), the violation store and its sinks, on real files
indexed by a real UsageIndex.

Ages: a file's age is counted from the newest of its atime, mtime and ctime, and
ctime cannot be set: it is always the moment the test wrote the file. The stale
tests therefore evaluate at ``LATER``, a time 100 days after the real now, so
that every ctime is 100 days old then, and set atime and mtime relative to
``LATER`` with os.utime (into the future where a file must look fresh).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import pluggy
import pytest

from bedrot_lab import hookimpl, hookspecs
from bedrot_lab.config import ConfigError, load_settings, settings_from
from bedrot_lab.lab import Lab
from bedrot_lab.sandbox import credentials as credentials_module
from bedrot_lab.sandbox import violation_sinks
from bedrot_lab.sandbox.credentials import SecretsRule, find_secrets
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.rules import Pins, QuotaRule, StaleRule, all_rules, builtin_rules, evaluate, stale_rule
from bedrot_lab.sandbox.settings import DAY, GlobSet, Limits, SandboxRules, parse_size
from bedrot_lab.sandbox.violation import Violation
from bedrot_lab.sandbox.violations import ViolationStore, check, notify

NOW = time.time()
LATER = NOW + 100 * DAY  # when the stale rules are evaluated: every ctime is then 100 days old


# -- helpers ----------------------------------------------------------------------------------


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def used(path: Path, *, atime_days: float, mtime_days: float) -> None:
    """Set atime and mtime to so many days before LATER."""
    os.utime(path, (LATER - atime_days * DAY, LATER - mtime_days * DAY))


def settings_for(root: Path, sandbox: dict | None = None):
    return settings_from(root, {"sandbox": sandbox or {}}, None, env={})


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    (root / "sandbox").mkdir(parents=True)
    return root


@pytest.fixture
def indexed(lake: Path):
    """index(settings): a fresh full scan of the lake's sandbox (closed after the test)."""
    opened: list[UsageIndex] = []

    def index(settings) -> UsageIndex:
        idx = UsageIndex.for_settings(settings)
        idx.full_scan()
        opened.append(idx)
        return idx

    yield index
    for idx in opened:
        idx.close()


class ProposedSpecs:
    """The two hookspecs this feature adds (see the module docstrings); used only while
    bedrot_lab.hookspecs does not have them yet."""

    @hookspecs.hookspec
    def sandbox_rules(self, settings):
        """Return sandbox Rule objects."""

    @hookspecs.hookspec
    def handle_violation(self, transition, settings):
        """Called for each new, escalated or resolved violation."""


def plugin_manager(*plugins: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if not hasattr(hookspecs, "handle_violation"):
        pm.add_hookspecs(ProposedSpecs)
    pm.register(violation_sinks, name="violation_sinks")
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


def found(violations) -> set[tuple]:
    return {(v.rule, v.subject, v.severity, v.measured, v.limit) for v in violations}


# -- sizes and the [sandbox] table ------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("5GiB", 5 * 2**30), ("500MB", 500 * 10**6), ("10KiB", 10 * 1024), ("1.5 GiB", 3 * 2**29),
    ("2g", 2 * 2**30), ("3kb", 3000), ("7", 7), ("12B", 12), (42, 42), ("0", 0), ("1TB", 10**12),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["5 gigs", "", "-1GiB", "GiB", "5iB", "5 G B", True, -3, 1.5, None])
def test_parse_size_rejects_nonsense(bad):
    with pytest.raises(ConfigError, match=r"sandbox\.quotas\.user\.soft"):
        parse_size(bad, "sandbox.quotas.user.soft")


def test_a_bad_size_names_the_file_and_the_key(lake: Path):
    config = lake / "bedrot-lab.toml"
    config.write_text('[sandbox.quotas]\nuser = { soft = "5 gigs", hard = "10GiB" }\n')
    with pytest.raises(ConfigError) as caught:  # when the lake is opened, for every command
        Lab(load_settings(lake, env={}))
    assert caught.value.path == config and caught.value.key == "sandbox.quotas.user.soft"
    assert str(caught.value).startswith(f"{config}: sandbox.quotas.user.soft: not a size: '5 gigs'")


@pytest.mark.parametrize(("table", "key"), [
    ({"quotas": {"user": {"soft": "2GiB", "hard": "1GiB"}}}, "sandbox.quotas.user"),
    ({"quotas": {"users": {"ana": {"hard": "lots"}}}}, "sandbox.quotas.users.ana.hard"),
    ({"quotas": {"user": {"soft": "1GiB", "hard": "10GiB"}, "users": {"ana": {"soft": "20GiB"}}}},
     "sandbox.quotas.users.ana"),  # above the hard limit it inherits
    ({"quotas": {"user": {"sfot": "1GiB"}}}, "sandbox.quotas.user.sfot"),
    ({"quotas": {"usr": {}}}, "sandbox.quotas.usr"),
    ({"quotas": {"user": "5GiB"}}, "sandbox.quotas.user"),
    ({"quota": {}}, "sandbox.quota"),
    ({"stale": [{"glob": "*.tmp", "days": 0}]}, "sandbox.stale[0].days"),
    ({"stale": [{"glob": "*.tmp", "days": "3"}]}, "sandbox.stale[0].days"),
    ({"stale": [{"glob": "*.tmp", "days": 3, "action": "shred"}]}, "sandbox.stale[0].action"),
    ({"stale": [{"days": 3}]}, "sandbox.stale[0]"),
    ({"stale": [{"glob": "*.tmp", "days": 3, "name": "a"}, {"glob": "*.x", "days": 3, "name": "a"}]},
     "sandbox.stale"),
    ({"stale": {"glob": "*.tmp", "days": 3}}, "sandbox.stale"),
    ({"keep": [3]}, "sandbox.keep"),
    ({"secrets": "yes"}, "sandbox.secrets"),
    ({"secret_max_bytes": "1 MB."}, "sandbox.secret_max_bytes"),
])
def test_config_errors_name_the_key(lake: Path, table, key):
    with pytest.raises(ConfigError) as caught:
        SandboxRules.from_settings(settings_for(lake, table))
    assert caught.value.key == key


EXAMPLE_TOML = """
[sandbox]
keep = ["final", "*.keep.*"]
secrets = true
secret_max_bytes = "1MiB"
secret_ignore = ["users/*/*/fixtures"]

[sandbox.quotas]
user = { soft = "50GiB", hard = "100GiB" }
project = { soft = "20GiB", hard = "40GiB" }
area = { soft = "100GiB", hard = "200GiB" }
total = { soft = "1TiB", hard = "2TiB" }

[sandbox.quotas.users.ana]
soft = "200GiB"
hard = "400GiB"

[sandbox.quotas.users.svc-etl]
soft = "unlimited"
hard = "unlimited"

[sandbox.quotas.projects."bob/churn"]
hard = "60GiB"

[sandbox.quotas.areas.users]
hard = "3TiB"

[[sandbox.stale]]
name = "logs"
glob = ["*.log", "logs"]
days = 3
action = "delete"

[[sandbox.stale]]
glob = "/users/*/*/runs"
days = 60
"""


def test_the_documented_example_parses(lake: Path):
    (lake / "bedrot-lab.toml").write_text(EXAMPLE_TOML)
    rules = SandboxRules.from_settings(load_settings(lake, env={}))
    q, gib = rules.quotas, 2**30
    assert q.limits("user", "bob") == Limits(50 * gib, 100 * gib)
    assert q.limits("user", "ana") == Limits(200 * gib, 400 * gib)
    assert q.limits("user", "svc-etl") == Limits(None, None)
    assert q.limits("project", "bob/churn") == Limits(20 * gib, 60 * gib)  # soft inherited
    assert q.limits("area", "analysis") == Limits(100 * gib, 200 * gib)
    assert q.limits("area", "users") == Limits(100 * gib, 3 * 1024 * gib)  # only by name
    assert q.limits("total") == Limits(1024 * gib, 2048 * gib)
    assert [(s.name, s.days, s.action) for s in rules.stale] == [
        ("logs", 3, "delete"), ("/users/*/*/runs", 60, "archive"),
        ("tmp", 7, "archive"), ("cache", 14, "archive"), ("checkpoint", 30, "archive"), ("workdir", 30, "archive"),
        ("default", 90, "archive")]
    assert rules.keep.patterns == ("final", "*.keep.*") and rules.secret_max_bytes == 2**20
    assert [r.name for r in builtin_rules(rules)] == ["quota", "stale", "secrets"]


def test_a_configured_rule_named_like_a_built_in_one_takes_its_place(lake: Path):
    settings = settings_for(lake, {"stale": [{"name": "default", "glob": "**", "days": 180},
                                             {"name": "scratch", "glob": "scratch", "days": 2}]})
    rules = SandboxRules.from_settings(settings)
    assert [(s.name, s.days) for s in rules.stale] == [
        ("scratch", 2), ("tmp", 7), ("cache", 14), ("checkpoint", 30), ("workdir", 30), ("default", 180)]
    stale = stale_rule(rules)
    assert stale.spec_for("users/ana/p/x.tmp").name == "tmp"  # not shadowed by the new catch-all
    assert stale.spec_for("users/ana/p/model.bin").days == 180


def test_globs_match_anywhere_unless_anchored_and_cover_folders():
    globs = GlobSet(["*.tmp", "tmp/**", "/users/ana/final", "ckpt", "part-[0-9].csv"])
    assert globs.first("a.tmp") == globs.first("users/ana/x/a.tmp") == "*.tmp"
    assert globs.first("users/ana/x/tmp/deep/file") == "tmp/**"
    assert globs.first("users/ana/final/model.pt") == "/users/ana/final"
    assert globs.first("users/bob/runs/ckpt/e1.pt") == "ckpt"
    assert globs.first("data/part-3.csv") == "part-[0-9].csv"
    for path in ("a.tmp.bak", "tmpx/file", "x/users/ana/final/m.pt", "data/part-x.csv", "ckpt.txt"):
        assert not globs.match(path), path


# -- quotas ------------------------------------------------------------------------------------


def test_quotas_per_user_project_area_and_total(lake: Path, indexed):
    box = lake / "sandbox"
    write(box / "users/ana/churn/data.bin", b"x" * 3000)
    write(box / "users/ana/churn/more.bin", b"x" * 1000)
    write(box / "users/ana/misc/a.bin", b"x" * 500)
    write(box / "users/bob/royalties/x.bin", b"x" * 1500)
    write(box / "users/cara/p/x.bin", b"x" * 100)
    write(box / "users/dan/p/x.bin", b"x" * 3500)
    write(box / "analysis/q3/report.bin", b"x" * 6000)
    write(box / "scratch/a.bin", b"x" * 100)
    settings = settings_for(lake, {"quotas": {
        "user": {"soft": 2000, "hard": "4000B"},
        "project": {"soft": 3500, "hard": 10_000},
        "area": {"soft": 5000, "hard": 8000},
        "total": {"soft": 15_000, "hard": 20_000},
        "users": {"bob": {"soft": 1000}, "cara": {"soft": 50, "hard": 80}, "dan": {"soft": "unlimited"}},
        "areas": {"users": {"soft": 9000, "hard": 20_000}},
    }})
    violations = list(QuotaRule(SandboxRules.from_settings(settings).quotas).evaluate(indexed(settings), NOW))
    assert found(violations) == {
        ("quota.user", "user:ana", "hard", 4500, 4000),
        ("quota.user", "user:bob", "soft", 1500, 1000),  # his own soft limit, the default hard one
        ("quota.user", "user:cara", "hard", 100, 80),
        ("quota.project", "project:ana/churn", "soft", 4000, 3500),  # dan/p is at 3500, not over
        ("quota.area", "area:analysis", "soft", 6000, 5000),
        ("quota.area", "area:users", "soft", 9600, 9000),  # only because [areas.users] names it
        ("quota.total", "sandbox", "soft", 15_700, 15_000),
    }
    by_subject = {v.subject: v for v in violations}
    assert by_subject["user:ana"].path == "users/ana" and by_subject["project:ana/churn"].path == "users/ana/churn"
    assert "over its hard limit of 3.9 KiB" in by_subject["user:ana"].detail
    assert by_subject["sandbox"].path == ""


def test_no_quota_configured_means_no_quota_violations(lake: Path, indexed):
    write(lake / "sandbox/users/ana/p/big.bin", b"x" * 100_000)
    settings = settings_for(lake)
    assert list(QuotaRule(SandboxRules.from_settings(settings).quotas).evaluate(indexed(settings), NOW)) == []


# -- stale files ---------------------------------------------------------------------------------


def test_stale_files_by_glob_with_shorter_limits_for_temporary_patterns(lake: Path, indexed):
    box = lake / "sandbox"
    ages = {  # path -> (atime, mtime) in days before LATER; ctime is 100 days old then
        "users/ana/churn/run.tmp": (150, 150),          # 100 days (ctime) > tmp's 7
        "users/ana/churn/tmp/part/a.csv": (3, 3),       # 3 days < tmp's 7
        "users/ana/churn/tmp/part/b.csv": (10, 10),     # 10 > 7
        "users/ana/churn/model.ckpt": (50, 50),         # 50 > checkpoint's 30
        "users/ana/churn/runs/e1/ckpt/w.pt": (20, 20),  # 20 < 30
        "users/ana/churn/runs/e1/out.csv": (40, 40),    # 40 > workdir's 30 (a run's workdir)
        "users/ana/churn/runs/e2/log.txt": (25, 25),    # 25 < 30
        "users/ana/churn/runs/index.md": (40, 40),      # not in a workdir: 40 < default 90
        "users/ana/churn/report.csv": (150, 150),       # 100 > default 90
        "users/ana/churn/notes.md": (2, 150),           # read 2 days ago: fresh
        "users/ana/churn/data.parquet": (150, 5),       # written 5 days ago: fresh
        "analysis/cache/x.bin": (20, 20),               # 20 > cache's 14
        "analysis/q3/fresh.html": (30, 30),             # 30 < 90
        "users/bob/p/__pycache__/m.pyc": (15, 15),      # 15 > 14
    }
    for rel, (atime, mtime) in ages.items():
        used(write(box / rel, b"x" * 10), atime_days=atime, mtime_days=mtime)
    settings = settings_for(lake)
    index = indexed(settings)
    rule = stale_rule(SandboxRules.from_settings(settings))
    stale = {s.record.path: (s.spec.name, round(s.age_days)) for s in rule.stale_files(index, LATER)}
    assert stale == {
        "users/ana/churn/run.tmp": ("tmp", 100),
        "users/ana/churn/tmp/part/b.csv": ("tmp", 10),
        "users/ana/churn/model.ckpt": ("checkpoint", 50),
        "users/ana/churn/runs/e1/out.csv": ("workdir", 40),
        "users/ana/churn/report.csv": ("default", 100),
        "analysis/cache/x.bin": ("cache", 20),
        "users/bob/p/__pycache__/m.pyc": ("cache", 15),
    }
    violations = {v.key: v for v in rule.evaluate(index, LATER)}  # one per rule and owner, not per file
    assert set(violations) == {
        ("stale.tmp", "project:ana/churn"), ("stale.checkpoint", "project:ana/churn"),
        ("stale.workdir", "project:ana/churn"), ("stale.default", "project:ana/churn"), ("stale.cache", "area:analysis"),
        ("stale.cache", "project:bob/p")}
    tmp = violations["stale.tmp", "project:ana/churn"]
    assert (tmp.severity, tmp.limit, round(tmp.measured), tmp.path) == ("soft", 7, 100, "users/ana/churn")
    assert tmp.detail.startswith("2 files (20 B) unused for more than 7 days, the oldest for 100 days")
    older = {s.record.path: s.spec.name for s in rule.stale_files(index, LATER, older_than=12)}
    assert older == {**{path: name for path, (name, _) in stale.items() if path != "users/ana/churn/tmp/part/b.csv"},
                     "users/ana/churn/runs/e1/ckpt/w.pt": "checkpoint", "analysis/q3/fresh.html": "default",
                     "users/ana/churn/runs/e2/log.txt": "workdir", "users/ana/churn/runs/index.md": "default"}


def test_age_is_the_newest_of_atime_mtime_and_ctime(lake: Path, indexed):
    old = write(lake / "sandbox/users/ana/p/old.txt")
    os.utime(old, (NOW - 1000 * DAY, NOW - 1000 * DAY))  # atime and mtime say 1000 days ...
    settings = settings_for(lake, {"stale": [{"glob": "**", "days": 120}], "stale_defaults": False})
    index = indexed(settings)
    rules = SandboxRules.from_settings(settings)
    rule = stale_rule(rules)
    assert list(rule.stale_files(index, NOW + 0.5 * DAY)) == []  # ... but the ctime is today
    assert list(rule.stale_files(index, LATER)) == []  # 100 days (ctime) < 120
    shorter = StaleRule([replace(rules.stale[0], days=90)], rules.keep)
    [stale] = shorter.stale_files(index, LATER)
    assert round(stale.age_days) == 100  # counted from the ctime, not the 1100-day-old mtime


def test_keep_files_and_keep_globs_pin_what_must_stay(lake: Path, indexed):
    box = lake / "sandbox"
    paths = ["users/ana/p/pinned/a.csv", "users/ana/p/pinned/sub/deeper/b.tmp", "users/ana/p/pinned/.keep",
             "users/ana/p/loose/c.csv", "users/ana/p/final/model.pt", "users/ana/p/x/final/m.pt",
             "users/ana/p/results.keep.csv", "analysis/.keep", "analysis/q3/r.html", "top.tmp"]
    for rel in paths:
        used(write(box / rel), atime_days=150, mtime_days=150)
    settings = settings_for(lake, {"keep": ["final", "*.keep.*"]})
    index = indexed(settings)
    rules = SandboxRules.from_settings(settings)
    stale = {s.record.path for s in stale_rule(rules).stale_files(index, LATER)}
    assert stale == {"users/ana/p/loose/c.csv", "top.tmp"}
    pins = Pins(rules.keep, lambda path: index.get(path) is not None)
    assert pins.reason("users/ana/p/pinned/sub/deeper/b.tmp") == "users/ana/p/pinned/.keep"
    assert pins.reason("analysis/q3/r.html") == "analysis/.keep"
    assert pins.reason("users/ana/p/x/final/m.pt") == "keep glob 'final'"
    assert pins.reason("users/ana/p/loose/c.csv") is None


def test_configured_stale_rules_come_first_and_say_what_clean_does(lake: Path, indexed):
    for rel in ("users/ana/p/tmp/run.log", "users/ana/p/tmp/x.bin", "users/ana/p/logs/a.txt"):
        used(write(lake / "sandbox" / rel), atime_days=5, mtime_days=5)
    settings = settings_for(lake, {"stale": [{"name": "logs", "glob": ["*.log", "logs"], "days": 1,
                                               "action": "delete", "severity": "info"}]})
    index = indexed(settings)
    rule = stale_rule(SandboxRules.from_settings(settings))
    assert rule.spec_for("users/ana/p/tmp/run.log").name == "logs"  # before the built-in tmp rule
    stale = {s.record.path: (s.spec.name, s.spec.action) for s in rule.stale_files(index, LATER)}
    assert stale == {"users/ana/p/tmp/run.log": ("logs", "delete"), "users/ana/p/logs/a.txt": ("logs", "delete")}
    [violation] = rule.evaluate(index, LATER)
    assert violation.severity == "info" and "will delete them" in violation.detail


# -- secrets -----------------------------------------------------------------------------------

# fake credentials, built from parts so that no scanner flags this file
AWS = "AKIA" + "Q" * 16
META = "EAA" + "x1" * 20
GITHUB = "ghp" + "_" + "a1" * 18
PEM = "-----BEGIN RSA " + "PRIVATE KEY-----\n" + "M" * 64 + "\n-----END RSA " + "PRIVATE KEY-----\n"
ENV_VALUE = "k" * 12 + "9f"
PASSWORD = "hunter" + "22xy"
URL_PASSWORD = "pw" * 4
COOKIE = "1" * 15
SESSION = "s" * 30
SECRETS = (AWS, META, GITHUB, "M" * 64, ENV_VALUE, PASSWORD, URL_PASSWORD, COOKIE, SESSION)


def plant_secrets(box: Path) -> dict[tuple[str, int], str]:
    """Files with one credential each; returns (path, line) -> kind."""
    cookies_json = json.dumps([{"domain": ".instagram.com", "name": "sessionid", "value": SESSION,
                                "path": "/", "httpOnly": True, "secure": True}], indent=1)
    files = {
        "users/ana/churn/aws.txt": ("first line\nkey id " + AWS + "\n", 2, "AWS access key"),
        "users/ana/churn/meta.json": ('{\n  "page": 1,\n  "access": "' + META + '"\n}\n', 3, "Meta access token"),
        "users/ana/churn/ci.yml": ("steps:\n  - run: echo " + GITHUB + "\n", 2, "GitHub token"),
        "users/bob/p/id_rsa": ("\n" + PEM, 2, "private key"),
        "users/bob/p/.env": ("DEBUG=1\n# API_KEY=\nAPI_KEY=" + ENV_VALUE + "\n", 3, ".env value"),
        "analysis/cookies.txt": ("# Netscape HTTP Cookie File\n.facebook.com\tTRUE\t/\tTRUE\t2000000000\tc_user\t"
                                 + COOKIE + "\n", 1, "browser cookie export"),
        "analysis/cookies.json": (cookies_json, 3, "browser cookie export"),
        "users/ana/churn/settings.py": ('import os\napi_key = os.environ["API_KEY"]\npassword = "' + PASSWORD + '"\n',
                                        3, "credential assignment"),
        "users/ana/churn/db.py": ("DB = 'postgres://etl:" + URL_PASSWORD + "@db.internal/lake'\n", 1,
                                  "URL with password"),
    }
    for rel, (text, _, _) in files.items():
        write(box / rel, text)
    write(box / "users/ana/churn/clean.py", "token = get_token()\nmax_tokens = 4096\nDEBUG=1\n")
    write(box / "users/ana/churn/.env.example", "API_KEY=your-api-key-here\nPASSWORD=changeme123\n")
    return {(rel, line): kind for rel, (_, line, kind) in files.items()}


def test_secrets_of_each_kind_are_reported_by_file_line_and_kind_never_by_value(lake: Path, indexed, tmp_path):
    box = lake / "sandbox"
    expected = plant_secrets(box)
    write(box / "users/ana/churn/big.txt", "x" * 5000 + "\n" + AWS + "\n")  # over secret_max_bytes
    write(box / "users/ana/churn/blob.bin", b"\0\1\2" + AWS.encode())  # binary
    write(box / "users/ana/churn/fixtures/sample.txt", AWS + "\n")  # secret_ignore
    (box / "users/ana/churn/link.txt").symlink_to(box / "users/ana/churn/aws.txt")
    outside = write(tmp_path / "outside" / "creds.txt", AWS + "\n")
    (box / "users/ana/churn/escape.txt").symlink_to(outside)
    fifo = box / "users/ana/churn/pipe"
    os.mkfifo(fifo)  # never opened (it would block)
    aws = box / "users/ana/churn/aws.txt"
    os.utime(aws, (NOW - 50 * DAY, NOW - 40 * DAY))  # relatime would refresh such an atime on read
    settings = settings_for(lake, {"secret_max_bytes": "4KiB", "secret_ignore": ["fixtures"]})
    index = indexed(settings)
    [rule] = [r for r in builtin_rules(SandboxRules.from_settings(settings)) if r.name == "secrets"]

    violations = list(rule.evaluate(index, NOW))

    assert {(v.path, v.line): v.detail for v in violations} == expected
    for v in violations:
        assert (v.rule, v.subject, v.severity) == ("secrets", f"{v.path}:{v.line}", "hard")
        shown = repr(v) + json.dumps(v.to_dict())
        assert not [s for s in SECRETS if s in shown]
    assert os.stat(aws).st_atime == pytest.approx(NOW - 50 * DAY, abs=1)  # read with O_NOATIME


def test_find_secrets_ignores_code_that_reads_secrets_and_harmless_env_values():
    text = ('api_key = os.environ.get("API_KEY")\ntoken = get_token()\npassword: Optional[str] = None\n'
            "max_token = 100000000000\nsecret_ref = ${VAULT_SECRET}\n")
    assert find_secrets(text, "etl.py") == []
    assert find_secrets("password = settings.db_password\n", "etl.py") == []  # code: only literals count
    assert [f.kind for f in find_secrets("password: settings.db_password\n", "etl.yaml")] == ["credential assignment"]
    notebook = json.dumps({"cells": [{"source": ["import os\n", "password = settings.pw\n",
                                                 'api_key = "' + PASSWORD + '"\n']}]}, indent=1)
    assert [(f.line, f.kind) for f in find_secrets(notebook, "eda.ipynb")] == [(7, "credential assignment")]
    assert find_secrets("DEBUG=true\nPORT=8080\nMETA_ACCESS_TOKEN=\nDB_PASS=\"\"\n", ".env") == []
    assert [(f.line, f.kind) for f in find_secrets("HOST=db\nexport DB_PASS=x\n", ".env")] == [(2, ".env value")]


def test_unchanged_files_are_not_read_again(lake: Path, indexed, monkeypatch):
    box = lake / "sandbox"
    write(box / "users/ana/p/aws.txt", AWS + "\n")
    write(box / "users/ana/p/gone.txt", "nothing\n")
    settings = settings_for(lake)
    reads: list[str] = []
    real_read = credentials_module.file_credentials

    def counting_read(path, limit):
        reads.append(str(path))
        return real_read(path, limit)

    monkeypatch.setattr(credentials_module, "file_credentials", counting_read)
    rule = SecretsRule(cache_path=settings.state_dir / "secret-scan.db")

    assert [v.subject for v in rule.evaluate(indexed(settings), NOW)] == ["users/ana/p/aws.txt:1"]
    assert len(reads) == 2
    assert [v.subject for v in rule.evaluate(indexed(settings), NOW)] == ["users/ana/p/aws.txt:1"]
    assert len(reads) == 2  # answered from the cache
    write(box / "users/ana/p/aws.txt", "rotated\n\n" + AWS + "\n")
    (box / "users/ana/p/gone.txt").unlink()
    assert [v.subject for v in rule.evaluate(indexed(settings), NOW)] == ["users/ana/p/aws.txt:3"]
    assert reads[2:] == [str(box / "users/ana/p/aws.txt")]
    cache = credentials_module.SecretScanCache(settings.state_dir / "secret-scan.db")
    assert [(path, [f.line for f in found]) for path, _, found in cache.with_findings()] == [
        ("users/ana/p/aws.txt", [3])]
    cache.close()
    (box / "users/ana/p/aws.txt").unlink()  # a file with findings that goes is forgotten at once
    assert list(rule.evaluate(indexed(settings), NOW)) == []
    assert len(reads) == 3
    cache = credentials_module.SecretScanCache(settings.state_dir / "secret-scan.db")
    assert cache.with_findings() == []
    cache.close()


# -- the violation store ----------------------------------------------------------------------


def test_store_reports_new_escalated_and_resolved_but_not_what_persists(tmp_path: Path):
    store = ViolationStore(tmp_path / "state" / "violations.db")
    soft = Violation("quota.user", "user:ana", 1500, 1000, "soft", "ana is over")

    def kinds(violations, now):
        return [(t.kind, t.violation.measured, t.first_seen) for t in store.record(violations, now=now)]

    assert kinds([soft], 1000) == [("new", 1500, 1000)]
    assert kinds([replace(soft, measured=1600)], 1060) == []  # persists: no re-alert
    [stored] = store.open_violations()
    assert (stored.first_seen, stored.last_seen, stored.violation.measured) == (1000, 1060, 1600)
    assert kinds([replace(soft, measured=2100)], 1120) == [("escalated", 2100, 1000)]  # past twice the limit
    assert kinds([replace(soft, measured=2200)], 1180) == []
    assert kinds([replace(soft, measured=1500)], 1240) == []  # falls back ...
    assert kinds([replace(soft, measured=2100)], 1300) == []  # ... and rises again: already alerted
    hard = Violation("quota.user", "user:ana", 4500, 4000, "hard", "ana is over hard")
    [escalated] = store.record([hard], now=1360)
    assert (escalated.kind, escalated.previous.severity, escalated.first_seen) == ("escalated", "soft", 1000)
    assert kinds([hard], 1420) == []
    assert kinds([], 1480) == [("resolved", 4500, 1000)]
    assert store.open_violations() == []
    assert store.get("quota.user", "user:ana").resolved_at == 1480
    assert kinds([], 1540) == []
    assert kinds([soft], 2000) == [("new", 1500, 2000)]  # back again: a new episode

    store.close()
    with ViolationStore(tmp_path / "state" / "violations.db") as again:  # it persists
        assert [s.first_seen for s in again.open_violations()] == [2000]
        history = again.history(subject="user:ana")
        assert [(h.event, h.violation.severity, h.at) for h in history] == [
            ("new", "soft", 1000), ("escalated", "soft", 1120), ("escalated", "hard", 1360),
            ("resolved", "hard", 1480), ("new", "soft", 2000)]
        assert again.history(rule="quota", limit=1)[0].event == "new"
        assert again.history(subject="user:bob") == []


def test_store_keeps_open_what_a_failed_rule_could_not_check(tmp_path: Path):
    store = ViolationStore(tmp_path / "violations.db")
    secret = Violation("secrets", "users/a/.env:3", 1, 0, "hard", ".env value", "users/a/.env", 3)
    quota = Violation("quota.total", "sandbox", 10, 5, "soft")
    assert [t.kind for t in store.record([secret, quota, quota], now=1)] == ["new", "new"]
    assert store.record([quota], now=2, partial=["secrets"]) == []
    assert {s.violation.rule for s in store.open_violations()} == {"secrets", "quota.total"}
    assert store.open_violations()[0].violation == secret  # hard first
    [resolved] = store.record([quota], now=3)
    assert (resolved.kind, resolved.violation) == ("resolved", secret)
    store.close()


def test_the_sinks_log_and_append_one_json_line_per_transition(lake: Path, caplog):
    settings = settings_for(lake)
    pm = plugin_manager()
    hard = Violation("secrets", "users/a/.env:3", 1, 0, "hard", ".env value", "users/a/.env", 3)
    soft = Violation("quota.user", "user:ana", 1500, 1000, "soft", "ana holds 1.5 KiB")
    with ViolationStore.for_settings(settings) as store, caplog.at_level(logging.INFO, "bedrot_lab"):
        transitions = store.record([hard, soft], now=NOW) + store.record([soft], now=NOW + 60)
        assert notify(transitions, settings, pm.hook) == 0
    lines = (settings.state_dir / "violations.jsonl").read_text().splitlines()
    assert len(lines) == len(transitions) == 3
    records = [json.loads(line) for line in lines]
    assert [(r["event"], r["rule"], r["subject"]) for r in records] == [
        ("new", "secrets", "users/a/.env:3"), ("new", "quota.user", "user:ana"),
        ("resolved", "secrets", "users/a/.env:3")]
    assert records[0]["line"] == 3 and records[0]["lake"] == settings.name and records[2]["since"] == records[0]["at"]
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "bedrot_lab.sandbox.violations"]
    assert [level for level, _ in logged] == ["WARNING", "INFO", "INFO"]
    assert logged[0][1].startswith("sandbox violation new: [hard] secrets users/a/.env:3: .env value (since ")


# -- plugin rules and the whole check -----------------------------------------------------------


class TooManyFiles:
    """A plugin rule: at most ``limit`` files per project."""

    name = "files.per_project"

    def __init__(self, limit: int):
        self.limit = limit
        self.broken = False

    def evaluate(self, index, now):
        if self.broken:
            raise RuntimeError("plugin bug")
        for row in index.usage("project"):
            if row["files"] > self.limit:
                yield Violation("files.per_project", f"project:{row['user']}/{row['project']}",
                                row["files"], self.limit, "soft", f"{row['files']} files")


class Broken:
    name = "broken"

    def evaluate(self, index, now):
        raise RuntimeError("plugin bug")


def test_all_rules_combines_builtins_and_plugin_rules(lake: Path):
    settings = settings_for(lake, {"secrets": False})
    names = [r.name for r in all_rules(settings, [[TooManyFiles(3)], None, Broken()])]
    assert names == ["quota", "stale", "files.per_project", "broken"]
    replacement = TooManyFiles(1)
    replacement.name = "stale"
    assert [r.name for r in all_rules(settings, [[replacement]])] == ["quota", "stale"]
    assert all_rules(settings, [[replacement]])[1] is replacement
    with pytest.raises(ValueError, match="two plugins return a sandbox rule named 'broken'"):
        all_rules(settings, [[Broken()], [Broken()]])
    with pytest.raises(TypeError, match="not a Rule"):
        all_rules(settings, [["stale"]])


def test_check_alerts_once_and_resolves_through_the_hooks(lake: Path, indexed):
    box = lake / "sandbox"
    for n in range(5):
        write(box / f"users/ana/churn/part-{n}.csv", b"x" * 300)
    write(box / "users/ana/churn/.env", "API_KEY=" + ENV_VALUE + "\n")
    too_many = TooManyFiles(4)
    seen = []

    class Plugin:
        @hookimpl
        def sandbox_rules(self, settings):
            return [too_many]

        @hookimpl
        def handle_violation(self, transition):
            seen.append((transition.kind, transition.violation.rule))

    settings = settings_for(lake, {"quotas": {"user": {"soft": "1KiB", "hard": "1MiB"}}})
    pm = plugin_manager(Plugin())

    first = check(settings, indexed(settings), pm.hook, now=NOW)
    assert sorted(seen) == [("new", "files.per_project"), ("new", "quota.user"), ("new", "secrets")]
    assert [v.rule for v in first.hard] == ["secrets"] and first.failed_rules == {}
    assert check(settings, indexed(settings), pm.hook, now=NOW + 60).transitions == []

    (box / "users/ana/churn/.env").unlink()
    too_many.broken = True  # the plugin's rule breaks: its violation stays open, unresolved
    third = check(settings, indexed(settings), pm.hook, now=NOW + 120)
    assert [(t.kind, t.violation.rule) for t in third.transitions] == [("resolved", "secrets")]
    assert third.failed_rules == {"files.per_project": "RuntimeError: plugin bug"}
    with ViolationStore.for_settings(settings) as store:
        assert {s.violation.rule for s in store.open_violations()} == {"quota.user", "files.per_project"}
    events = [json.loads(line)["event"] for line in (settings.state_dir / "violations.jsonl").read_text().splitlines()]
    assert events == ["new", "new", "new", "resolved"]
    assert seen[-1] == ("resolved", "secrets")


def test_a_secret_in_a_file_whose_name_is_not_utf8(lake: Path, indexed):
    name = os.fsdecode(b"caf\xe9-creds.txt")
    write(lake / "sandbox/users/ana/p" / name, "\n" + AWS + "\n")
    settings = settings_for(lake)
    result = check(settings, indexed(settings), plugin_manager().hook, now=NOW)
    [transition] = result.transitions
    assert transition.violation.subject == f"users/ana/p/{name}:2"
    with ViolationStore.for_settings(settings) as store:
        assert store.get("secrets", f"users/ana/p/{name}:2").violation == transition.violation
        assert store.history(subject=f"users/ana/p/{name}:2")[0].event == "new"
    [line] = (settings.state_dir / "violations.jsonl").read_text().splitlines()
    assert json.loads(line)["path"] == f"users/ana/p/{name}"
    assert check(settings, indexed(settings), plugin_manager().hook, now=NOW + 60).transitions == []


def test_a_failing_sink_does_not_stop_the_others(lake: Path, caplog):
    settings = settings_for(lake)

    class BadSink:
        @hookimpl
        def handle_violation(self, transition, settings):
            raise OSError("disk full")

    pm = plugin_manager(BadSink())
    with ViolationStore.for_settings(settings) as store:
        transitions = store.record([Violation("quota.total", "sandbox", 2, 1, "soft")], now=NOW)
    with caplog.at_level(logging.ERROR):
        assert notify(transitions, settings, pm.hook) == 1
    assert len((settings.state_dir / "violations.jsonl").read_text().splitlines()) == 1
    assert "handle_violation of plugin" in caplog.text


def test_evaluate_runs_every_rule_even_when_one_fails(lake: Path, indexed):
    write(lake / "sandbox/users/ana/p/a.csv", b"x" * 10)
    settings = settings_for(lake)
    result = evaluate([Broken(), TooManyFiles(0)], indexed(settings), NOW)
    assert [v.subject for v in result.violations] == ["project:ana/p"]
    assert result.failed == {"broken": "RuntimeError: plugin bug"}


def test_the_cache_finds_changed_files_with_any_name(lake: Path, indexed, monkeypatch):
    box = lake / "sandbox"
    odd = os.fsdecode(b"caf\xe9 keys.txt")  # not UTF-8
    write(box / "users/ana/p" / odd, AWS + "\n")
    write(box / "top.env", "TOKEN=" + ENV_VALUE + "\n")  # at the sandbox root
    write(box / "users/ana/p/big.txt", "x" * 300)
    settings = settings_for(lake)
    reads: list[str] = []
    real_read = credentials_module.file_credentials
    monkeypatch.setattr(credentials_module, "file_credentials",
                        lambda path, limit: reads.append(path) or real_read(path, limit))
    rule = SecretsRule(max_bytes=200, cache_path=settings.state_dir / "secret-scan.db")
    index = indexed(settings)
    expected = [f"users/ana/p/{odd}:1", "top.env:1"]
    assert sorted(v.subject for v in rule.evaluate(index, NOW)) == sorted(expected)
    assert len(reads) == 2  # big.txt is over max_bytes: never read
    assert sorted(v.subject for v in rule.evaluate(index, NOW)) == sorted(expected)
    assert len(reads) == 2
    with open(box / "top.env", "a") as handle:
        handle.write("# rotated\n")
    assert sorted(v.subject for v in rule.evaluate(indexed(settings), NOW)) == sorted(expected)
    assert reads[2:] == [str(box / "top.env")]
