"""A lake opened for work: its settings, its plugins, and what the plugins contribute."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import SCHEMA as CORE_TABLES
from .config import ConfigError, Settings, load_settings
from .errors import UsageError
from .experiments import Experiment
from .jobs import HousekeepingJob
from .lake import Dataset, DatasetError
from .plugins import (
    PluginError,
    PluginHost,
    PluginInfo,
    call_each,
    close_names,
    describe,
    duplicate_dataset,
    make_plugin_host,
)

if TYPE_CHECKING:
    import pandas as pd

    from .tracking import Store

log = logging.getLogger(__name__)


class UnknownExperiment(UsageError, LookupError):
    """No plugin registered an experiment of that name."""


class Lab:
    """Settings plus a loaded plugin manager; the catalogs are built on first use."""

    def __init__(self, settings: Settings, plugins: PluginHost | None = None):
        self.settings = settings
        self.plugins = plugins or make_plugin_host(settings.plugin_paths, settings.disabled_plugins)
        #: experiment name -> why it cannot be used (more than one plugin registers it)
        self.conflicts: dict[str, str] = {}
        #: housekeeping job name -> the plugin that registered it
        self.job_plugins: dict[str, str] = {}
        #: shows the progress of a long query (``ctx.sql``) when set: a terminal's status line
        self.progress: Callable[[str | None], None] | None = None
        self.check_tables()

    def check_tables(self) -> None:
        """Have each feature check its table of ``bedrot-lab.toml`` (``register_settings``);
        a table no plugin claims is a :class:`ConfigError` naming it."""
        checks: dict[str, Callable[[Mapping[str, Any], Path | None], None]] = {}
        for _, claimed in self.plugins.collect("register_settings", _check_claim):
            checks.update(claimed)
        path = self.settings.config_file
        for table, values in self.settings.tables.items():
            if table not in checks:
                known = ", ".join([*CORE_TABLES, *sorted(checks)])
                raise ConfigError(f"unknown table; expected one of {known} (or a plugin that reads it is "
                                  "not loaded: see `bedrot-lab plugins list`)", path, f"[{table}]")
            checks[table](values, path)

    @classmethod
    def open(cls, lake: str | Path | None = None) -> Lab:
        """Open the lake found from ``lake``, ``BEDROT_LAKE`` or the current folder."""
        return cls(load_settings(lake))

    @cached_property
    def store(self) -> Store:
        """The lake's MLflow tracking store, opened (and created if new) on first use."""
        from .tracking import Store

        return Store(self.settings)

    @cached_property
    def experiments(self) -> dict[str, Experiment]:
        """Every registered experiment by name, each stamped with its plugin's name. A name
        that more than one plugin registers is left out and kept in :attr:`conflicts`."""
        registered: dict[str, list[Experiment]] = {}
        for info, items in self.plugins.collect("register_experiments", _check_experiment):
            for item in items:
                registered.setdefault(item.name, []).append(Experiment(**{**item.__dict__, "plugin": info.name}))
        registered = {name: self._preferred(same) for name, same in registered.items()}
        for name, same in registered.items():
            if len(same) > 1:
                owners = [f"{e.plugin!r} ({self.plugin_info(e.plugin).location})" for e in same]
                remedy = "rename one"
                if len({self._side(e) for e in same}) > 1:
                    remedy += ', or say which wins in bedrot-lab.toml: [plugins] prefer = "lake" or "installed"'
                self.conflicts[name] = (f"experiment {name!r} is registered by more than one plugin: "
                                        f"{', '.join(owners[:-1])} and {owners[-1]}; {remedy}")
        return {name: same[0] for name, same in sorted(registered.items()) if len(same) == 1}

    def _side(self, experiment: Experiment) -> str:
        """Where the experiment's plugin comes from, as ``[plugins] prefer`` names it."""
        return "lake" if self.plugin_info(experiment.plugin).source == "path" else "installed"

    def _preferred(self, same: list[Experiment]) -> list[Experiment]:
        """Of the experiments of one name, the one from the side ``[plugins] prefer`` names, if
        exactly one is; else all of them."""
        preferred = [e for e in same if self._side(e) == self.settings.prefer_plugins]
        return preferred if len(same) > 1 and len(preferred) == 1 else same

    @cached_property
    def datasets(self) -> dict[str, Dataset]:
        """The data set catalog; the first plugin to register a name wins (built-ins come last)."""
        found: dict[str, Dataset] = {}
        owners: dict[str, list[PluginInfo]] = {}
        for info, items in self.plugins.collect("register_datasets"):
            for item in items:
                found.setdefault(item.name, item)
                if info.source != "builtin":  # a plugin's data set replacing a built-in one is on purpose
                    owners.setdefault(item.name, []).append(info)
        for name, infos in owners.items():
            if len(infos) > 1 and not self.plugins.checking:  # plugins check reports it per plugin
                log.warning(duplicate_dataset(name, infos))
        return dict(sorted(found.items()))

    @cached_property
    def jobs(self) -> dict[str, HousekeepingJob]:
        """Every housekeeping job by name (``housekeeping_jobs``). A name that more than one
        plugin registers is left out, with one line naming the plugins; :attr:`job_plugins`
        says which plugin registered each job."""
        registered: dict[str, list[tuple[str, HousekeepingJob]]] = {}
        for info, items in self.plugins.collect("housekeeping_jobs", _check_job):
            for item in items:
                registered.setdefault(item.name, []).append((info.name, item))
        jobs = {}
        for name, found in sorted(registered.items()):
            if len(found) > 1:
                log.error("housekeeping job %r is registered by more than one plugin: %s; rename one", name,
                          ", ".join(repr(plugin) for plugin, _ in found))
                continue
            self.job_plugins[name], jobs[name] = found[0]
        return jobs

    def plugin_infos(self) -> list[PluginInfo]:
        """Every plugin's :class:`PluginInfo`, once the catalogs are built, so that a plugin
        failing in a collecting hook shows as failed."""
        _ = self.experiments, self.datasets
        return list(self.plugins.infos.values())

    def experiment(self, name: str, *, runnable: bool = True) -> Experiment:
        """Experiment ``name``; with ``runnable``, a :class:`PluginError` if it cannot run here
        (a module it requires is not installed: the message says what to install)."""
        try:
            found = self.experiments[name]
        except KeyError:
            if name in self.conflicts:
                raise PluginError(self.conflicts[name]) from None
            known = ", ".join(self.experiments) or "none; add a plugin to the lake's plugins/ folder"
            raise UnknownExperiment(f"no experiment named {name!r}; known: {known}") from None
        if runnable and found.unavailable:
            raise PluginError(f"experiment {name!r} cannot run here: {found.unavailable}")
        return found

    def runnable(self, target: str | Path) -> Experiment:
        """What ``bedrot-lab run TARGET`` runs: the experiment named ``target``, else the file
        ``target`` (a notebook, a script) as the experiment a plugin makes of it
        (``experiment_from_file``). A path that is no file, or a file no plugin runs, is a
        :class:`UsageError` naming it."""
        if isinstance(target, str) and target in self.experiments:
            return self.experiment(target)
        path = Path(target).expanduser()
        if not path.is_file():
            if isinstance(target, str) and "/" not in target and not path.suffix:
                return self.experiment(target)  # a name: the catalog's error lists the known ones
            raise UsageError(f"{target}: no such file (and no experiment of that name)")
        path = path.resolve()
        for call in call_each(self.plugins.hook.experiment_from_file, path=path, settings=self.settings):
            if call.error is not None:
                raise PluginError(f"plugin {call.plugin!r} could not make an experiment of {path}: "
                                  f"{describe(call.error)}")
            if call.result is not None:
                if not isinstance(call.result, Experiment):
                    raise PluginError(f"plugin {call.plugin!r} returned {call.result!r} for {path}; "
                                      "experiment_from_file returns what @experiment returns, or None")
                return Experiment(**{**call.result.__dict__, "plugin": call.plugin})
        raise UsageError(f"{path}: no plugin runs {path.suffix or 'such'} files; bedrot-lab runs notebooks "
                         "(.ipynb) and Python scripts (.py), and experiments by name")

    def dataset(self, name: str) -> Dataset:
        try:
            return self.datasets[name]
        except KeyError:
            raise DatasetError(
                f"no data set named {name!r} in the catalog{close_names(name, self.datasets) or ';'} "
                f"known: {', '.join(self.datasets)}"
            ) from None

    def plugin_info(self, name: str) -> PluginInfo:
        return self.plugins.infos.get(name) or PluginInfo(name, "", "")

    def load(self, name: str) -> pd.DataFrame:
        """Read catalog data set ``name`` (without a run; ``ctx.load`` also records it)."""
        from .lake import read_dataset

        dataset = self.dataset(name)
        return read_dataset(dataset, dataset.locate(self.settings))


def _check_claim(item: object) -> None:
    if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1])):
        raise TypeError(f"registered {item!r}; register takes a table name and a check(values, path) function")


def _check_job(item: object) -> None:
    if not isinstance(item, HousekeepingJob):
        raise TypeError(f"registered {item!r}; register takes a HousekeepingJob")


def _check_experiment(item: object) -> None:
    if not isinstance(item, Experiment):
        raise TypeError(f"registered {item!r}; register takes what @experiment returns")
