"""One error family: every error the user can act on is a BedrotLabError with its exit code."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import bedrot_lab
from bedrot_lab.cli import user_error
from bedrot_lab.errors import BedrotLabError, UsageError

#: exceptions that never reach the user: each is caught where it is raised
INTERNAL = {"_Refused", "RunTerminated", "LockBusy", "CliError"}  # CliError is what the family becomes at the CLI


def defined_exceptions():
    for module in pkgutil.walk_packages(bedrot_lab.__path__, "bedrot_lab."):
        source = importlib.util.find_spec(module.name).origin
        tree = ast.parse(Path(source).read_text())
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exceeded", "Busy", "Found")):
                yield module.name, node.name


@pytest.mark.parametrize(("module", "name"), sorted(defined_exceptions()))
def test_every_error_belongs_to_the_family(module, name):
    if name in INTERNAL:
        return
    error = getattr(importlib.import_module(module), name)
    assert issubclass(error, BedrotLabError), f"{module}.{name} is not a BedrotLabError"


def test_exit_codes_come_from_the_error_not_its_text():
    from bedrot_lab.config import ConfigError
    from bedrot_lab.experiments import ParamError
    from bedrot_lab.lake import DatasetError

    assert user_error(ConfigError("bad key")).exit_code == 2
    assert user_error(ParamError("bad param")).exit_code == 2
    assert user_error(DatasetError("bad file")).exit_code == 1
    assert issubclass(UsageError, BedrotLabError) and UsageError.exit_code == 2
    assert user_error(ValueError("a bug")) is None


def test_the_public_api_is_complete_and_enough_for_the_lakes_plugins():
    """Every exported name resolves, and BEDROT's own plugins import nothing else of the framework."""
    import re

    for name in bedrot_lab.__all__:
        assert getattr(bedrot_lab, name) is not None, name
    plugins = Path(__file__).resolve().parents[1] / "plugins"
    allowed = {"bedrot_lab", "bedrot_lab.analysis", "bedrot_lab.testing"}
    for path in plugins.glob("*.py"):
        for module in re.findall(r"^\s*(?:from|import) (bedrot_lab[\w.]*)", path.read_text(), re.M):
            assert module in allowed or module.startswith("bedrot_lab.analysis."), f"{path.name} imports {module}"
