"""The docs keep up with the code: every hook documented and tested, the CLI reference current."""

from __future__ import annotations

import inspect
import re

import pytest

from bedrot_lab import hookspecs
from bedrot_lab.cli.reference import render
from conftest import REPO

HOOKS = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "bedrot_lab_spec")]


def test_there_are_hooks():
    assert {"register_experiments", "register_datasets", "run_tags", "before_run"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_a_docs_section_and_a_test(hook):
    assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"hookspec {hook} has no docstring"
    docs = (REPO / "docs" / "hooks.md").read_text()
    assert re.search(rf"^## {hook}$", docs, re.M), f"docs/hooks.md has no section for {hook}"
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_docs.py")
    assert re.search(rf"def {hook}\(", tests), f"no test implements the hook {hook}"


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m bedrot_lab.cli.reference > docs/cli.md")
