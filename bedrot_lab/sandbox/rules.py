"""The sandbox's rules (quotas, stale files, secrets), read from ``[sandbox]`` and checked against the usage index."""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import re
import sqlite3
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..config import ConfigError
from ..fsutil import open_nofollow
from ..secrets import DETECTORS, is_secret_name
from ..statedb import db_text, from_db_text, migrate

if TYPE_CHECKING:
    from ..config import Settings
    from .index import FileRecord, Owner, UsageIndex

log = logging.getLogger(__name__)

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


# -- violations and the Rule protocol ------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """One thing that breaks a rule now.

    ``rule`` names the rule (``"quota.user"``, ``"stale.tmp"``, ``"secrets"``, or
    a plugin's, which starts with the plugin rule's ``name``); ``subject`` what
    breaks it (``"user:ana"``, ``"project:ana/churn"``, ``"area:analysis"``,
    ``"sandbox"``, or ``"<path>:<line>"`` for a secret). (rule, subject) is the
    violation's identity in the store. ``measured`` and ``limit`` are in the
    rule's unit (bytes for quotas, days for stale files); ``detail`` is one
    human sentence, never a secret. ``path`` (relative to the sandbox) and
    ``line`` locate it when it has a place.
    """

    rule: str
    subject: str
    measured: float
    limit: float
    severity: str
    detail: str = ""
    path: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: expected one of {', '.join(SEVERITIES)}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.subject)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class Rule(Protocol):
    """A sandbox rule, built in or returned by a plugin's ``sandbox_rules`` hook.

    ``name`` is unique among the rules; every violation it yields has
    ``rule == name`` or ``rule`` starting with ``name + "."``, which is how the
    store knows whose open violations to keep when the rule fails. A plugin
    rule named like a built-in one (``quota``, ``stale``, ``secrets``) replaces it.
    """

    name: str

    def evaluate(self, index: UsageIndex, now: float) -> Iterable[Violation]:
        """The violations in the sandbox that ``index`` describes, at time ``now``."""
        ...


def owns(rule_name: str, violation_rule: str) -> bool:
    """True when a violation named ``violation_rule`` comes from the rule ``rule_name``."""
    return violation_rule == rule_name or violation_rule.startswith(rule_name + ".")


def subject_of(owner: Owner) -> str:
    """The subject a file's owner is reported as: ``project:ana/churn``, ``user:ana``,
    ``area:analysis`` (``area:users`` for ``users/`` itself), or ``sandbox``."""
    if owner.user and owner.project:
        return f"project:{owner.user}/{owner.project}"
    if owner.user:
        return f"user:{owner.user}"
    return f"area:{owner.area}" if owner.area else "sandbox"


def folder_of(owner: Owner) -> str:
    """The sandbox folder an owner stands for (``""`` is the sandbox root)."""
    if owner.area == "users":
        return "/".join(part for part in ("users", owner.user, owner.project) if part)
    return owner.area


def file_age(record: FileRecord, now: float) -> float:
    """Seconds since ``record`` was last used, as systemd-tmpfiles counts it: from the
    newest of its atime, mtime and ctime."""
    return now - max(record.atime, record.mtime, record.ctime)


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


class QuotaRule:
    """Soft and hard size limits per user, project, shared area and the whole sandbox,
    from the index's totals. Violations: ``quota.user`` (subject ``user:<name>``),
    ``quota.project`` (``project:<user>/<project>``), ``quota.area`` (``area:<name>``),
    ``quota.total`` (``sandbox``); measured and limit in bytes."""

    name = "quota"

    def __init__(self, quotas: Quotas):
        self.quotas = quotas

    def evaluate(self, index: UsageIndex, now: float) -> Iterator[Violation]:
        for row in index.usage("user"):
            yield from self.check("user", row["user"], row["bytes"], row["files"])
        for row in index.usage("project"):
            yield from self.check("project", f"{row['user']}/{row['project']}", row["bytes"], row["files"])
        for row in index.usage("area"):
            if row["area"]:
                yield from self.check("area", row["area"], row["bytes"], row["files"])
        nbytes, nfiles = index.total()
        yield from self.check("total", None, nbytes, nfiles)

    def check(self, scope: str, name: str | None, nbytes: int, nfiles: int) -> Iterator[Violation]:
        """The violation (if any) of ``name`` in ``scope`` holding ``nbytes`` in ``nfiles``."""
        broken = self.quotas.limits(scope, name).broken(nbytes)
        if broken is None:
            return
        severity, limit = broken
        subject = f"{scope}:{name}" if name is not None else "sandbox"
        who = f"{scope} {name}" if name is not None else "the sandbox"
        yield Violation(
            f"quota.{scope}", subject, nbytes, limit, severity,
            f"{who} holds {format_size(nbytes)} in {files_count(nfiles)}, over its {severity} limit "
            f"of {format_size(limit)}",
            path=folder_of_scope(scope, name))


def folder_of_scope(scope: str, name: str | None) -> str:
    """The sandbox folder a quota subject stands for."""
    if scope in ("user", "project"):
        return f"users/{name}"
    return name if scope == "area" and name else ""


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


@dataclass(frozen=True)
class StaleFile:
    """A stale file: its index record, the rule it falls under and its age in days."""

    record: FileRecord
    spec: StaleSpec
    age_days: float


class Pins:
    """What must stay: files matching a ``keep`` glob, and files in a folder (or below
    one) holding a ``.keep`` file. ``has_file(path)`` tells whether a file exists
    (from the index); folder answers are remembered."""

    def __init__(self, keep: GlobSet, has_file: Callable[[str], bool]):
        self.keep = keep
        self.has_file = has_file
        self._folders: dict[str, str | None] = {}

    def reason(self, path: str) -> str | None:
        """Why ``path`` is pinned (``"keep glob 'final'"``, ``"users/ana/.keep"``), or None."""
        glob = self.keep.first(path)
        if glob is not None:
            return f"keep glob {glob!r}"
        keep = self._kept(path.rpartition("/")[0])
        return keep

    def _kept(self, folder: str) -> str | None:
        chain = []
        found: str | None = None
        while True:
            if folder in self._folders:
                found = self._folders[folder]
                break
            chain.append(folder)
            marker = f"{folder}/.keep" if folder else ".keep"
            if self.has_file(marker):
                found = marker
                break
            if not folder:
                break
            folder = folder.rpartition("/")[0]
        for seen in chain:
            self._folders[seen] = found
        return found


class StaleRule:
    """Files unused (newest of atime, mtime, ctime) for longer than their glob's days,
    grouped per rule and owner: violation ``stale.<spec name>``, subject as
    :func:`subject_of`, measured the oldest file's age and limit the spec's days.
    One violation per folder owner rather than per file, so a sandbox with a
    million old files raises a few dozen alerts, not a million; the files
    themselves come from :meth:`stale_files`."""

    name = "stale"

    def __init__(self, specs: Iterable[StaleSpec], keep: GlobSet):
        self.specs = tuple(specs)
        self.keep = keep
        # one expression, a named group per rule: the regex engine tries the rules in order
        alternatives = [f"(?P<s{n}>{'|'.join(f'(?:{glob_regex(p)})' for p in spec.globs.patterns)})"
                        for n, spec in enumerate(self.specs) if spec.globs]
        self._first = re.compile("|".join(alternatives), re.DOTALL) if alternatives else None

    def spec_for(self, path: str) -> StaleSpec | None:
        """The first stale rule whose globs match ``path``."""
        found = self._first.fullmatch(path) if self._first is not None else None
        return self.specs[int(found.lastgroup[1:])] if found else None

    def stale_files(self, index: UsageIndex, now: float | None = None, *, under: str = "",
                    older_than: float | None = None) -> Iterator[StaleFile]:
        """Every stale, unpinned file at or below ``under``. ``older_than`` (days), when
        given, replaces every rule's own days (the rule still gives the action)."""
        now = time.time() if now is None else now
        if not self.specs:
            return
        pins = Pins(self.keep, lambda p: index.get(p) is not None)
        shortest = older_than if older_than is not None else min(spec.days for spec in self.specs)
        for record in index.files(under, unused_before=now - shortest * DAY):  # younger ones cannot be stale
            spec = self.spec_for(record.path)
            if spec is None:
                continue
            age = file_age(record, now) / DAY
            if age <= (spec.days if older_than is None else older_than):
                continue
            if pins.reason(record.path) is None:
                yield StaleFile(record, spec, age)

    def evaluate(self, index: UsageIndex, now: float) -> Iterator[Violation]:
        groups: dict[tuple[str, str], list[Any]] = {}
        for stale in self.stale_files(index, now):
            key = (stale.spec.name, subject_of(stale.record.owner))
            group = groups.get(key)
            if group is None:
                groups[key] = [stale.spec, folder_of(stale.record.owner), 1, stale.record.size, stale.age_days]
            else:
                group[2] += 1
                group[3] += stale.record.size
                group[4] = max(group[4], stale.age_days)
        for (name, subject), (spec, folder, count, nbytes, oldest) in groups.items():
            yield Violation(
                f"stale.{name}", subject, round(oldest, 2), spec.days, spec.severity,
                f"{files_count(count)} ({format_size(nbytes)}) unused for more than {spec.days:g} days, "
                f"the oldest for {oldest:.0f} days; `sandbox clean` will {spec.action} "
                f"{'it' if count == 1 else 'them'}",
                path=folder)


