"""Lake settings: ``bedrot-lab.toml`` plus environment variables, as one typed object."""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

CONFIG_NAME = "bedrot-lab.toml"
STATE_DIR = ".bedrot-lab"
#: the values of ``[plugins] prefer``: the lake's plugins/ folders, or installed packages and built-ins
PREFER = ("lake", "installed")

#: zone key -> (default folder, the lake's historic environment variable)
ZONES: dict[str, tuple[str, str]] = {
    "landing": ("1_landing", "LANDING_ZONE"),
    "raw": ("2_raw", "RAW_ZONE"),
    "staging": ("3_staging", "STAGING_ZONE"),
    "curated": ("4_curated", "CURATED_ZONE"),
    "archive": ("5_archive", "ARCHIVE_ZONE"),
    "sandbox": ("sandbox", "SANDBOX_ZONE"),
}

#: every key the file may hold: table -> key -> expected Python type(s)
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "lake": {"name": str},
    "zones": {key: str for key in ZONES},
    "tracking": {
        "uri": str,
        "artifacts": str,
        "system_metrics": bool,
        "system_metrics_after": (int, float),
        "system_metrics_interval": (int, float),
        "store_wait": (int, float),
        "credentials": str,
    },
    "plugins": {"disabled": list, "paths": list, "prefer": str},
    "experiments": {"specs": str},
    "compute": {"memory_limit": str, "threads": int, "limits": dict},
}
#: the keys of ``[compute.limits]`` and of its per-user and per-experiment tables: what each
#: bounds per run (see docs/compute.md) and whether it takes a size or seconds; 0 switches it off
RUN_LIMIT_KEYS = {"memory": "size", "cpu_seconds": "seconds", "wall_seconds": "seconds", "workdir": "size"}
#: the sub-tables of ``[compute.limits]`` that override its keys for one user or one experiment
LIMIT_OVERRIDES = ("users", "experiments")
#: ``[compute] memory_limit`` when the file sets none: the share of RAM a query may hold before it spills
DEFAULT_MEMORY_LIMIT = "50%"
_MEMORY_LIMIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]i?B)\s*", re.IGNORECASE)


