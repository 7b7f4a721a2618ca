"""Installed plugins and the lake's plugins/ folder together: a module is loaded once, a name
both register is an error until [plugins] prefer (or disabling one) says which wins, and an
experiment whose optional dependency is missing is listed as unavailable."""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start

from bedrot_lab.config import ConfigError, load_settings
from bedrot_lab.lab import Lab
from bedrot_lab.plugins import PluginError

#: a plugin that counts its imports in a file next to it, so a test sees how often it was loaded
GREETER = """
    from pathlib import Path
    from bedrot_lab import experiment, hookimpl

    __version__ = "{version}"
    with Path(__file__).with_suffix(".imports").open("a") as imports:
        imports.write("x")

    @experiment("hello")
    def hello(ctx):
        '''Say {greeting}.'''

    @hookimpl
    def register_experiments(register):
        register(hello)
"""


def greeter(version: str = "1.0", greeting: str = "hello") -> str:
    return textwrap.dedent(GREETER.format(version=version, greeting=greeting))


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed_plugins) -> Path:
    """An installed distribution ``bedrot-greetings`` whose package ``bedrot_greetings`` holds
    the plugin module ``greeter`` (entry point ``greeter``); returns the package folder."""
    site = tmp_path / "site"
    info = site / "bedrot_greetings-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bedrot-greetings\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[bedrot_lab]\ngreeter = bedrot_greetings.greeter\n")
    package = site / "bedrot_greetings"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greeter.py").write_text(greeter())
    monkeypatch.syspath_prepend(str(site))
    yield package
    for name in [name for name in sys.modules if name.startswith("bedrot_greetings")]:
        del sys.modules[name]


def configure(lake: Path, *, paths: list[str] | None = None, prefer: str | None = None,
              disabled: list[str] | None = None) -> None:
    """Set keys of the lake's [plugins] table."""
    config = lake / "bedrot-lab.toml"
    text = config.read_text()
    if paths is not None:
        text = text.replace('paths = ["plugins"]', f"paths = {json.dumps(paths)}")
    if disabled is not None:
        text = text.replace("disabled = []", f"disabled = {json.dumps(disabled)}")
    if prefer is not None:
        text = re.sub(r'\nprefer = "\w+"', "", text).replace("[plugins]\n", f'[plugins]\nprefer = "{prefer}"\n')
    config.write_text(text)


def imports(module: Path) -> int:
    counter = module.with_suffix(".imports")
    return len(counter.read_text()) if counter.exists() else 0


# -- loaded once -------------------------------------------------------------------------------


def test_an_installed_module_that_is_also_in_a_plugins_folder_is_loaded_once(bedrot_lake, installed):
    configure(bedrot_lake, paths=["plugins", str(installed)])  # the repository as a lake: the same files
    lab = Lab.open(bedrot_lake)
    info = lab.plugins.infos["greeter"]
    assert (info.source, info.version, info.location) == ("entry point", "2.0", "bedrot_greetings.greeter")
    assert not [name for name in lab.plugins.infos if name.endswith("greeter") and name != "greeter"]
    assert lab.experiment("hello").plugin == "greeter"
    assert lab.conflicts == {}
    assert imports(installed / "greeter.py") == 1


def test_a_byte_identical_copy_in_the_lake_is_the_installed_plugin(bedrot_lake, installed):
    shutil.copy(installed / "greeter.py", bedrot_lake / "plugins")
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].source == "entry point"
    assert "lake:greeter" not in lab.plugins.infos
    assert lab.experiment("hello").plugin == "greeter"
    assert imports(bedrot_lake / "plugins" / "greeter.py") == 0


def test_a_disabled_installed_plugin_is_not_loaded_from_its_own_file_in_the_lake_either(bedrot_lake, installed):
    configure(bedrot_lake, paths=["plugins", str(installed)], disabled=["greeter"])
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].status == "disabled"
    assert "hello" not in lab.experiments
    assert imports(installed / "greeter.py") == 0


def test_without_installed_plugins_autoloaded_the_lake_file_keeps_its_name(bedrot_lake, installed, monkeypatch):
    monkeypatch.setenv("BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD", "1")
    (bedrot_lake / "plugins" / "greeter.py").write_text(greeter(greeting="hi"))
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].source == "path"
    assert lab.experiment("hello").plugin == "greeter"
    assert imports(installed / "greeter.py") == 0


# -- the same name from the lake and from an installed package ---------------------------------


def test_a_different_copy_in_the_lake_is_an_error_until_the_config_says_which_wins(bedrot_lake, installed):
    copy = bedrot_lake / "plugins" / "greeter.py"
    copy.write_text(greeter(version="3.0-lake", greeting="hi from the lake"))
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].source == "entry point"
    assert (lab.plugins.infos["lake:greeter"].source, lab.plugins.infos["lake:greeter"].version) == ("path", "3.0-lake")
    with pytest.raises(PluginError) as raised:
        lab.experiment("hello")
    message = str(raised.value)
    assert "\n" not in message
    for text in ("'greeter' (bedrot_greetings.greeter)", f"'lake:greeter' ({copy})", '[plugins] prefer = "lake"'):
        assert text in message

    configure(bedrot_lake, prefer="lake")
    assert Lab.open(bedrot_lake).experiment("hello").description == "Say hi from the lake."
    configure(bedrot_lake, prefer="installed")
    assert Lab.open(bedrot_lake).experiment("hello").plugin == "greeter"


