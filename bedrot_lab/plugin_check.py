"""``bedrot-lab plugins check``: load every plugin strictly and find each mistake in it."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .experiments import Experiment
from .lab import Lab
from .lake import Dataset
from .plugins import PluginHost, PluginInfo, Problem, call_each, close_names, duplicate_dataset

#: the run context's readers: method -> its arguments by position, and those that name columns
READERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "load": (("name", "columns"), ("columns",)),
    "load_text": (("name",), ()),
    "dataset_path": (("name",), ()),
    "aggregate": (("name", "by", "sums"), ("by", "sums")),
}


@dataclass
class PluginReport:
    """One plugin and the problems found in it."""

    info: PluginInfo
    problems: list[Problem]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.info.name, "source": self.info.source, "location": self.info.location,
                "status": "problems" if self.problems else "ok",
                "problems": [problem.to_dict() for problem in self.problems]}


def check_plugins(settings: Settings, only: str | None = None) -> list[PluginReport]:
    """Load the lake's plugins (built-ins, entry points, its plugin folders) recording every
    problem instead of warning about it, then check what they register against the catalog.
    One report per plugin (built-ins only when ``only`` names one); a plugin that is disabled
    is not checked."""
    host = PluginHost()
    host.checking = True
    host.load(settings.plugin_paths, settings.disabled_plugins)
    lab = Lab(settings, host)
    Checker(lab).run()
    reports = [PluginReport(info, host.problems.get(info.name, [])) for info in host.infos.values()
               if not info.disabled and (info.source != "builtin" or only == info.name)]
    return [report for report in reports if only is None or report.info.name == only]


class Checker:
    """The checks that need the whole lab: names registered twice, data sets and columns
    that are not in the catalog, hooks called with positional arguments."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.host = lab.plugins

    def run(self) -> None:
        _ = self.lab.experiments, self.lab.datasets  # a register_* hook that raises is recorded here
        experiments = registrations(self.host, "register_experiments")
        datasets = registrations(self.host, "register_datasets")
        self.check_duplicate_experiments(experiments)
        self.check_duplicate_datasets(datasets)
        for plugin, items in experiments.items():
            for item in items:
                if isinstance(item, Experiment):
                    self.check_datasets_used(plugin, item)
        for info in self.host.infos.values():
            if info.source != "builtin" and self.host.pm.get_plugin(info.name) is not None:
                self.check_hook_calls(info)

    def check_duplicate_experiments(self, experiments: dict[str, list[Any]]) -> None:
        for plugin, items in experiments.items():
            for item in items:
                if isinstance(item, Experiment) and item.name in self.lab.conflicts:
                    self.host.problem(plugin, "duplicate-experiment", self.lab.conflicts[item.name], where(item.func))

    def check_duplicate_datasets(self, datasets: dict[str, list[Any]]) -> None:
        owners: dict[str, list[PluginInfo]] = {}
        for plugin, items in datasets.items():
            info = self.host.info(plugin)
            for item in items:
                if isinstance(item, Dataset) and info.source != "builtin":
                    owners.setdefault(item.name, []).append(info)
        for name, infos in owners.items():
            if len(infos) > 1:
                for info in infos:
                    self.host.problem(info.name, "duplicate-dataset", duplicate_dataset(name, infos))

    def check_datasets_used(self, plugin: str, experiment: Experiment) -> None:
        """The data sets ``experiment`` declares and the ones its function reads by a literal
        name (``ctx.load("name", columns=[...])``), with their columns, are in the catalog."""
        for name in experiment.datasets:
            self._check_dataset(plugin, experiment, name, where(experiment.func), "declares")
        for name, columns, line in dataset_uses(experiment.func):
            if not self._check_dataset(plugin, experiment, name, line, "reads"):
                continue
            known = self.columns_of(self.lab.datasets[name])
            for column in columns:
                if known and column not in known:
                    self.host.problem(plugin, "unknown-column", (
                        f"experiment {experiment.name!r} reads column {column!r} of data set {name!r}, which has "
                        f"no such column{close_names(column, known) or ';'} its columns: {', '.join(sorted(known))}"),
                        line)

    def _check_dataset(self, plugin: str, experiment: Experiment, name: str, line: str, verb: str) -> bool:
        if name in self.lab.datasets:
            return True
        self.host.problem(plugin, "unknown-dataset", (
            f"experiment {experiment.name!r} {verb} data set {name!r}, which is not in the catalog"
            f"{close_names(name, self.lab.datasets) or ';'} known: {', '.join(self.lab.datasets) or 'none'}; "
            "fix the name, or register the data set (hook register_datasets)"), line)
        return False

    def columns_of(self, dataset: Dataset) -> set[str]:
        """The columns ``dataset`` declares, and those its file has when it is there."""
        columns = set(dataset.columns)
        try:
            path = dataset.locate(self.lab.settings)
            if dataset.format == "csv":
                from .lake import csv_header

                columns |= set(csv_header(dataset, path))
            elif dataset.format == "parquet":
                import pyarrow.parquet as pq

                columns |= set(pq.read_schema(path).names)
        except Exception:  # no file here: the declared columns are all there is to go by
            pass
        return columns

    def check_hook_calls(self, info: PluginInfo) -> None:
        """A hook the plugin's code calls with positional arguments (pluggy takes them by name)."""
        specs = {name: caller.spec for name, caller in vars(self.host.pm.hook).items()
                 if getattr(caller, "spec", None) is not None}
        for file in source_files(info, self.host.pm.get_plugin(info.name)):
            try:
                tree = ast.parse(file.read_text(), str(file))
            except (OSError, SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
                        and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "hook"):
                    hook = node.func.attr
                    names = specs[hook].argnames if hook in specs else ()
                    self.host.problem(info.name, "positional-hook-call", (
                        f"calls hook {hook} with positional arguments; hooks take arguments by name: "
                        f"hook.{hook}({', '.join(f'{name}=...' for name in names)})"), f"{file}:{node.lineno}")


