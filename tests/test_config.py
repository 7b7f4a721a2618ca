"""Lake settings: precedence of defaults, bedrot-lab.toml and environment, and config errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.config import (
    CONFIG_NAME,
    ZONES,
    ConfigError,
    LakeNotFound,
    default_tracking_uri,
    find_lake,
    load_settings,
    read_config_file,
)
from bedrot_lab.lab import Lab
from bedrot_lab.testing import make_lake

#: (file text, the key the error must name) for each kind of mistake
BAD_CONFIGS = {
    "unknown table": ("[nope]\nanswer = 1\n", "[nope]"),
    "unknown key": ('[zones]\nlandingg = "in"\n', "zones.landingg"),
    "string for bool": ('[tracking]\nsystem_metrics = "yes"\n', "tracking.system_metrics"),
    "string for list": ('[plugins]\ndisabled = "x"\n', "plugins.disabled"),
    "bool for number": ("[tracking]\nsystem_metrics_after = true\n", "tracking.system_metrics_after"),
    "zero interval": ("[tracking]\nsystem_metrics_interval = 0\n", "tracking.system_metrics_interval"),
    "list of numbers": ("[plugins]\npaths = [1, 2]\n", "plugins.paths"),
    "blank zone": ('[zones]\nraw = "  "\n', "zones.raw"),
    "value for table": ('lake = "mine"\n', "lake"),
    "memory limit not a size": ('[compute]\nmemory_limit = "lots"\n', "compute.memory_limit"),
    "memory limit over 100%": ('[compute]\nmemory_limit = "150%"\n', "compute.memory_limit"),
    "negative threads": ("[compute]\nthreads = -1\n", "compute.threads"),
}


def lake_with(root: Path, config: str) -> Path:
    make_lake(root, config=config)
    return root


# -- precedence -------------------------------------------------------------------


def test_defaults_from_an_empty_config_file(tmp_path: Path, bedrot_env) -> None:
    root = lake_with(tmp_path / "lake", "").resolve()
    settings = load_settings(root, env={})
    assert settings.root == root
    assert settings.config_file == root / CONFIG_NAME
    assert {key: path for key, path in settings.zones.items()} == {
        key: root / folder for key, (folder, _) in ZONES.items()
    }
    assert settings.tracking_uri == default_tracking_uri(root) == f"sqlite:///{root}/mlruns/mlflow.db"
    assert settings.embedded_store
    assert settings.artifact_root == root / "mlruns"
    assert settings.plugin_paths == (root / "plugins",)
    assert settings.specs_dir == root / "experiments"
    assert settings.disabled_plugins == ()
    assert settings.system_metrics is True
    assert settings.name == "lake"


def test_explicit_lake_without_a_config_file_uses_defaults(tmp_path: Path, bedrot_env) -> None:
    root = tmp_path / "bare"
    root.mkdir()
    settings = load_settings(root, env={})
    assert settings.config_file is None
    assert settings.zone("curated") == root.resolve() / "4_curated"


def test_config_file_renames_zones_and_sets_tracking(tmp_path: Path, bedrot_env) -> None:
    elsewhere = tmp_path / "archive-disk"
    root = lake_with(tmp_path / "lake", f"""\
[lake]
name = "bedrot-prod"

[zones]
raw = "two_raw"
archive = "{elsewhere}"

[tracking]
uri = "sqlite:////srv/mlflow.db"
artifacts = "store/artifacts"
system_metrics = false
system_metrics_after = 2.5