# -- secrets --------------------------------------------------------------------------------

_NEWLINE = re.compile("\n")
_PLACEHOLDER = r"(?:your|change|replace|example|dummy|placeholder|redacted|xxx|\*\*\*)"

#: kind -> pattern, beyond the shapes of secrets.DETECTORS, for whole files (re.MULTILINE)
FILE_PATTERNS: dict[str, re.Pattern[str]] = {
    "browser cookie export": re.compile(
        r"^#[ \t]*(?:Netscape[ \t]+)?HTTP[ \t]+Cookie[ \t]+File"
        r"|^(?:#HttpOnly_)?\.?[A-Za-z0-9.-]+\t(?:TRUE|FALSE)\t\S*\t(?:TRUE|FALSE)\t\d+\t[^\t\n]+\t\S",
        re.MULTILINE | re.IGNORECASE),
    ".env value": re.compile(
        r"^[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*(?![ \t]*(?:#|$|\"\"|''|\$))\S",
        re.MULTILINE),
    # stricter than secrets.DETECTORS' "credential assignment": code that reads a
    # secret from elsewhere (api_key = os.environ[...], token = get_token()) is no finding,
    # and in code files (CODE_SUFFIXES) only a quoted literal counts
    "credential assignment": re.compile(
        r"(?i)(?<![A-Za-z0-9_.-])(?:[A-Za-z0-9]+[_.-])*"
        r"(?:api[_-]?key|apikey|access[_-]?key|access[_-]?token|auth[_-]?token|secret(?:[_-]?key)?"
        r"|client[_-]?secret|password|passwd|pwd|token|private[_-]?key)"
        r"\\?[\"']?[ \t]*[:=][ \t]*(?P<quote>\\?[\"']|)"
        r"(?=[^\s'\"\\(){}\[\]<>$,;]*[A-Za-z])(?!" + _PLACEHOLDER + r")[^\s'\"\\(){}\[\]<>$,;]{8,}(?P=quote)"
        r"(?=[ \t]*(?:[,;#)}\]\\]|//|$))",
        re.MULTILINE),
}
#: kinds reported once per file (at their first line), not on every line
ONCE_PER_FILE = frozenset({"browser cookie export"})
_TOKEN_KINDS = tuple((d.kind, d.pattern) for d in DETECTORS if d.kind != "credential assignment")
_ENV_EXAMPLES = (".example", ".sample", ".template", ".dist", ".defaults")
_COOKIE_KEYS = frozenset({"name", "value"})
_ENV_WORDS = frozenset({"pass", "pw", "key", "dsn"})
#: kind -> text one of which (lower-cased) every match contains: a pattern runs only when
#: its text is there, since a regex scan costs far more than a substring search
TRIGGERS: dict[str, tuple[str, ...]] = {
    **{d.kind: d.triggers for d in DETECTORS if d.kind != "credential assignment"},
    "browser cookie export": ("\t", "cookie", '"domain"'),
    ".env value": ("=",),
    "credential assignment": ("key", "token", "secret", "pass", "pwd"),
}
#: files where ``password = name`` is code, not a value: only quoted literals are credentials there
CODE_SUFFIXES = (".py", ".pyi", ".ipynb", ".r", ".js", ".ts", ".java", ".scala", ".go", ".rs", ".rb", ".jl", ".sql", ".sh")


