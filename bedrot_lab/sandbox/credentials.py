"""Credentials left in the sandbox's files: finding them (the run side's detectors and a few
shapes only files have), remembering what each file held, and the ``secrets`` rule."""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import sqlite3
import stat as stat_module
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import open_nofollow
from ..secrets import DETECTORS, is_secret_name
from ..statedb import db_text, from_db_text, migrate
from .settings import DEFAULT_SECRET_MAX_BYTES, GlobSet
from .violation import Violation

if TYPE_CHECKING:
    from .index import UsageIndex
    from .records import FileRecord

log = logging.getLogger(__name__)


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
    if not all(isinstance(item, dict) and item.keys() >= _COOKIE_KEYS and ("domain" in item or "host" in item)
               for item in data[:20]):
        return None
    return text.find('"domain"')


def file_credentials(path: str | os.PathLike[str], max_bytes: int = DEFAULT_SECRET_MAX_BYTES) -> list[SecretFinding]:
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
    """What :func:`file_credentials` found in each file, stamped with the size, mtime and
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
                    yield from self._violations(record.path, self._file_credentials(index, record))
            return
        cache = SecretScanCache(self.cache_path)
        try:
            known = {path: (stamp, findings) for path, stamp, findings in cache.with_findings()}
            for record in index.changed_files(cache.path, max_size=self.max_bytes):
                if self.ignore.match(record.path):
                    continue
                findings = self._file_credentials(index, record)
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

    def _file_credentials(self, index: UsageIndex, record: FileRecord) -> list[SecretFinding]:
        return file_credentials(str(index.root).rstrip("/") + "/" + record.path, self.max_bytes)

    def _violations(self, path: str, findings: list[SecretFinding]) -> Iterator[Violation]:
        for finding in findings:
            yield Violation(self.name, f"{path}:{finding.line}", 1, 0, "hard", finding.kind,
                            path=path, line=finding.line)