def test_disabling_the_installed_plugin_lets_the_lakes_copy_win(bedrot_lake, installed):
    (bedrot_lake / "plugins" / "greeter.py").write_text(greeter(greeting="hi from the lake"))
    configure(bedrot_lake, disabled=["greeter"])
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].status == "disabled"
    assert lab.experiment("hello").plugin == "lake:greeter"
    assert imports(installed / "greeter.py") == 0


def test_prefer_decides_between_differently_named_plugins_too(bedrot_lake, installed):
    (bedrot_lake / "plugins" / "my_greeter.py").write_text(greeter(greeting="hi from my greeter"))
    with pytest.raises(PluginError) as raised:
        Lab.open(bedrot_lake).experiment("hello")
    assert "'greeter' (" in str(raised.value) and "'my_greeter' (" in str(raised.value)
    assert str(raised.value).endswith('rename one, or say which wins in bedrot-lab.toml: '
                                      '[plugins] prefer = "lake" or "installed"')
    configure(bedrot_lake, prefer="lake")
    assert Lab.open(bedrot_lake).experiment("hello").plugin == "my_greeter"
    configure(bedrot_lake, prefer="installed")
    assert Lab.open(bedrot_lake).experiment("hello").plugin == "greeter"


def test_prefer_leaves_a_clash_within_the_lake_an_error(bedrot_lake, installed):
    for name in ("one", "two"):
        (bedrot_lake / "plugins" / f"{name}.py").write_text(greeter().replace('"hello"', '"twice"'))
    configure(bedrot_lake, prefer="lake")
    with pytest.raises(PluginError) as raised:
        Lab.open(bedrot_lake).experiment("twice")
    assert "'one' (" in str(raised.value) and "'two' (" in str(raised.value)
    assert str(raised.value).endswith("; rename one")


@pytest.mark.parametrize("value", ['"local"', "true", '""'])
def test_prefer_is_lake_or_installed(bedrot_lake, value):
    config = bedrot_lake / "bedrot-lab.toml"
    config.write_text(config.read_text().replace("[plugins]\n", f"[plugins]\nprefer = {value}\n"))
    with pytest.raises(ConfigError, match=r"plugins\.prefer: expected"):
        load_settings(bedrot_lake)


def test_cli_names_both_plugins_and_the_remedy(bedrot_lake, installed, cli_env):
    (bedrot_lake / "plugins" / "greeter.py").write_text(greeter(greeting="hi from the lake"))
    env = {**cli_env, "PYTHONPATH": str(installed.parent)}
    listed = bedrot("plugins", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    sources = {info["name"]: info["source"] for info in json.loads(listed.stdout)}
    assert (sources["greeter"], sources["lake:greeter"]) == ("entry point", "path")
    ran = bedrot("run", "hello", env=env)
    assert ran.returncode == 1
    [line] = [line for line in ran.stderr.splitlines() if line.startswith("Error: ")]
    assert "'lake:greeter'" in line and '[plugins] prefer = "lake" or "installed"' in line


# -- optional dependencies ------------------------------------------------------------------------


NEEDS_A_MODULE = """
    from bedrot_lab import experiment, hookimpl

    @experiment("fancy", requires={"no_such_module_xyz": "bedrot-fancy[extra]"})
    def fancy(ctx):
        '''Something fancy.'''
        import no_such_module_xyz

    @experiment("plain")
    def plain(ctx):
        '''Something plain.'''
        ctx.log_metric("ran", 1)

    @hookimpl
    def register_experiments(register):
        register(fancy)
        register(plain)
"""


def test_an_experiment_without_its_optional_module_is_listed_unavailable_and_the_rest_run(
        bedrot_lake, write_plugin, cli_env):
    write_plugin("fancy", NEEDS_A_MODULE)
    listed = bedrot("experiments", "list", env=cli_env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert rows["fancy"].endswith(
        "unavailable: it needs no_such_module_xyz, which is not installed: pip install 'bedrot-fancy[extra]'")
    assert "Something plain." in rows["plain"]
    as_json = {item["name"]: item for item in json.loads(bedrot("experiments", "list", "--json", env=cli_env).stdout)}
    assert as_json["plain"]["unavailable"] == "" and "bedrot-fancy[extra]" in as_json["fancy"]["unavailable"]

    shown = bedrot("experiments", "show", "fancy", env=cli_env)
    assert shown.returncode == 0 and "Unavailable here: it needs no_such_module_xyz" in shown.stdout

    ran = bedrot("run", "fancy", env=cli_env)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines()[-1] == (
        "Error: experiment 'fancy' cannot run here: it needs no_such_module_xyz, which is not installed: "
        "pip install 'bedrot-fancy[extra]'")
    assert "running" not in ran.stderr  # refused before any run was created
    assert bedrot("run", "plain", env=cli_env).returncode == 0


def test_artist_clustering_without_scikit_learn_says_to_install_the_analyses_extra(
        bedrot_lake, installed_plugins, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    lab = Lab.open(bedrot_lake)
    with pytest.raises(PluginError) as raised:
        lab.experiment("artist-clustering")
    assert str(raised.value).endswith("it needs sklearn, which is not installed: pip install 'bedrot-lab[analyses]'")
    assert lab.experiment("artist-clustering", runnable=False).plugin == "artist_clustering"
    assert lab.experiment("revenue-per-stream").unavailable == ""
