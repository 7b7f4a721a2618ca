"""``bedrot-lab new-plugin``: the package it writes installs with ``pip install -e`` and its own tests
pass with no edits; its experiment is listed and runs through the CLI into the store; ``--local``
does the same without an install; names are checked and nothing is ever overwritten.

The package is installed into a throw-away virtual environment, made once per test session, that
reuses this environment's packages (bedrot-lab's editable install among them) through a ``.pth``
file. pip builds the package as an author's pip would, in an isolated build environment, so it
fetches setuptools from the package index (as tests/test_wheel.py's build does)."""

from __future__ import annotations

import json
import os
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO, run

from bedrot_lab.cli import cli
from bedrot_lab.lab import Lab
from bedrot_lab.scaffold import plugin_names
from bedrot_lab.testing import read_run

#: the scaffold's own test's statement: 3 countries, 1,600 streams, 10.50 USD
STATEMENT = (
    "Reporting Date,Sale Month,Store,Artist,Title,ISRC,UPC,Quantity,Team Percentage,Song/Album,"
    "Country of Sale,Songwriter Royalties Withheld,Earnings (USD)\n"
    "2025-06-01,2025-04,Spotify,Zone A,First Light,QZ0000000001,000000000001,1000,100,Song,US,0,4.00\n"
    "2025-06-01,2025-04,Apple Music,Zone A,First Light,QZ0000000001,000000000001,200,100,Song,US,0,2.50\n"
    "2025-06-01,2025-04,Spotify,Zone A,First Light,QZ0000000001,000000000001,300,100,Song,DE,0,3.00\n"
    "2025-06-01,2025-04,Spotify,Zone A,First Light,QZ0000000001,000000000001,100,100,Song,BR,0,1.00\n"
)


def new_plugin(*args: str) -> tuple[int, str]:
    """``bedrot-lab new-plugin ARGS`` in this process: exit code and everything printed."""
    outcome = CliRunner().invoke(cli, ["new-plugin", *args])
    return outcome.exit_code, outcome.output


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """A package made by ``new-plugin royalty-forecast``, installed with ``pip install -e`` into a
    new virtual environment: the package's folder, the environment's python, and an environment
    for its commands (installed plugins load, as they do for an author)."""
    work = tmp_path_factory.mktemp("scaffold")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        patch.setenv("BEDROT_LAKE", str(work / "no-lake"))
        code, output = new_plugin("royalty-forecast", "--json")
    assert code == 0, output
    package = Path(json.loads(output)["root"])

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    # addsitedir, not a plain path: this environment's own .pth files (bedrot-lab's editable install) must run
    reused = "".join(f"import site; site.addsitedir({folder!r})\n"
                     for folder in dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib")))
    (site / "zz_reuse_dependencies.pth").write_text(reused)
    env = {key: value for key, value in os.environ.items()
           if key not in {"BEDROT_LAKE", "BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD", "BEDROT_LAB_LOAD_PLUGINS",
                          "PYTHONPATH", "MLFLOW_TRACKING_URI"}}
    env.update(BEDROT_USER="tester", MLFLOW_DISABLE_TELEMETRY="true", PIP_DISABLE_PIP_VERSION_CHECK="1")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "-e", package, env=env)
    return package, python, env


def test_the_package_s_own_tests_pass_straight_after_pip_install(installed):
    package, python, env = installed
    done = run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package, env=env)
    assert "3 passed" in done.stdout, done.stdout