@dataclass(frozen=True)
class SecretFinding:
    """A credential in a file: its line (1-based) and kind, never the credential."""

    line: int
    kind: str


def is_env_file(name: str) -> bool:
    """True for ``.env``, ``.env.local``, ``prod.env`` ... but not ``.env.example``."""
    if name.endswith(_ENV_EXAMPLES):
        return False
    return name == ".env" or name.startswith(".env.") or name.endswith(".env")


def is_env_secret_name(name: str) -> bool:
    """True for an environment variable that holds a credential: a secret-looking name
    (:func:`bedrot_lab.secrets.is_secret_name`) or one with ``PASS``, ``KEY`` or ``DSN``
    as a word (``DB_PASS``, ``STRIPE_KEY``, ``SENTRY_DSN``)."""
    return is_secret_name(name) or any(word in _ENV_WORDS for word in name.lower().replace(".", "_").split("_"))


def find_secrets(text: str, filename: str = "") -> list[SecretFinding]:
    """Credentials in ``text`` (a file named ``filename``), one finding per line, the
    most specific kind first: the shapes in :data:`bedrot_lab.secrets.DETECTORS`
    (private keys, AWS keys, Meta, GitHub and Slack tokens, URLs with a password,
    the same detectors that mask a run's record), browser cookie exports
    (Netscape cookie files, JSON cookie lists),
    values of credential variables in ``.env`` files (:func:`is_env_secret_name`),
    then generic ``api_key = ...`` / ``password: ...`` assignments of a literal
    (quoted, in code files)."""
    newlines: list[int] | None = None

    def line_of(offset: int) -> int:
        nonlocal newlines
        if newlines is None:
            newlines = [match.start() for match in _NEWLINE.finditer(text)]
        return bisect.bisect_left(newlines, offset) + 1

    code = filename.lower().endswith(CODE_SUFFIXES)
    kinds: list[tuple[str, re.Pattern[str]]] = [*_TOKEN_KINDS, *(
        (kind, pattern) for kind, pattern in FILE_PATTERNS.items()
        if kind != ".env value" or is_env_file(filename))]
    lower = text.lower()
    found: dict[int, str] = {}
    for kind, pattern in kinds:
        if not any(trigger in lower for trigger in TRIGGERS.get(kind, ("",))):
            continue
        for match in pattern.finditer(text):
            if kind == ".env value" and not is_env_secret_name(match["name"]):
                continue
            if kind == "credential assignment" and code and not match["quote"]:
                continue
            found.setdefault(line_of(match.start()), kind)
            if kind in ONCE_PER_FILE:
                break
        if kind == "browser cookie export" and "browser cookie export" not in found.values():
            offset = _json_cookies(text)
            if offset is not None:
                found.setdefault(line_of(offset), kind)
    return [SecretFinding(line, kind) for line, kind in sorted(found.items())]


