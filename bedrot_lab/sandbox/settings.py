"""The ``[sandbox]`` table of ``bedrot-lab.toml``, parsed and checked: sizes, globs, quotas,
stale-file specs, the secrets rule's options.

Light on purpose: every command that opens a lake with a ``[sandbox]`` table loads
this module to check the table, and it loads none of the index, the rules or SQLite.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError

if TYPE_CHECKING:
    from ..config import Settings

DAY = 86400.0
SEVERITIES = ("info", "soft", "hard")
ACTIONS = ("archive", "delete")
#: quota scopes: the defaults' keys in [sandbox.quotas]
SCOPES = ("user", "project", "area", "total")
#: per-name override tables in [sandbox.quotas] -> the scope they override
OVERRIDES = {"users": "user", "projects": "project", "areas": "area"}
#: every key [sandbox] may hold (this module owns the table; see config.SCHEMA)
SANDBOX_KEYS = ("quotas", "stale", "stale_defaults", "keep", "secrets", "secret_max_bytes", "secret_ignore")
STALE_KEYS = ("name", "glob", "days", "action", "severity")
SECRET_CACHE_NAME = "secret-scan.db"
DEFAULT_SECRET_MAX_BYTES = 1 << 20

#: built-in stale rules, checked after the configured ones (first match wins)
DEFAULT_STALE: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("tmp", ("*.tmp", "*.temp", "*.swp", "*~", "tmp", "temp"), 7),
    ("cache", ("__pycache__", "*.pyc", ".cache", "cache", ".ipynb_checkpoints", ".pytest_cache"), 14),
    ("checkpoint", ("checkpoints", "checkpoint", "ckpt", "*.ckpt"), 30),
    # a run's workdir (ctx.workdir); clean leaves a RUNNING run's alone, so this ages finished runs' files
    ("workdir", ("/users/*/*/runs/*/*",), 30),
    ("default", ("**",), 90),
)


# -- sizes ----------------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtpe]?)(i?)(b?)\s*", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def parse_size(value: object, key: str | None = None, path: Path | None = None) -> int:
    """Bytes in ``value``: an integer, or a string such as ``"5GiB"``, ``"500MB"``, ``"10KiB"``.

    ``KiB``/``MiB``/... and bare ``K``/``M``/``G`` are powers of 1024 (as ``du``
    counts), ``KB``/``MB``/... powers of 1000; units are case-insensitive.
    Anything else raises :class:`ConfigError` naming ``path`` and ``key``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"a size cannot be negative, got {value!r}", path, key)
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match:
            number, prefix, binary, unit_b = match.groups()
            if prefix or not binary:  # "i" alone is not a unit
                base = 1000 if prefix and unit_b and not binary else 1024
                return int(float(number) * base ** _POWERS[prefix.lower()])
    raise ConfigError(
        f"not a size: {value!r}; use bytes (an integer) or a number with a unit, such as "
        "\"500MB\", \"10KiB\", \"5GiB\"", path, key)


def format_size(nbytes: float) -> str:
    """``nbytes`` in binary units, such as ``"5.0 GiB"`` (bytes stay whole: ``"512 B"``)."""
    value, unit = float(nbytes), 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{int(nbytes)} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def files_count(count: int) -> str:
    """``"1 file"``, ``"12,345 files"``."""
    return f"{count:,} file" if count == 1 else f"{count:,} files"


# -- globs ------------------------------------------------------------------------------------


def glob_regex(pattern: str) -> str:
    """The regular expression (for ``fullmatch``) of a sandbox glob.

    Paths are relative to the sandbox and ``/``-separated. ``*`` and ``?`` stay
    within a name, ``**`` spans folders, ``[...]`` is a class (``[!...]``
    negated). A glob matches anywhere in the path unless it starts with ``/``
    (then it is anchored at the sandbox root), and a glob that matches a folder
    matches everything below it: ``tmp``, ``tmp/**`` and ``**/tmp/**`` are the
    same rule.
    """
    anchored = pattern.startswith("/")
    body = pattern.strip("/")
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if body.startswith("**", i):
            i += 2
            if body.startswith("/", i):
                out.append("(?:[^/]*/)*")
                i += 1
            else:
                out.append(".*")
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[" and (end := body.find("]", i + 2)) != -1:
            inner = body[i + 1:end].replace("\\", "\\\\")
            out.append(f"[^/{inner[1:]}]" if inner.startswith("!") else f"[{inner}]")
            i = end + 1
        else:
            out.append(re.escape(char))
            i += 1
    return f"{'' if anchored else '(?:.*/)?'}(?:{''.join(out)})(?:/.*)?"


