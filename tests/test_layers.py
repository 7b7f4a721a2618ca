"""The layers hold: the core imports no feature, and nothing outside the sandbox imports it.
Built-in features reach the core through hooks, as a third-party plugin would."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bedrot_lab.testing import make_lake

PACKAGE = Path(__file__).resolve().parents[1] / "bedrot_lab"
CORE = {"config", "plugins", "hookspecs", "experiments", "runner", "tracking", "lake", "errors", "fsutil", "jobs",
        "context", "lab", "specs", "secrets", "locks", "statedb", "query", "credentials", "processes", "limits"}
FEATURES = ("bedrot_lab.sandbox", "bedrot_lab.promotion", "bedrot_lab.contracts", "bedrot_lab.daemon",
            "bedrot_lab.server", "bedrot_lab.notebooks")


def runtime_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it runs (not those under ``if TYPE_CHECKING:``), absolute."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def modules(where: Path = PACKAGE) -> list[Path]:
    return sorted(where.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_outside_the_sandbox_imports_it(path: Path):
    if path.is_relative_to(PACKAGE / "sandbox"):
        return
    assert not {m for m in runtime_imports(path) if m.startswith("bedrot_lab.sandbox")}


@pytest.mark.parametrize("name", sorted(CORE))
def test_the_core_imports_no_feature(name: str):
    imported = runtime_imports(PACKAGE / f"{name}.py")
    assert not {m for m in imported if m.startswith(FEATURES)}


LOADED = """
import sys
from bedrot_lab.cli import main
sys.argv = ["bedrot-lab", "experiments", "list"]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
print(" ".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("sandbox_table", [False, True])
def test_listing_experiments_loads_no_sandbox_machinery(tmp_path: Path, bedrot_env, sandbox_table: bool):
    """Only the sandbox's plugin entry (its hooks) loads, and with a [sandbox] table the
    parser of that table: never the index, the rules, the watcher, SQLite or MLflow."""
    lake = make_lake(tmp_path / "lake")
    if sandbox_table:
        with (lake / "bedrot-lab.toml").open("a") as config:
            config.write('\n[sandbox.quotas]\nuser = { soft = "5GiB", hard = "10GiB" }\n')
    env = {**os.environ, "BEDROT_LAKE": str(lake)}
    out = subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True, env=env, check=True)
    loaded = set(out.stdout.strip().splitlines()[-1].split())
    sandbox = {m for m in loaded if m.startswith("bedrot_lab.sandbox")}
    allowed = {"bedrot_lab.sandbox", "bedrot_lab.sandbox.hooks", "bedrot_lab.sandbox.violation_sinks"}
    if sandbox_table:
        allowed.add("bedrot_lab.sandbox.settings")
    assert sandbox <= allowed
    assert not loaded & {"sqlite3", "mlflow", "pandas", "watchdog"}
