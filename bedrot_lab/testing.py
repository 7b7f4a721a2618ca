"""pytest fixtures for plugin authors: a temporary lake with its own MLflow store.

Installed as a pytest plugin (``pytest11``), so a plugin's tests can simply ask
for ``bedrot_lake`` or ``bedrot_lab``::

    def test_my_experiment(bedrot_lab, tmp_path):
        result = run_experiment(bedrot_lab, "my-experiment", top_n=3)
        assert result.status == "FINISHED"
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .lab import Lab
    from .runner import RunResult

#: environment variables that would make a test see a real lake or store
ISOLATED_VARIABLES = (
    "BEDROT_LAKE", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "BEDROT_LAB_LOAD_PLUGINS",
    "BEDROT_LAB_STRICT_PLUGINS", "BEDROT_LAB_TRACE_PLUGINS", "LANDING_ZONE", "RAW_ZONE",
    "STAGING_ZONE", "CURATED_ZONE", "ARCHIVE_ZONE", "SANDBOX_ZONE", "MLFLOW_RUN_ID",
)


def make_lake(root: Path, *, config: str | None = None, plugin_paths: tuple[Path, ...] = ()) -> Path:
    """Lay out an empty lake at ``root`` (folders and ``bedrot-lab.toml``), without a store."""
    from .config import CONFIG_NAME, DEFAULT_CONFIG, ZONES

    root.mkdir(parents=True, exist_ok=True)
    for folder, _ in ZONES.values():
        (root / folder).mkdir(exist_ok=True)
    for folder in ("sandbox/users", "plugins", "experiments", "mlruns"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    text = config if config is not None else DEFAULT_CONFIG.format(name=root.name)
    if plugin_paths:
        paths = ", ".join(f'"{p}"' for p in ("plugins", *map(str, plugin_paths)))
        text = text.replace('paths = ["plugins"]', f"paths = [{paths}]")
    (root / CONFIG_NAME).write_text(text)
    return root


@pytest.fixture(scope="session")
def bedrot_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow SQLite store, made once per session and copied per test
    (creating one costs most of a second)."""
    from .config import settings_from
    from .tracking import open_store

    root = tmp_path_factory.mktemp("store-template")
    open_store(settings_from(root, {}, None, env={}))
    return root / "mlruns" / "mlflow.db"


@pytest.fixture
def bedrot_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without variables that point at real lakes or stores."""
    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BEDROT_USER", "tester")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return monkeypatch


@pytest.fixture
def bedrot_lake(tmp_path: Path, bedrot_env: pytest.MonkeyPatch, bedrot_store_template: Path) -> Path:
    """An empty lake in a temporary folder with its own, ready MLflow store."""
    root = make_lake(tmp_path / "lake")
    shutil.copy(bedrot_store_template, root / "mlruns" / "mlflow.db")
    bedrot_env.chdir(root)
    return root


@pytest.fixture
def bedrot_lab(bedrot_lake: Path) -> Lab:
    """A :class:`~bedrot_lab.lab.Lab` opened on ``bedrot_lake``."""
    from .lab import Lab

    return Lab.open(bedrot_lake)


def run_experiment(lab: Lab, name: str, **params: Any) -> RunResult:
    """Run experiment ``name`` with ``params`` in ``lab`` and return how it ended."""
    from .runner import prepare, run

    return run(lab, prepare(lab, name, params))


def read_run(run_id: str, lab: Lab) -> Any:
    """The MLflow run ``run_id`` read back from the lab's store."""
    from mlflow import MlflowClient

    return MlflowClient(lab.settings.tracking_uri).get_run(run_id)


__all__ = ["ISOLATED_VARIABLES", "make_lake", "read_run", "run_experiment"]