class GlobSet:
    """Sandbox globs (see :func:`glob_regex`) matched as one expression."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(patterns)
        self._each = [re.compile(glob_regex(p), re.DOTALL) for p in self.patterns]
        joined = "|".join(f"(?:{glob_regex(p)})" for p in self.patterns)
        self._all = re.compile(joined, re.DOTALL) if self.patterns else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r})"

    def match(self, path: str) -> bool:
        """True when one of the globs matches ``path`` (or a folder above it)."""
        return self._all is not None and self._all.fullmatch(path) is not None

    def first(self, path: str) -> str | None:
        """The first glob that matches ``path``, or None."""
        if not self.match(path):
            return None
        return next(p for p, rx in zip(self.patterns, self._each) if rx.fullmatch(path))


# -- quotas -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """A soft and a hard limit in bytes (None: no limit)."""

    soft: int | None = None
    hard: int | None = None

    def __bool__(self) -> bool:
        return self.soft is not None or self.hard is not None

    def broken(self, measured: int) -> tuple[str, int] | None:
        """(severity, limit) of the highest limit ``measured`` is over, or None."""
        if self.hard is not None and measured > self.hard:
            return ("hard", self.hard)
        if self.soft is not None and measured > self.soft:
            return ("soft", self.soft)
        return None


@dataclass(frozen=True)
class Quotas:
    """Limits per scope (``user``, ``project``, ``area``, ``total``), with per-name overrides.

    The default ``area`` limits apply to shared areas only, not to ``users/``
    (the sum of the personal workspaces) nor to files at the sandbox root; an
    explicit ``[sandbox.quotas.areas.<name>]`` applies to any area.
    """

    defaults: Mapping[str, Limits] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, Limits]] = field(default_factory=dict)

    def limits(self, scope: str, name: str | None = None) -> Limits:
        """The limits of ``name`` in ``scope`` (a user name, ``user/project``, an area name)."""
        if scope not in SCOPES:
            raise ValueError(f"quota scope {scope!r}: expected one of {', '.join(SCOPES)}")
        override = self.overrides.get(scope, {}).get(name or "")
        if override is not None:
            return override
        if scope == "area" and name in ("users", "", None):
            return Limits()
        return self.defaults.get(scope, Limits())

    def __bool__(self) -> bool:
        return any(self.defaults.values()) or any(v for table in self.overrides.values() for v in table.values())


# -- stale files ------------------------------------------------------------------------


@dataclass(frozen=True)
class StaleSpec:
    """Files matching ``globs`` are stale once unused for more than ``days``; ``sandbox
    clean`` then does ``action`` (``archive`` or ``delete``) to them."""

    name: str
    globs: GlobSet
    days: float
    action: str = "archive"
    severity: str = "soft"


# -- the [sandbox] table -------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxRules:
    """The sandbox's built-in rules, as ``[sandbox]`` in ``bedrot-lab.toml`` sets them."""

    quotas: Quotas = field(default_factory=Quotas)
    stale: tuple[StaleSpec, ...] = ()
    keep: GlobSet = field(default_factory=lambda: GlobSet(()))
    secrets: bool = True
    secret_max_bytes: int = DEFAULT_SECRET_MAX_BYTES
    secret_ignore: GlobSet = field(default_factory=lambda: GlobSet(()))
    secret_cache: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxRules:
        """Parse and check ``settings.sandbox``; a bad value raises :class:`ConfigError`
        naming the config file and the key (``sandbox.quotas.user.soft``). The same table
        gives the same object, parsed once per process (every run asks for it)."""
        text = json.dumps(settings.sandbox, sort_keys=True, default=str)
        return _parsed(text, settings.config_file, settings.state_dir / SECRET_CACHE_NAME)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], path: Path | None = None,
                   secret_cache: Path | None = None) -> SandboxRules:
        """Parse a raw ``[sandbox]`` table (``path`` is named in errors)."""
        _known(table, SANDBOX_KEYS, "sandbox", path)
        keep = GlobSet(_globs(table.get("keep", []), "sandbox.keep", path))
        configured = table.get("stale", [])
        if not isinstance(configured, list):
            raise ConfigError("expected a list of tables ([[sandbox.stale]])", path, "sandbox.stale")
        specs = [_stale_spec(item, n, path) for n, item in enumerate(configured)]
        if _bool(table.get("stale_defaults", True), "sandbox.stale_defaults", path):
            # a configured rule named like a built-in one takes its place in the order, so
            # redefining "default" (glob "**") does not shadow tmp, cache and checkpoint
            mine = {spec.name: spec for spec in specs}
            builtin = [mine.get(name) or StaleSpec(name, GlobSet(globs), days) for name, globs, days in DEFAULT_STALE]
            replaced = {spec.name for spec in builtin}
            specs = [spec for spec in specs if spec.name not in replaced] + builtin
        names = [spec.name for spec in specs]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate:
            raise ConfigError(f"two stale rules are named {duplicate!r}; give each its own name", path, "sandbox.stale")
        return cls(
            quotas=_quotas(table.get("quotas", {}), path),
            stale=tuple(specs),
            keep=keep,
            secrets=_bool(table.get("secrets", True), "sandbox.secrets", path),
            secret_max_bytes=parse_size(table.get("secret_max_bytes", DEFAULT_SECRET_MAX_BYTES),
                                        "sandbox.secret_max_bytes", path),
            secret_ignore=GlobSet(_globs(table.get("secret_ignore", []), "sandbox.secret_ignore", path)),
            secret_cache=secret_cache,
        )