class ConfigError(UsageError):
    """A configuration problem, reported as one line naming the file and the key."""

    def __init__(self, message: str, path: Path | None = None, key: str | None = None):
        where = ": ".join(str(part) for part in (path, key) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.key = key


class LakeNotFound(ConfigError):
    """No lake root could be found from the arguments, the environment or the folders."""


@dataclass(frozen=True)
class LimitTables:
    """``[compute.limits]`` as the file sets it: the limits of every run (key -> value as written,
    a size string or seconds; 0 switches a limit off), and the tables overriding them for one user
    (``[compute.limits.users.<user>]``) or one experiment (``[compute.limits.experiments.<name>]``)."""

    every_run: Mapping[str, str | float] = field(default_factory=dict)
    users: Mapping[str, Mapping[str, str | float]] = field(default_factory=dict)
    experiments: Mapping[str, Mapping[str, str | float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.every_run or self.users or self.experiments)


@dataclass(frozen=True)
class Settings:
    """Everything bedrot-lab needs to know about one lake."""

    root: Path
    config_file: Path | None
    zones: Mapping[str, Path]
    tracking_uri: str
    artifact_root: Path
    plugin_paths: tuple[Path, ...] = ()
    disabled_plugins: tuple[str, ...] = ()
    prefer_plugins: str = ""  # "lake" or "installed": whose experiment wins a name both register
    specs_dir: Path | None = None
    system_metrics: bool = True
    system_metrics_after: float = 10.0
    system_metrics_interval: float = 10.0
    store_wait: float = 120.0
    #: a netrc-style file with the tracking server's login (``[tracking] credentials``), see credentials.py
    credentials_file: Path | None = None
    memory_limit: str = DEFAULT_MEMORY_LIMIT  # "4GB", "512MiB" or "50%" (of RAM)
    threads: int = 0  # 0: one per core
    #: ``[compute.limits]``, checked: the limits of every run and their overrides (see limits.py)
    run_limits: LimitTables = field(default_factory=LimitTables)
    user: str = field(default_factory=lambda: current_user())
    name: str = "bedrot"
    #: the other tables of the file, raw: each is claimed and checked by the feature that
    #: reads it (``register_settings``), once the plugins are loaded (see ``Lab``)
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def sandbox(self) -> Mapping[str, Any]:
        """The raw ``[sandbox]`` table (read by :mod:`bedrot_lab.sandbox`)."""
        return self.tables.get("sandbox", {})

    @property
    def tracking_uri_shown(self) -> str:
        """The tracking URI as messages print it: a password in it masked."""
        from .secrets import scrub

        return scrub(self.tracking_uri)[0]

    @property
    def state_dir(self) -> Path:
        """The lake's state folder: locks, indexes, logs."""
        return self.root / STATE_DIR

    def zone(self, key: str) -> Path:
        """The folder of zone ``key`` (landing, raw, staging, curated, archive, sandbox)."""
        return self.zones[key]

    @property
    def embedded_store(self) -> bool:
        """True when the tracking store is the lake's own SQLite file."""
        return self.tracking_uri == default_tracking_uri(self.root)


def current_user() -> str:
    """The user runs are recorded under: ``BEDROT_USER``, else the login name."""
    return os.environ.get("BEDROT_USER") or getpass.getuser()


def default_tracking_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def find_lake(start: Path, lake: str | Path | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """The lake root: ``lake`` if given, else ``BEDROT_LAKE``, else the nearest folder
    at or above ``start`` holding a ``bedrot-lab.toml``."""
    explicit = lake or env.get("BEDROT_LAKE")
    if explicit:
        root = Path(explicit).expanduser().resolve()
        if not root.is_dir():
            source = "--lake" if lake else "BEDROT_LAKE"
            raise LakeNotFound(f"{source} points to {root}, which is not a folder")
        return root
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / CONFIG_NAME).is_file():
            return folder
    raise LakeNotFound(
        f"no {CONFIG_NAME} in {start} or any folder above it; "
        "run `bedrot-lab init PATH`, or pass --lake PATH, or set BEDROT_LAKE"
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and check ``bedrot-lab.toml``'s core tables: unknown keys and wrong types are errors.
    Other tables are left to the features that claim them (``register_settings``)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror})", path) from None
    for table, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError("must be a table", path, table)
        if table not in SCHEMA:
            continue  # a feature's table: checked by the feature (Settings.tables)
        for key, value in values.items():
            expected = SCHEMA[table].get(key)
            name = f"{table}.{key}"
            if expected is None:
                raise ConfigError(f"unknown key; [{table}] takes {', '.join(SCHEMA[table])}", path, name)
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                raise ConfigError(f"expected {_type_name(expected)}, got {value!r}", path, name)
            if isinstance(value, list) and not all(isinstance(item, str) for item in value):
                raise ConfigError(f"expected a list of strings, got {value!r}", path, name)
            if isinstance(value, str) and table == "zones" and not value.strip():
                raise ConfigError("a zone folder cannot be empty", path, name)
            if name == "plugins.prefer" and value not in PREFER:
                raise ConfigError(f"expected {' or '.join(map(repr, PREFER))}, got {value!r}", path, name)
            if key.startswith("system_metrics_") and value <= 0:
                raise ConfigError(f"must be positive, got {value!r}", path, name)
            if name == "compute.memory_limit" and memory_limit_bytes(value) is None:
                raise ConfigError(f"expected a size such as \"4GB\", \"512MiB\" or \"50%\" (of RAM), got {value!r}",
                                  path, name)
            if name == "compute.threads" and value < 0:
                raise ConfigError(f"expected 0 (one per core) or more, got {value!r}", path, name)
            if name == "compute.limits":
                limit_tables(value, path)
    return data


def limit_tables(table: Mapping[str, Any], path: Path | None = None) -> LimitTables:
    """``[compute.limits]`` checked: a mistake is a :class:`ConfigError` naming ``path`` and the key."""
    every_run = _limit_values(table, path, "compute.limits", overrides=True)
    found: dict[str, dict[str, Mapping[str, str | float]]] = {}
    for kind in LIMIT_OVERRIDES:
        tables = table.get(kind, {})
        if not isinstance(tables, dict):
            raise ConfigError(f"expected tables such as [compute.limits.{kind}.NAME], got {tables!r}", path,
                              f"compute.limits.{kind}")
        found[kind] = {}
        for who, values in tables.items():
            key = f"compute.limits.{kind}.{who}"
            if not isinstance(values, dict):
                raise ConfigError(f"expected a table of limits ({', '.join(RUN_LIMIT_KEYS)}), got {values!r}",
                                  path, key)
            found[kind][who] = _limit_values(values, path, key)
    return LimitTables(every_run, found["users"], found["experiments"])


def _limit_values(table: Mapping[str, Any], path: Path | None, where: str,
                  overrides: bool = False) -> dict[str, str | float]:
    values: dict[str, str | float] = {}
    for key, value in table.items():
        name = f"{where}.{key}"
        if overrides and key in LIMIT_OVERRIDES:
            continue
        kind = RUN_LIMIT_KEYS.get(key)
        if kind is None:
            known = [*RUN_LIMIT_KEYS, *(f"[{where}.{sub}.NAME]" for sub in LIMIT_OVERRIDES if overrides)]
            raise ConfigError(f"unknown key; [{where}] takes {', '.join(known)}", path, name)
        if value == 0 and not isinstance(value, bool):
            values[key] = 0  # no limit (an override switching off a limit set for every run)
        elif kind == "seconds":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"expected seconds (a positive number, or 0 for no limit), got {value!r}",
                                  path, name)
            values[key] = value
        else:
            percent = key == "memory"  # a share of RAM is a memory size, never a disk size
            if not isinstance(value, str) or memory_limit_bytes(value) is None or (
                    not percent and value.strip().endswith("%")):
                shapes = '"4GB", "512MiB"' + (' or "25%" (of RAM)' if percent else "")
                raise ConfigError(f"expected a size such as {shapes}, or 0 for no limit; got {value!r}", path, name)
            values[key] = value.strip()
    return values