def registrations(host: PluginHost, hook_name: str) -> dict[str, list[Any]]:
    """What each plugin registers through collecting hook ``hook_name`` (a plugin whose call
    raises is left out: :meth:`PluginHost.collect` records that)."""
    found: dict[str, list[Any]] = {}
    registered: list[Any] = []

    def register(*arguments: Any) -> None:
        registered.append(arguments[0] if len(arguments) == 1 else arguments)

    for call in call_each(getattr(host.hook, hook_name), register=register):
        if call.error is None:
            found.setdefault(call.plugin, []).extend(registered)
        registered.clear()
    return found


def dataset_uses(func: Callable[..., Any]) -> Iterator[tuple[str, list[str], str]]:
    """The data sets an experiment function reads by a literal name through its context
    (``ctx.load("name", columns=[...])``, ``ctx.aggregate``...): name, the literal columns
    it asks for, and ``file:line``."""
    try:
        lines, start = inspect.getsourcelines(func)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        context = next(iter(inspect.signature(func).parameters))
        file = inspect.getsourcefile(func)
    except (OSError, TypeError, SyntaxError, StopIteration, ValueError):
        return
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in READERS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == context):
            continue
        positions, column_arguments = READERS[node.func.attr]
        arguments = {**dict(zip(positions, node.args)), **{k.arg: k.value for k in node.keywords if k.arg}}
        name = _literal(arguments.get("name"))
        if not isinstance(name, str):
            continue
        columns: list[str] = []
        for argument in column_arguments:
            value = _literal(arguments.get(argument))
            columns += [value] if isinstance(value, str) else [c for c in value or () if isinstance(c, str)]
        yield name, columns, f"{file}:{start + node.lineno - 1}"


def _literal(node: ast.AST | None) -> Any:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def source_files(info: PluginInfo, plugin: Any) -> list[Path]:
    """The Python files of a plugin: its file, or every file of its package."""
    origin = Path(info.location) if info.source == "path" else Path(getattr(plugin, "__file__", "") or ".")
    if origin.name == "__init__.py":
        origin = origin.parent
    if origin.is_dir():
        return sorted(origin.rglob("*.py"))
    return [origin] if origin.suffix == ".py" and origin.is_file() else []


def where(func: Callable[..., Any]) -> str:
    """``file:line`` where ``func`` is defined, or ""."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else ""
