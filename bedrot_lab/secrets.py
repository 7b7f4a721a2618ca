"""Recognising credentials by their name or their shape, and masking them before anything is stored.

One set of detectors (:data:`DETECTORS`) serves both the run side (:class:`Masker`,
used for everything the framework writes to MLflow) and the sandbox's secrets
rule, which adds a few shapes that only make sense in whole files.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

MASK = "****"
#: the mask inside a key (param, tag and metric names), where MLflow refuses ``*``
KEY_MASK = "masked"
#: values masked because of their name are also masked where they reappear, if this long
MIN_KNOWN_LENGTH = 4


@dataclass(frozen=True)
class Detector:
    """A kind of credential: its pattern, and the lower-case texts one of which every
    match contains (a regex scan costs far more than a substring test, so a pattern
    runs only when one of its triggers is there). Where the pattern has a ``secret``
    group, only that part is masked (``https://ana:****@host``)."""

    kind: str
    pattern: re.Pattern[str]
    triggers: tuple[str, ...]

    def present(self, lower_text: str) -> bool:
        return any(trigger in lower_text for trigger in self.triggers)


DETECTORS: tuple[Detector, ...] = (
    Detector("private key", re.compile(
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
        r"|[A-Za-z0-9+/=\s]*)"), ("private key",)),
    Detector("AWS access key", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
             ("akia", "asia", "agpa", "aida", "aroa")),
    Detector("Meta access token", re.compile(r"\bEAA[A-Za-z0-9]{30,}"), ("eaa",)),
    Detector("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    Detector("Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"), ("xox",)),
    Detector("URL with password", re.compile(
        r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:(?P<secret>[^\s/@'\"]{3,})@(?=[^\s/'\"])", re.IGNORECASE), ("://",)),
    Detector("credential assignment", re.compile(
        r"(?i)\b(?:api[_-]?key|access[_-]?token|secret|password|passwd)\b\s*[:=]\s*['\"]?(?P<secret>[^\s'\"]{8,})"),
        ("key", "token", "secret", "pass")),
)
#: kind -> pattern of a credential value
VALUE_PATTERNS: dict[str, re.Pattern[str]] = {d.kind: d.pattern for d in DETECTORS}

_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "cookie", "cookies"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "token"), ("session", "key")}
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """True for names such as ``api_key``, ``metaAccessToken``, ``DB_PASSWORD``, ``client-secret``."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def environment_credentials(env: Mapping[str, str] = os.environ) -> set[str]:
    """The values of the environment variables whose names say credential
    (``MLFLOW_TRACKING_PASSWORD``, ``AWS_SECRET_ACCESS_KEY``): a password has no shape to be
    recognised by, so these are masked wherever they appear."""
    return {value for name, value in env.items()
            if len(value) >= MIN_KNOWN_LENGTH and is_secret_name(name) and name not in NOT_CREDENTIALS}


#: variables whose names read like a credential ("pwd") but are not: the shell's working folders
NOT_CREDENTIALS = frozenset({"PWD", "OLDPWD"})


def secret_kind(value: str) -> str | None:
    """The kind of credential ``value`` contains (see :data:`DETECTORS`), or None."""
    lower = value.lower()
    for detector in DETECTORS:
        if detector.present(lower) and detector.pattern.search(value):
            return detector.kind
    return None


def scrub(text: str, mask: str = MASK) -> tuple[str, list[str]]:
    """``text`` with every credential-shaped value replaced by ``mask``, and the kinds found."""
    def replace(match: re.Match[str]) -> str:
        if "secret" not in match.re.groupindex:
            return mask
        start, end = match.start("secret") - match.start(), match.end("secret") - match.start()
        return match.group()[:start] + mask + match.group()[end:]

    kinds = []
    lower = text.lower()
    for detector in DETECTORS:
        if not detector.present(lower):
            continue
        text, count = detector.pattern.subn(replace, text)
        if count:
            kinds.append(detector.kind)
            lower = text.lower()
    return text, kinds


class Masker:
    """Masks credentials in everything bound for the tracking store, and remembers what it masked.

    A value masked because of its name (``-P api_key=...``) is also masked
    wherever it reappears later, in an error message or a table; so are the values of
    the environment's credentials (:func:`environment_credentials`) from the start. :attr:`notes`
    accumulate (``"param api_key (name)"``), never holding a credential; the
    run's ``bedrot.internal.masked`` tag is written from them.
    """

    def __init__(self) -> None:
        self._known: set[str] = environment_credentials()
        self._notes: dict[str, None] = {}
        self._written = 0

    @property
    def notes(self) -> list[str]:
        return list(self._notes)

    def summary(self) -> str | None:
        """The ``bedrot.internal.masked`` tag's value if notes were added since the last call, else None."""
        if len(self._notes) == self._written:
            return None
        self._written = len(self._notes)
        return "; ".join(self._notes)[:5000]

    def _note(self, where: str, kind: str) -> None:
        self._notes.setdefault(f"{where} ({kind})" if where else kind)

    def remember(self, value: str) -> None:
        """Mask ``value`` wherever it appears from now on."""
        if len(value) >= MIN_KNOWN_LENGTH and value != MASK:
            self._known.add(value)

    def text(self, text: str, where: str = "", mask: str = MASK) -> str:
        """``text`` with credential shapes and remembered values masked."""
        if not text:
            return text
        for value in sorted(self._known, key=len, reverse=True):
            if value in text:
                text = text.replace(value, mask)
                self._note(where, "name")
        text, kinds = scrub(text, mask)
        for kind in kinds:
            self._note(where, kind)
        return text

    def key(self, key: str, where: str) -> str:
        """A param, tag or metric name with any credential in it masked by :data:`KEY_MASK`."""
        return self.text(key, where, KEY_MASK)

    def mapping(self, values: Mapping[str, object], what: str, *, by_name: bool = True) -> dict[str, str]:
        """``values`` as strings, masked wholly when the name says credential (``by_name``),
        else by shape; ``what`` (``"param"``, ``"tag"``) labels the notes."""
        by_name_keys = [key for key, value in values.items() if by_name and is_secret_name(key) and str(value)]
        for key in by_name_keys:
            self.remember(str(values[key]))
        clean: dict[str, str] = {}
        for key, value in values.items():
            name = self.key(key, f"{what} name")
            if key in by_name_keys:
                if str(value) != MASK:
                    self._note(f"{what} {name}", "name")
                clean[name] = MASK
            else:
                clean[name] = self.text(str(value), f"{what} {name}")
        return clean

    def data(self, value: Any, where: str = "") -> Any:
        """A JSON-like structure (dicts, lists, strings, numbers) with its strings masked."""
        if isinstance(value, str):
            return self.text(value, where)
        if isinstance(value, Mapping):
            return {self.text(k, where) if isinstance(k, str) else k: self.data(v, where) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.data(v, where) for v in value]
        return value

    def frame(self, frame: pd.DataFrame, what: str = "table") -> pd.DataFrame:
        """A copy of ``frame`` with its text cells masked: a whole column when its name
        says credential, else each cell by shape and remembered values."""
        import pandas as pd

        out = frame.copy()
        out.columns = [self.text(str(c), f"{what} column") if isinstance(c, str) else c for c in out.columns]
        for position, column in enumerate(out.columns):
            series = out.iloc[:, position]
            if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
                continue
            if isinstance(column, str) and is_secret_name(column):
                for value in series.dropna().astype(str).unique():
                    self.remember(value)
                out.iloc[:, position] = series.where(series.isna(), MASK)
                self._note(f"{what} column {column}", "name")
                continue
            uniques = series.dropna().unique()
            uniques = uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)  # fast on Arrow strings
            suspects = self._suspects([v for v in uniques if isinstance(v, str)])
            masked = {v: self.text(v, f"{what} cell {column}") for v in suspects}
            changed = {v: m for v, m in masked.items() if m != v}
            if changed:
                out.iloc[:, position] = series.replace(changed)
        return out

    def _suspects(self, values: list[str]) -> set[str]:
        """The few ``values`` that may hold a credential, found with one scan of them all
        joined (a regex per value costs seconds on a million-row table)."""
        joined = "\0".join(values)  # no detector matches across a NUL
        lower = joined.lower()
        starts = [m.start() for d in DETECTORS if d.present(lower) for m in d.pattern.finditer(joined)]
        for known in self._known:
            start = joined.find(known)
            while start != -1:
                starts.append(start)
                start = joined.find(known, start + 1)
        return {_item_at(joined, position) for position in starts}


def _item_at(joined: str, position: int) -> str:
    """The item of NUL-joined ``joined`` that holds ``position``."""
    end = joined.find("\0", position)
    return joined[joined.rfind("\0", 0, position) + 1 : end if end != -1 else len(joined)]