def memory_limit_bytes(limit: str) -> int | None:
    """``limit`` ("4GB", "512MiB", "50%" of RAM) in bytes, or None when it is not a size."""
    match = _MEMORY_LIMIT.fullmatch(limit)
    if not match:
        return None
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit == "%":
        if not 0 < number <= 100:
            return None
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * number / 100)
    power = "KMGT".index(unit[0]) + 1
    size = int(number * (1024 if "I" in unit else 1000) ** power)
    return size if size > 0 else None


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    names = {str: "a string", bool: "true or false", list: "a list", int: "a number", float: "a number",
             dict: "a table"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def load_settings(
    lake: str | Path | None = None,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] = os.environ,
) -> Settings:
    """Settings for the lake found from ``lake``, ``BEDROT_LAKE`` or the current folder.

    Precedence, lowest first: defaults, ``bedrot-lab.toml``, environment variables.
    """
    root = find_lake(cwd or Path.cwd(), lake, env)
    config_file = root / CONFIG_NAME
    data = read_config_file(config_file) if config_file.is_file() else {}
    return settings_from(root, data, config_file if config_file.is_file() else None, env)


def settings_from(
    root: Path, data: Mapping[str, Any], config_file: Path | None, env: Mapping[str, str] = os.environ
) -> Settings:
    """Build :class:`Settings` from an already-checked config mapping."""
    zone_names = data.get("zones", {})
    zones = {}
    for key, (default, variable) in ZONES.items():
        folder = env.get(variable) or zone_names.get(key) or default
        zones[key] = (root / folder).resolve() if not Path(folder).is_absolute() else Path(folder)

    tracking = data.get("tracking", {})
    artifacts = Path(tracking.get("artifacts", "mlruns"))
    artifact_root = artifacts if artifacts.is_absolute() else root / artifacts
    uri = env.get("MLFLOW_TRACKING_URI") or tracking.get("uri") or default_tracking_uri(root)

    plugins = data.get("plugins", {})
    plugin_paths = tuple(_under(root, p) for p in plugins.get("paths", ["plugins"]))
    specs = data.get("experiments", {}).get("specs", "experiments")

    return Settings(
        root=root,
        config_file=config_file,
        zones=zones,
        tracking_uri=uri,
        artifact_root=artifact_root,
        plugin_paths=plugin_paths,
        disabled_plugins=tuple(plugins.get("disabled", ())),
        prefer_plugins=plugins.get("prefer", ""),
        specs_dir=_under(root, specs),
        system_metrics=tracking.get("system_metrics", True),
        system_metrics_after=float(tracking.get("system_metrics_after", 10.0)),
        system_metrics_interval=float(tracking.get("system_metrics_interval", 10.0)),
        store_wait=float(tracking.get("store_wait", 120.0)),
        credentials_file=_under(root, tracking["credentials"]) if tracking.get("credentials") else None,
        memory_limit=data.get("compute", {}).get("memory_limit", DEFAULT_MEMORY_LIMIT),
        threads=data.get("compute", {}).get("threads", 0),
        run_limits=limit_tables(data.get("compute", {}).get("limits", {})),
        name=data.get("lake", {}).get("name", root.name),
        tables={table: values for table, values in data.items() if table not in SCHEMA},
    )


def _under(root: Path, folder: str) -> Path:
    path = Path(folder).expanduser()
    return path if path.is_absolute() else root / path


DEFAULT_CONFIG = """\
# bedrot-lab settings for this lake. Environment variables override them:
# BEDROT_LAKE, MLFLOW_TRACKING_URI, and LANDING_ZONE ... SANDBOX_ZONE.

[lake]
name = "{name}"

[zones]
landing = "1_landing"
raw = "2_raw"
staging = "3_staging"
curated = "4_curated"
archive = "5_archive"
sandbox = "sandbox"

[tracking]
# uri = "sqlite:///<lake>/mlruns/mlflow.db" by default; a server: "http://host:5000"
artifacts = "mlruns"
system_metrics = true         # MLflow system metrics for runs that last ...
system_metrics_after = 10     # ... longer than this many seconds
system_metrics_interval = 10  # seconds between samples
store_wait = 120              # seconds to wait for a store that other processes keep busy

[plugins]
paths = ["plugins"]
disabled = []
# prefer = "lake"             # or "installed": which wins an experiment name that both register

[experiments]
specs = "experiments"

[compute]
memory_limit = "50%"          # what a query (ctx.sql, ctx.aggregate) may hold in RAM before it
                              # spills to .bedrot-lab/spill/: "50%" of RAM, or a size: "4GB"
threads = 0                   # 0: one per core
"""