def _json_cookies(text: str) -> int | None:
    """Where a JSON cookie export (a list of ``{"domain", "name", "value", ...}``, or
    ``{"cookies": [...]}`` as browser automation saves it) starts, or None."""
    head = text.lstrip()[:1]
    if head not in ("[", "{") or '"domain"' not in text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict):
        data = data.get("cookies")
    if not isinstance(data, list) or not data:
        return None
    if not all(isinstance(item, dict) and _COOKIE_KEYS <= item.keys() and ("domain" in item or "host" in item)
               for item in data[:20]):
        return None
    return text.find('"domain"')


def scan_file(path: str | os.PathLike[str], max_bytes: int = DEFAULT_SECRET_MAX_BYTES) -> list[SecretFinding]:
    """The credentials in file ``path``: regular files only (links are not followed,
    FIFOs and devices not opened), up to ``max_bytes``, text only (a NUL byte in
    the first 8 KiB means binary).

    Opened with ``O_NOATIME`` where the file's owner allows it, because reading a
    file would refresh its atime and so hide it from the stale rules.
    """
    try:
        fd = open_nofollow(path)
    except OSError:
        return []
    try:
        st = os.fstat(fd)
        if not stat_module.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return []
        chunks, remaining = [], max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes or b"\0" in data[:8192]:
        return []
    return find_secrets(data.decode("utf-8", "replace"), os.path.basename(os.fspath(path)))


def _scan_cache_1(con: sqlite3.Connection) -> None:
    """Table ``stamps`` (kept as it is where a cache from before schema versions has it);
    the first layout, ``scans``, keyed by bytes, is dropped."""
    con.execute("DROP TABLE IF EXISTS scans")
    con.execute("""CREATE TABLE IF NOT EXISTS stamps (path TEXT PRIMARY KEY, size INTEGER,
        mtime REAL, ctime REAL, findings TEXT NOT NULL) WITHOUT ROWID""")


