"""Plugin discovery: built-ins, entry points, the lake's plugins/ folder, and broken plugins."""

from __future__ import annotations

import textwrap

import pytest

from bedrot_lab.lab import Lab
from bedrot_lab.plugins import PluginError

GOOD = """
    from bedrot_lab import experiment, hookimpl
    __version__ = "2.1"

    @experiment("hello", params={"who": "world"})
    def hello(ctx):
        '''Say hello.'''
        ctx.log_metric("greetings", 1)

    @hookimpl
    def register_experiments(register):
        register(hello)
"""


def test_builtin_plugins_are_loaded_through_the_same_hooks(bedrot_lab):
    infos = bedrot_lab.plugins.infos
    assert infos["datasets"].source == "builtin"
    assert infos["datasets"].hooks == ["register_datasets"]
    assert "dk_bank_details" in bedrot_lab.datasets
    assert infos["run_tags"].hooks == ["run_tags"]


def test_plugin_file_in_the_lake_is_found(bedrot_lake, write_plugin):
    write_plugin("greeter", GOOD)
    lab = Lab.open(bedrot_lake)
    info = lab.plugins.infos["greeter"]
    assert (info.source, info.version, info.hooks, info.error) == ("path", "2.1", ["register_experiments"], "")
    assert lab.experiment("hello").plugin == "greeter"
    assert lab.experiment("hello").params["who"].default == "world"


def test_plugin_package_in_the_lake_is_found(bedrot_lake):
    package = bedrot_lake / "plugins" / "greeting_pack"
    package.mkdir()
    (package / "helpers.py").write_text("NAME = 'from-a-package'\n")
    (package / "__init__.py").write_text(textwrap.dedent("""
        from bedrot_lab import experiment, hookimpl
        from .helpers import NAME

        @hookimpl
        def register_experiments(register):
            register(experiment(NAME)(lambda ctx: None))
    """))
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeting_pack"].source == "path"
    assert "from-a-package" in lab.experiments


def test_entry_point_plugin_is_found(bedrot_lake, tmp_path, monkeypatch, installed_plugins):
    site = tmp_path / "site"
    (site / "bedrot_ep_demo-3.0.dist-info").mkdir(parents=True)
    (site / "bedrot_ep_demo-3.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bedrot-ep-demo\nVersion: 3.0\n")
    (site / "bedrot_ep_demo-3.0.dist-info" / "entry_points.txt").write_text(
        "[bedrot_lab]\nep_demo = bedrot_ep_demo\n")
    (site / "bedrot_ep_demo.py").write_text(textwrap.dedent(GOOD).replace('"hello"', '"hello-ep"'))
    monkeypatch.syspath_prepend(str(site))
    lab = Lab.open(bedrot_lake)
    info = lab.plugins.infos["ep_demo"]
    assert (info.source, info.version, info.location) == ("entry point", "3.0", "bedrot_ep_demo")
    assert lab.experiment("hello-ep").plugin == "ep_demo"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("import no_such_module_xyz\n", "ModuleNotFoundError: No module named 'no_such_module_xyz'"),
        ("raise RuntimeError('broken on purpose')\n", "RuntimeError: broken on purpose"),
        ("from bedrot_lab import hookimpl\n@hookimpl\ndef register_experimentz(register):\n    pass\n",
         "implements unknown hook 'register_experimentz'"),
        ("from bedrot_lab import hookimpl\n@hookimpl\ndef register_experiments(regster):\n    pass\n",
         "hook register_experiments has no argument 'regster' (did you mean 'register'?); "
         "its signature is register_experiments(register)"),
    ],
    ids=["import-error", "raises", "unknown-hook", "wrong-argument"],
)
def test_a_broken_plugin_is_reported_by_name_and_the_others_still_load(
    bedrot_lake, write_plugin, caplog, source, problem
):
    write_plugin("greeter", GOOD)
    write_plugin("broken", source)
    lab = Lab.open(bedrot_lake)
    assert problem in lab.plugins.infos["broken"].error
    assert "hello" in lab.experiments
    assert "broken" not in lab.plugins.pm.get_plugins() and lab.plugins.pm.get_plugin("broken") is None
    warning = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith("plugin 'broken'") and "\n" not in warning[0]


def test_strict_mode_turns_a_broken_plugin_into_an_error(bedrot_lake, write_plugin, monkeypatch):
    write_plugin("broken", "import no_such_module_xyz\n")
    monkeypatch.setenv("BEDROT_LAB_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken'"):
        Lab.open(bedrot_lake)


def test_disabled_plugin_is_listed_but_not_loaded(bedrot_lake, write_plugin):
    write_plugin("greeter", GOOD)
    config = bedrot_lake / "bedrot-lab.toml"
    config.write_text(config.read_text().replace("disabled = []", 'disabled = ["greeter"]'))
    lab = Lab.open(bedrot_lake)
    assert lab.plugins.infos["greeter"].disabled
    assert lab.plugins.infos["greeter"].source == "path"
    assert "hello" not in lab.experiments


def test_allow_list_limits_what_loads(bedrot_lake, write_plugin, monkeypatch):
    write_plugin("greeter", GOOD)
    write_plugin("other", GOOD.replace('"hello"', '"hello-2"'))
    monkeypatch.setenv("BEDROT_LAB_LOAD_PLUGINS", "other")
    lab = Lab.open(bedrot_lake)
    assert set(lab.experiments) == {"hello-2"}
    assert "datasets" in lab.plugins.infos  # built-ins always load


def test_a_plugin_data_set_replaces_the_builtin_one(bedrot_lake, write_plugin):
    write_plugin("mycatalog", """
        from bedrot_lab import Dataset, hookimpl

        @hookimpl
        def register_datasets(register):
            register(Dataset("dk_bank_details", "elsewhere/dk.parquet", columns={"Store": "string"}))
    """)
    lab = Lab.open(bedrot_lake)
    assert lab.dataset("dk_bank_details").path == "elsewhere/dk.parquet"
    assert lab.dataset("track_catalog").path == "track_catalog_royalty_splits.csv"
