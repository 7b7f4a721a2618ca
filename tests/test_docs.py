"""The docs keep up with the code: every hook documented and tested, the CLI reference current."""

from __future__ import annotations

import inspect
import re

import pytest
from conftest import REPO

from bedrot_lab import hookspecs
from bedrot_lab.cli.reference import render, render_hooks

HOOKS = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "bedrot_lab_spec")]


def test_there_are_hooks():
    assert {"register_experiments", "register_datasets", "run_tags", "before_run"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring_with_arguments_and_an_example_and_a_test(hook):
    spec = getattr(hookspecs, hook)
    doc = spec.__doc__ or ""
    assert doc.strip(), f"hookspec {hook} has no docstring"
    assert "Example::" in doc, f"hookspec {hook} has no example"
    for argument in inspect.signature(spec).parameters:
        assert re.search(rf"^\s+{argument}: ", doc, re.M), f"hookspec {hook} does not describe {argument!r}"
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != "test_docs.py")
    assert re.search(rf"def {hook}\(", tests), f"no test implements the hook {hook}"


def test_hook_reference_is_current():
    docs = (REPO / "docs" / "hooks.md").read_text()
    assert docs == render_hooks(), "docs/hooks.md is stale: python -m bedrot_lab.cli.reference hooks > docs/hooks.md"
    for hook in HOOKS:
        signature = f"{hook}{inspect.signature(getattr(hookspecs, hook))}"
        assert f"## {hook}\n\n`{signature}`" in docs


def test_cli_reference_is_current():
    assert (REPO / "docs" / "cli.md").read_text() == render(), (
        "docs/cli.md is stale: python -m bedrot_lab.cli.reference > docs/cli.md")