@functools.lru_cache(maxsize=16)
def _parsed(table: str, path: Path | None, secret_cache: Path) -> SandboxRules:
    return SandboxRules.from_table(json.loads(table), path, secret_cache)


def _known(table: Mapping[str, Any], keys: Iterable[str], name: str, path: Path | None) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError("must be a table", path, name)
    keys = tuple(keys)
    for key in table:
        if key not in keys:
            raise ConfigError(f"unknown key; [{name}] takes {', '.join(keys)}", path, f"{name}.{key}")


def _bool(value: object, key: str, path: Path | None) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", path, key)
    return value


def _globs(value: object, key: str, path: Path | None) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) and item.strip("/") for item in items):
        raise ConfigError(f"expected a glob or a list of globs, got {value!r}", path, key)
    for item in items:
        try:
            re.compile(glob_regex(item))
        except re.error as exc:
            raise ConfigError(f"not a valid glob {item!r} ({exc})", path, key) from None
    return list(items)


def _limits(value: object, key: str, path: Path | None, base: Limits = Limits()) -> Limits:
    if not isinstance(value, Mapping):
        raise ConfigError('expected a table such as { soft = "5GiB", hard = "10GiB" }', path, key)
    _known(value, ("soft", "hard"), key, path)
    parsed = {}
    for level in ("soft", "hard"):
        raw = value.get(level)
        if raw is None:
            parsed[level] = getattr(base, level)
        elif isinstance(raw, str) and raw.strip().lower() in ("none", "unlimited"):
            parsed[level] = None
        else:
            parsed[level] = parse_size(raw, f"{key}.{level}", path)
    limits = Limits(parsed["soft"], parsed["hard"])
    if limits.soft is not None and limits.hard is not None and limits.soft > limits.hard:
        raise ConfigError(f"the soft limit ({format_size(limits.soft)}) is above the hard limit "
                          f"({format_size(limits.hard)})", path, key)
    return limits


def _quotas(table: object, path: Path | None) -> Quotas:
    _known(table, (*SCOPES, *OVERRIDES), "sandbox.quotas", path)
    assert isinstance(table, Mapping)
    defaults = {scope: _limits(table[scope], f"sandbox.quotas.{scope}", path)
                for scope in SCOPES if scope in table}
    overrides: dict[str, dict[str, Limits]] = {}
    for name, scope in OVERRIDES.items():
        entries = table.get(name, {})
        if not isinstance(entries, Mapping):
            raise ConfigError("must be a table of names", path, f"sandbox.quotas.{name}")
        overrides[scope] = {
            who: _limits(limits, f"sandbox.quotas.{name}.{who}", path, defaults.get(scope, Limits()))
            for who, limits in entries.items()}
    return Quotas(defaults, overrides)


def _stale_spec(item: object, number: int, path: Path | None) -> StaleSpec:
    where = f"sandbox.stale[{number}]"
    if not isinstance(item, Mapping):
        raise ConfigError("expected a table ([[sandbox.stale]])", path, where)
    _known(item, STALE_KEYS, where, path)
    if "glob" not in item or "days" not in item:
        raise ConfigError("a stale rule needs glob and days", path, where)
    globs = _globs(item["glob"], f"{where}.glob", path)
    days = item["days"]
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not days > 0 or math.isinf(days):
        raise ConfigError(f"expected a positive number of days, got {days!r}", path, f"{where}.days")
    action = item.get("action", "archive")
    if action not in ACTIONS:
        raise ConfigError(f"expected one of {', '.join(ACTIONS)}, got {action!r}", path, f"{where}.action")
    severity = item.get("severity", "soft")
    if severity not in SEVERITIES:
        raise ConfigError(f"expected one of {', '.join(SEVERITIES)}, got {severity!r}", path, f"{where}.severity")
    name = item.get("name", globs[0])
    if not isinstance(name, str) or not name:
        raise ConfigError(f"expected a name, got {name!r}", path, f"{where}.name")
    return StaleSpec(name, GlobSet(globs), float(days), action, severity)