[plugins]
paths = ["plugins", "more_plugins"]
disabled = ["run_tags"]
""").resolve()
    settings = load_settings(root, env={})
    assert settings.zone("raw") == root / "two_raw"
    assert settings.zone("archive") == elsewhere
    assert settings.zone("landing") == root / "1_landing"
    assert settings.tracking_uri == "sqlite:////srv/mlflow.db"
    assert not settings.embedded_store
    assert settings.artifact_root == root / "store" / "artifacts"
    assert settings.system_metrics is False
    assert settings.system_metrics_after == 2.5
    assert settings.plugin_paths == (root / "plugins", root / "more_plugins")
    assert settings.disabled_plugins == ("run_tags",)
    assert settings.name == "bedrot-prod"


@pytest.mark.parametrize("key", list(ZONES))
def test_historic_zone_variable_overrides_the_file(tmp_path: Path, bedrot_env, key: str) -> None:
    variable = ZONES[key][1]
    root = lake_with(tmp_path / "lake", f'[zones]\n{key} = "from_file"\n').resolve()
    assert load_settings(root, env={}).zone(key) == root / "from_file"

    settings = load_settings(root, env={variable: "from_env"})
    assert settings.zone(key) == root / "from_env"
    absolute = tmp_path / "mounted" / key
    assert load_settings(root, env={variable: str(absolute)}).zone(key) == absolute
    others = [k for k in ZONES if k != key]
    assert all(settings.zone(k) == root / ZONES[k][0] for k in others)


def test_mlflow_tracking_uri_overrides_the_file(tmp_path: Path, bedrot_env) -> None:
    root = lake_with(tmp_path / "lake", '[tracking]\nuri = "sqlite:////from/file.db"\n')
    assert load_settings(root, env={}).tracking_uri == "sqlite:////from/file.db"
    settings = load_settings(root, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5077"})
    assert settings.tracking_uri == "http://127.0.0.1:5077"
    assert not settings.embedded_store


def test_find_lake_searches_upward_from_a_subfolder(tmp_path: Path, bedrot_env) -> None:
    root = lake_with(tmp_path / "lake", "").resolve()
    deep = root / "sandbox" / "users" / "tester" / "notes"
    deep.mkdir(parents=True)
    assert find_lake(deep, env={}) == root
    assert load_settings(cwd=deep, env={}).root == root
    bedrot_env.chdir(deep)
    assert load_settings(env={}).root == root


def test_nearest_config_wins_when_lakes_are_nested(tmp_path: Path, bedrot_env) -> None:
    outer = lake_with(tmp_path / "outer", "").resolve()
    inner = lake_with(outer / "sandbox" / "inner", "").resolve()
    assert find_lake(inner / "plugins", env={}) == inner
    assert find_lake(outer / "plugins", env={}) == outer


def test_lake_option_beats_bedrot_lake_which_beats_the_cwd(tmp_path: Path, bedrot_env) -> None:
    here = lake_with(tmp_path / "here", "").resolve()
    from_env = lake_with(tmp_path / "from_env", "").resolve()
    from_option = lake_with(tmp_path / "from_option", "").resolve()
    assert find_lake(here, env={}) == here
    assert find_lake(here, env={"BEDROT_LAKE": str(from_env)}) == from_env
    assert find_lake(here, from_option, env={"BEDROT_LAKE": str(from_env)}) == from_option


@pytest.mark.parametrize(("lake", "env", "source"), [
    ("missing", {}, "--lake"),
    (None, {"BEDROT_LAKE": "missing"}, "BEDROT_LAKE"),
])
def test_lake_that_is_not_a_folder(tmp_path: Path, bedrot_env, lake, env, source) -> None:
    env = {k: str(tmp_path / v) for k, v in env.items()}
    with pytest.raises(LakeNotFound) as caught:
        find_lake(tmp_path, tmp_path / lake if lake else None, env=env)
    assert source in str(caught.value)
    assert str(tmp_path / "missing") in str(caught.value)


def test_no_lake_anywhere(tmp_path: Path, bedrot_env) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LakeNotFound, match="bedrot-lab init"):
        load_settings(cwd=empty, env={})


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_config_mistake_names_file_and_key(tmp_path: Path, bedrot_env, case: str) -> None:
    text, key = BAD_CONFIGS[case]
    root = lake_with(tmp_path / "lake", text)
    path = root / CONFIG_NAME
    with pytest.raises(ConfigError) as caught:
        Lab(load_settings(root, env={}))  # a feature's table is checked once the plugins are loaded
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert caught.value.path == path
    assert caught.value.key == key
    assert "\n" not in message


def test_invalid_toml_names_file_and_position(tmp_path: Path, bedrot_env) -> None:
    path = lake_with(tmp_path / "lake", "[zones]\nraw = = 1\n") / CONFIG_NAME
    with pytest.raises(ConfigError) as caught:
        read_config_file(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML")
    assert "line 2" in str(caught.value)


def test_the_default_config_passes_its_own_checks(tmp_path: Path, bedrot_env) -> None:
    root = make_lake(tmp_path / "lake")
    data = read_config_file(root / CONFIG_NAME)
    assert data["zones"]["curated"] == "4_curated"
    assert data["compute"] == {"memory_limit": "50%", "threads": 0}


@pytest.mark.parametrize(("limit", "size"), [("4GB", 4 * 10**9), ("512MiB", 512 * 2**20), ("1.5 gb", 15 * 10**8)])
def test_a_memory_limit_is_a_size_or_a_share_of_ram(limit: str, size: int) -> None:
    from bedrot_lab.config import memory_limit_bytes

    assert memory_limit_bytes(limit) == size
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_limit_bytes("25%") == ram // 4


# -- through the command line -----------------------------------------------------


def cli_env_without_lake() -> dict[str, str]:
    return {**os.environ, "BEDROT_USER": "tester"}


def assert_one_line_error(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["unknown table", "unknown key", "string for bool", "string for list"])
def test_cli_config_mistake_is_one_line_and_exit_2(tmp_path: Path, bedrot_env, case: str) -> None:
    text, key = BAD_CONFIGS[case]
    root = lake_with(tmp_path / "lake", text)
    result = bedrot("--lake", str(root), "experiments", "list", env=cli_env_without_lake(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, str(root / CONFIG_NAME), key)
    assert result.stdout == ""


def test_cli_invalid_toml_is_one_line_and_exit_2(tmp_path: Path, bedrot_env) -> None:
    root = lake_with(tmp_path / "lake", "x = = 1\n")
    result = bedrot("--lake", str(root), "plugins", "list", env=cli_env_without_lake(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, str(root / CONFIG_NAME), "not valid TOML")


def test_cli_debug_shows_the_traceback(tmp_path: Path, bedrot_env) -> None:
    root = lake_with(tmp_path / "lake", '[plugins]\ndisabled = "x"\n')
    result = bedrot("--lake", str(root), "--debug", "experiments", "list",
                    env=cli_env_without_lake(), cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr
    assert "plugins.disabled" in result.stderr


def test_cli_without_a_lake_says_to_run_init(tmp_path: Path, bedrot_env) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = bedrot("experiments", "list", env=cli_env_without_lake(), cwd=empty)
    assert result.returncode == 2, result.stderr
    assert_one_line_error(result, "bedrot-lab init", str(empty))


def test_cli_lake_option_beats_bedrot_lake(tmp_path: Path, bedrot_env) -> None:
    lakes = {}
    for name in ("chosen", "ignored"):
        lakes[name] = make_lake(tmp_path / name)
        (lakes[name] / "plugins" / f"plugin_{name}.py").write_text('"""Marks its lake."""\n')
    env = {**cli_env_without_lake(), "BEDROT_LAKE": str(lakes["ignored"])}

    result = bedrot("--lake", str(lakes["chosen"]), "plugins", "list", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {info["name"] for info in json.loads(result.stdout)}
    assert "plugin_chosen" in names and "plugin_ignored" not in names

    result = bedrot("plugins", "list", "--json", env=env, cwd=lakes["chosen"])
    assert result.returncode == 0, result.stderr
    names = {info["name"] for info in json.loads(result.stdout)}
    assert "plugin_ignored" in names and "plugin_chosen" not in names