def test_the_installed_experiment_is_listed_and_runs_through_the_cli_into_the_store(installed, bedrot_lake):
    _, python, env = installed
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(STATEMENT)
    env = {**env, "BEDROT_LAKE": str(bedrot_lake)}

    listed = json.loads(run(python, "-m", "bedrot_lab", "experiments", "list", "--json", env=env).stdout)
    assert {item["name"]: item["plugin"] for item in listed}["royalty-forecast"] == "royalty_forecast"

    done = run(python, "-m", "bedrot_lab", "run", "royalty-forecast", "-P", "top=2", "--json", env=env)
    result = json.loads(done.stdout)
    assert result["status"] == "FINISHED"
    recorded = read_run(result["run_id"], Lab.open(bedrot_lake))
    assert recorded.data.metrics["countries"] == 3
    assert recorded.data.metrics["gross_revenue_usd"] == pytest.approx(10.50)
    assert recorded.data.tags["bedrot.plugin"] == "royalty_forecast"


def test_the_package_has_every_file_and_lints_clean(installed):
    package, _, _ = installed
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*")
                  if p.is_file() and "egg-info" not in str(p) and "__pycache__" not in str(p)) == [
        ".gitignore", "README.md", "bedrot_lab_royalty_forecast.py", "pyproject.toml",
        "tests/test_royalty_forecast.py"]
    project = tomllib.loads((package / "pyproject.toml").read_text())
    assert project["project"]["name"] == "bedrot-lab-royalty-forecast"
    assert project["project"]["entry-points"]["bedrot_lab"] == {"royalty_forecast": "bedrot_lab_royalty_forecast"}
    assert "bedrot-lab plugins check royalty_forecast" in (package / "README.md").read_text()
    ruff = Path(sys.executable).with_name("ruff")
    run(ruff, "check", "--no-cache", "--select", "E,F,W,I,B,UP,SIM,RUF", package)