#: the secret-scan cache's schema versions, oldest first (see :func:`bedrot_lab.statedb.migrate`)
SCAN_CACHE_MIGRATIONS = (_scan_cache_1,)


class SecretScanCache:
    """What :func:`scan_file` found in each file, stamped with the size, mtime and
    ctime the index gave, so that an unchanged file is not read again. Paths are
    kept as the index stores them (:func:`~bedrot_lab.statedb.db_text`), so
    the index can find the changed files itself (:meth:`UsageIndex.changed_files`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        self._con.execute("PRAGMA busy_timeout=60000")
        try:
            migrate(self._con, self.path, SCAN_CACHE_MIGRATIONS)
        except BaseException:
            self._con.close()
            raise
        self._con.execute("PRAGMA journal_mode=WAL")
        self._pending: list[tuple[Any, ...]] = []

    def put(self, record: FileRecord, findings: list[SecretFinding]) -> None:
        self._pending.append((db_text(record.path), record.size, record.mtime, record.ctime,
                              json.dumps([[f.line, f.kind] for f in findings])))
        if len(self._pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._con.execute("BEGIN")
            self._con.executemany("INSERT OR REPLACE INTO stamps VALUES (?, ?, ?, ?, ?)", self._pending)
            self._con.execute("COMMIT")
            self._pending.clear()

    def with_findings(self) -> list[tuple[str, tuple[float, float, float], list[SecretFinding]]]:
        """(path, (size, mtime, ctime), findings) of every file where something was found."""
        self.flush()
        rows = self._con.execute("SELECT path, size, mtime, ctime, findings FROM stamps WHERE findings != '[]'")
        return [(from_db_text(path), (size, mtime, ctime), [SecretFinding(line, kind) for line, kind in json.loads(found)])
                for path, size, mtime, ctime, found in rows]

    def forget(self, paths: Iterable[str]) -> None:
        self.flush()
        self._con.execute("BEGIN")
        self._con.executemany("DELETE FROM stamps WHERE path = ?", [(db_text(p),) for p in paths])
        self._con.execute("COMMIT")

    def prune(self, keep: Callable[[str], bool]) -> int:
        """Forget files for which ``keep(path)`` is false; returns how many."""
        self.flush()
        gone = [from_db_text(p) for (p,) in self._con.execute("SELECT path FROM stamps")]
        gone = [p for p in gone if not keep(p)]
        if gone:
            self.forget(gone)
        return len(gone)

    def count(self) -> int:
        return self._con.execute("SELECT COUNT(*) FROM stamps").fetchone()[0]

    def close(self) -> None:
        self.flush()
        self._con.close()


class SecretsRule:
    """Files in the sandbox that hold credentials: violation ``secrets`` per finding,
    subject ``<path>:<line>``, ``detail`` the kind, severity hard. Regular files up
    to ``max_bytes``; links are never followed; ``ignore`` globs are skipped.

    With a cache, only files that are new or changed since they were last read
    are read again, and the index picks them out itself; the findings of the
    others come from the cache."""

    name = "secrets"

    def __init__(self, max_bytes: int = DEFAULT_SECRET_MAX_BYTES, ignore: GlobSet | None = None,
                 cache_path: Path | None = None):
        self.max_bytes = max_bytes
        self.ignore = ignore or GlobSet(())
        self.cache_path = cache_path

    def readable(self, record: FileRecord) -> bool:
        """True for the files this rule reads: not links, not empty, not too big, not ignored."""
        return not record.is_link and 0 < record.size <= self.max_bytes and not self.ignore.match(record.path)

    def evaluate(self, index: UsageIndex, now: float) -> Iterator[Violation]:
        if self.cache_path is None:
            for record in index.files():
                if self.readable(record):
                    yield from self._violations(record.path, self._scan(index, record))
            return
        cache = SecretScanCache(self.cache_path)
        try:
            known = {path: (stamp, findings) for path, stamp, findings in cache.with_findings()}
            for record in index.changed_files(cache.path, max_size=self.max_bytes):
                if self.ignore.match(record.path):
                    continue
                findings = self._scan(index, record)
                cache.put(record, findings)
                known.pop(record.path, None)
                yield from self._violations(record.path, findings)
            stale = []
            for path, (stamp, findings) in known.items():  # the files with findings not read again
                record = index.get(path)
                if record is None or not self.readable(record) or stamp != (record.size, record.mtime, record.ctime):
                    stale.append(path)  # gone or changed (and so read again above, if still readable)
                    continue
                yield from self._violations(path, findings)
            if stale:
                cache.forget(stale)
            if cache.count() > 1.2 * index.file_count() + 1000:  # files that left the sandbox
                cache.prune(lambda p: (record := index.get(p)) is not None and self.readable(record))
        finally:
            cache.close()

    def _scan(self, index: UsageIndex, record: FileRecord) -> list[SecretFinding]:
        return scan_file(str(index.root).rstrip("/") + "/" + record.path, self.max_bytes)

    def _violations(self, path: str, findings: list[SecretFinding]) -> Iterator[Violation]:
        for finding in findings:
            yield Violation(self.name, f"{path}:{finding.line}", 1, 0, "hard", finding.kind,
                            path=path, line=finding.line)


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
        naming the config file and the key (``sandbox.quotas.user.soft``)."""
        return cls.from_table(settings.sandbox, settings.config_file, settings.state_dir / SECRET_CACHE_NAME)

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

    def rules(self) -> list[Rule]:
        """The built-in rule objects: ``quota``, ``stale`` and (unless ``secrets = false``) ``secrets``."""
        rules: list[Rule] = [QuotaRule(self.quotas), StaleRule(self.stale, self.keep)]
        if self.secrets:
            rules.append(SecretsRule(self.secret_max_bytes, self.secret_ignore, self.secret_cache))
        return rules

    def stale_rule(self) -> StaleRule:
        return StaleRule(self.stale, self.keep)

    def pins(self, index: UsageIndex) -> Pins:
        """The pins of the sandbox that ``index`` describes (for cleanup)."""
        return Pins(self.keep, lambda p: index.get(p) is not None)


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


