"""What the distribution ships: every package, one entry point per BEDROT plugin, the specs,
and scikit-learn only as an extra. (tests/test_wheel.py installs a built wheel and runs it.)"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from conftest import REPO, REPO_PLUGINS

from bedrot_lab.lab import Lab
from bedrot_lab.plugins import ENTRY_POINT_GROUP
from bedrot_lab.specs import load_spec, packaged_specs

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_is_in_the_distribution():
    listed = PYPROJECT["tool"]["setuptools"]["packages"]
    expected = [".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "bedrot_lab").rglob("__init__.py")]
    missing = sorted(set(expected) - set(listed))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert sorted(set(listed) - set(expected)) == ["bedrot_plugins", "bedrot_plugins.experiments"]


def test_each_bedrot_plugin_module_is_an_entry_point_of_its_own():
    modules = sorted(p.stem for p in REPO_PLUGINS.glob("*.py") if not p.name.startswith("_"))
    entry_points = PYPROJECT["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert entry_points == {name: f"bedrot_plugins.{name}" for name in modules}


def test_the_analyses_the_server_and_notebooks_are_extras_and_dev_has_them():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert not [d for d in project["dependencies"]
                if d.startswith(("scikit-learn", "psycopg", "mlflow[auth]", "papermill", "ipykernel", "nbconvert"))]
    assert extras["analyses"] == ["scikit-learn>=1.4"]
    assert {d.split(">")[0] for d in extras["server"]} == {"mlflow[auth]", "psycopg[binary]"}
    assert {d.split(">")[0] for d in extras["notebooks"]} == {"papermill", "ipykernel", "nbconvert"}
    assert "bedrot-lab[analyses,server,notebooks]" in extras["dev"]


def test_the_specs_come_with_the_package(installed_plugins, bedrot_lake):
    specs = packaged_specs()
    assert sorted(specs) == sorted(p.name for p in (REPO / "experiments").glob("*.toml"))
    assert all(path.read_bytes() == (REPO / "experiments" / name).read_bytes() for name, path in specs.items())
    installed = Lab.open(bedrot_lake).experiments
    for name, path in specs.items():
        assert load_spec(path).experiment in installed, name
        assert installed[load_spec(path).experiment].plugin in PYPROJECT["project"]["entry-points"][ENTRY_POINT_GROUP]


def test_bedrot_plugins_load_without_importing_mlflow_pandas_or_scikit_learn(installed_plugins, bedrot_lake):
    """Every command loads the installed plugins: they must keep the start fast."""
    script = ("import sys; from bedrot_lab.lab import Lab; lab = Lab.open(sys.argv[1]); "
              "assert len(lab.experiments) >= 9, lab.experiments; "
              "print(sorted(m for m in ('mlflow', 'pandas', 'sklearn', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(bedrot_lake)], capture_output=True, text=True,
                          check=False, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