def test_local_writes_a_plugin_file_and_a_spec_that_run_without_an_install(bedrot_lake, monkeypatch):
    (bedrot_lake / "4_curated" / "dk_bank_details.csv").write_text(STATEMENT)
    monkeypatch.setenv("BEDROT_LAKE", str(bedrot_lake))

    code, output = new_plugin("streams-by-country", "--local")
    assert code == 0, output
    assert output.splitlines()[:2] == ["created  plugins/streams_by_country.py",
                                       "created  experiments/streams-by-country.toml"]
    assert "  bedrot-lab run experiments/streams-by-country.toml" in output.splitlines()

    listed = CliRunner().invoke(cli, ["experiments", "list", "--json"])
    assert {item["name"]: item["plugin"] for item in json.loads(listed.output)}["streams-by-country"] == (
        "streams_by_country")
    done = CliRunner().invoke(cli, ["run", "experiments/streams-by-country.toml", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    recorded = read_run(result["run_id"], Lab.open(bedrot_lake))
    assert recorded.data.metrics["countries"] == 3
    assert recorded.data.params["top"] == "10"
    assert recorded.data.tags["bedrot.plugin"] == "streams_by_country"


def test_json_names_everything_a_script_needs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BEDROT_LAKE", str(tmp_path / "no-lake"))
    code, output = new_plugin("royalty_forecast", "--path", "plugins-here", "--json")
    assert code == 0, output
    made = json.loads(output)
    root = tmp_path / "plugins-here" / "bedrot-lab-royalty-forecast"
    assert {key: made[key] for key in ("kind", "name", "plugin", "experiment", "distribution", "module", "root")} == {
        "kind": "package", "name": "royalty-forecast", "plugin": "royalty_forecast",
        "experiment": "royalty-forecast", "distribution": "bedrot-lab-royalty-forecast",
        "module": "bedrot_lab_royalty_forecast", "root": str(root)}
    assert made["files"] == [str(root / name) for name in (
        "pyproject.toml", "bedrot_lab_royalty_forecast.py", "tests/test_royalty_forecast.py", "README.md",
        ".gitignore")]
    assert made["next"][0] == "pip install -e './plugins-here/bedrot-lab-royalty-forecast[test]'"


@pytest.mark.parametrize(("name", "problem"), [
    ("Royalty Forecast", "'Royalty Forecast' is not a plugin name: use lower-case letters, digits and hyphens, "
                         "starting with a letter, such as 'royalty-forecast'"),
    ("2025-report", "'2025-report' is not a plugin name: use lower-case letters, digits and hyphens, starting "
                    "with a letter, such as 'report'"),
    ("royalty--forecast", "'royalty--forecast' is not a plugin name: use lower-case letters, digits and "
                          "hyphens, starting with a letter, such as 'royalty-forecast'"),
    ("bedrot-lab-", "'bedrot-lab-' is not a plugin name: use lower-case letters, digits and hyphens, starting "
                    "with a letter, such as 'bedrot-lab'"),
    ("class", "'class' cannot be a plugin name: 'class' is a name Python or the plugin's module already uses; "
              "add a word, such as 'class-report'"),
    ("hookimpl", "'hookimpl' cannot be a plugin name: 'hookimpl' is a name Python or the plugin's module "
                 "already uses; add a word, such as 'hookimpl-report'"),
])
def test_a_name_that_cannot_be_a_plugin_s_is_one_line_and_writes_nothing(name, problem, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = new_plugin(name)
    assert (code, output) == (2, f"Error: {problem}\n")
    assert list(tmp_path.iterdir()) == []


def test_names_derive_from_one_another():
    names = plugin_names("bedrot-lab-royalty-forecast")
    assert (names.name, names.identifier, names.distribution, names.module, names.title) == (
        "royalty-forecast", "royalty_forecast", "bedrot-lab-royalty-forecast", "bedrot_lab_royalty_forecast",
        "Royalty forecast")


def test_an_experiment_name_the_lake_has_is_refused(bedrot_lake, write_plugin, monkeypatch):
    write_plugin("mine", """
        from bedrot_lab import experiment, hookimpl

        @experiment("royalty-forecast")
        def forecast(ctx):
            "Taken."

        @hookimpl
        def register_experiments(register):
            register(forecast)
    """)
    monkeypatch.setenv("BEDROT_LAKE", str(bedrot_lake))
    code, output = new_plugin("royalty-forecast", "--local")
    assert (code, output) == (2, "Error: an experiment named 'royalty-forecast' is already registered by plugin "
                                 "'mine'; choose another NAME\n")
    assert not (bedrot_lake / "experiments" / "royalty-forecast.toml").exists()


def test_nothing_is_overwritten(bedrot_lake, monkeypatch, tmp_path):
    monkeypatch.setenv("BEDROT_LAKE", str(bedrot_lake))
    spec = bedrot_lake / "experiments" / "royalty-forecast.toml"
    spec.write_text("# mine\n")
    code, output = new_plugin("royalty-forecast", "--local")
    assert (code, output) == (2, f"Error: {spec} already exists; nothing was written: choose another NAME\n")
    assert spec.read_text() == "# mine\n"
    assert not (bedrot_lake / "plugins" / "royalty_forecast.py").exists()

    folder = tmp_path / "elsewhere" / "bedrot-lab-royalty-forecast"
    folder.mkdir(parents=True)
    code, output = new_plugin("royalty-forecast", "--path", str(tmp_path / "elsewhere"))
    assert (code, output) == (2, f"Error: {folder} already exists; nothing was written: choose another NAME, "
                                 "or another folder with --path\n")
    assert list(folder.iterdir()) == []


def test_path_and_local_together_are_a_usage_error(bedrot_lake, monkeypatch):
    monkeypatch.setenv("BEDROT_LAKE", str(bedrot_lake))
    code, output = new_plugin("royalty-forecast", "--local", "--path", "somewhere")
    assert code == 2
    assert output.splitlines()[-1] == ("Error: --path is where a package goes; --local writes into the lake's "
                                       "plugins/ and experiments/ folders (choose the lake with --lake)")


def test_the_templates_are_package_data():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    templates = sorted(p.name for p in (REPO / "bedrot_lab" / "scaffold" / "templates").iterdir())
    assert data["bedrot_lab.scaffold"] == ["templates/*.tmpl"]
    assert templates and all(name.endswith(".tmpl") for name in templates), templates