# -- combining and evaluating ----------------------------------------------------------------


def rules_of(item: Any) -> list[Rule]:
    """What one plugin's ``sandbox_rules`` returned (a list, a single rule, or None) as a
    list of rules; :class:`TypeError` for an object that is not a :class:`Rule`."""
    if item is None:
        return []
    rules = [item] if isinstance(item, Rule) or not isinstance(item, Iterable) else list(item)
    for rule in rules:
        if not isinstance(rule, Rule) or not isinstance(getattr(rule, "name", None), str) or not rule.name:
            raise TypeError(f"sandbox_rules returned {rule!r}, which is not a Rule "
                            "(an object with a name and an evaluate(index, now) method)")
    return rules


def all_rules(settings: Settings, plugin_rules: Iterable[Any] = ()) -> list[Rule]:
    """The built-in rules of ``settings`` and the plugins' rules, as one list.

    ``plugin_rules`` is what ``pm.hook.sandbox_rules(settings=...)`` returned: one
    list (or single rule, or None) per plugin. A plugin rule named like a
    built-in one replaces it; two plugin rules with one name are an error, as
    is an object that is not a :class:`Rule`.
    """
    extra: list[Rule] = []
    for item in plugin_rules:
        for rule in rules_of(item):
            if any(other.name == rule.name for other in extra):
                raise ValueError(f"two plugins return a sandbox rule named {rule.name!r}")
            extra.append(rule)
    replaced = {rule.name for rule in extra}
    builtin = [rule for rule in SandboxRules.from_settings(settings).rules() if rule.name not in replaced]
    return [*builtin, *extra]


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` found: the violations, and the rules that failed (name ->
    error), whose earlier violations must be kept open rather than resolved."""

    violations: list[Violation]
    failed: dict[str, str]


def evaluate(rules: Iterable[Rule], index: UsageIndex, now: float | None = None) -> Evaluation:
    """Run every rule against ``index``. A rule that raises is logged and listed in
    ``failed``; the others still run."""
    now = time.time() if now is None else now
    violations: list[Violation] = []
    failed: dict[str, str] = {}
    for rule in rules:
        try:
            found = list(rule.evaluate(index, now))
        except Exception as exc:
            from ..plugins import describe

            failed[rule.name] = describe(exc)
            log.warning("sandbox rule %r failed: %s", rule.name, failed[rule.name], exc_info=True)
            continue
        for violation in found:
            if not isinstance(violation, Violation) or not owns(rule.name, violation.rule):
                log.warning("sandbox rule %r returned %r, not a Violation of its own; ignored", rule.name, violation)
                continue
            violations.append(violation)
    return Evaluation(violations, failed)
