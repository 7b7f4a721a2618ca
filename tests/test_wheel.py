"""The packaging test: the wheel built from this tree, installed (not editable) into a fresh
virtual environment, brings BEDROT's plugins and specs to a lake anywhere, and all of them run.

The new environment reuses this one's dependencies (MLflow, pandas ...) through a ``.pth``
file, added after the wheel is installed; bedrot-lab itself comes only from the wheel (the
test checks where it is imported from). Select it with ``pytest -m packaging``; it takes
about a minute."""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
from conftest import REPO, run

from bedrot_lab.config import ZONES

pytestmark = pytest.mark.packaging

#: what the wheel is built from, copied so that the build leaves nothing in the checkout
SOURCES = ("pyproject.toml", "README.md", "bedrot_lab", "plugins", "experiments")

#: run inside the new environment: where bedrot-lab comes from, then every target through the CLI
RUN_ALL = """
    import json, sys
    import bedrot_lab, bedrot_plugins
    from click.testing import CliRunner
    from bedrot_lab.cli import cli

    results = {"imported": [bedrot_lab.__file__, bedrot_plugins.__file__], "path": sys.path, "runs": {}}
    for target in sys.argv[1:]:
        outcome = CliRunner().invoke(cli, ["run", target, "--json"])
        results["runs"][target] = {"exit_code": outcome.exit_code, "output": outcome.output[-3000:]}
    print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment with the built wheel installed; its bin folder and an environment
    for its commands."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", work / "dist", source)
    [wheel] = (work / "dist").glob("bedrot_lab-*.whl")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel)
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    reused = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz_reuse_dependencies.pth").write_text("".join(f"{folder}\n" for folder in reused))

    env = {key: value for key, value in os.environ.items()
           if key not in {"PYTHONPATH", "BEDROT_LAKE", "MLFLOW_TRACKING_URI", "BEDROT_LAB_DISABLE_PLUGIN_AUTOLOAD",
                          "BEDROT_LAB_LOAD_PLUGINS", *(variable for _, variable in ZONES.values())}}
    env.update(BEDROT_USER="tester", MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    return venv / "bin", env


def test_the_wheel_installed_anywhere_runs_every_packaged_experiment_and_spec(wheel_env, tmp_path):
    started = time.perf_counter()
    bin_folder, env = wheel_env
    lake = tmp_path / "elsewhere" / "lake"

    init = run(bin_folder / "bedrot-lab", "init", lake, "--sample", cwd=tmp_path, env=env)
    specs = sorted(p.name for p in (REPO / "experiments").glob("*.toml"))
    assert f"created  experiments/*.toml  ({len(specs)} specs that come with bedrot-lab)" in init.stdout.splitlines()
    assert sorted(p.name for p in (lake / "experiments").glob("*.toml")) == specs

    plugins = json.loads(run(bin_folder / "bedrot-lab", "plugins", "list", "--json", cwd=lake, env=env).stdout)
    bedrot = {info["name"]: info for info in plugins if info["location"].startswith("bedrot_plugins.")}
    modules = sorted(p.stem for p in (REPO / "plugins").glob("[!_]*.py"))
    assert sorted(bedrot) == modules
    assert {(info["source"], info["status"]) for info in bedrot.values()} == {("entry point", "ok")}

    listed = run(bin_folder / "bedrot-lab", "experiments", "list", "--json", cwd=lake, env=env)
    experiments = [item["name"] for item in json.loads(listed.stdout)]
    assert len(experiments) >= len(modules) and listed.stderr == ""

    script = tmp_path / "run_all.py"
    script.write_text(textwrap.dedent(RUN_ALL))
    targets = [*experiments, *(f"experiments/{name}" for name in specs)]
    done = run(bin_folder / "python", script, *targets, cwd=lake, env=env, timeout=600)
    results = json.loads(done.stdout.splitlines()[-1])
    site = Path(results["imported"][0]).parents[1]
    assert site.is_relative_to(bin_folder.parent), results["imported"]
    assert [Path(p).parent.parent for p in results["imported"]] == [site, site]
    assert str(REPO) not in results["path"] and "" not in results["path"][1:]
    failed = {target: outcome for target, outcome in results["runs"].items() if outcome["exit_code"] != 0}
    assert not failed, json.dumps(failed, indent=1)
    assert sorted(results["runs"]) == sorted(targets)

    (lake / "experiments" / "revenue-per-stream.toml").unlink()
    fallback = run(bin_folder / "bedrot-lab", "run", "revenue-per-stream.toml", "--json", cwd=lake, env=env)
    assert json.loads(fallback.stdout)["status"] == "FINISHED"
    print(f"wheel test: {time.perf_counter() - started:.0f} s after the build")
