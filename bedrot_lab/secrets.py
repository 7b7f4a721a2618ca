"""Recognising credentials by their name or their shape, so they never reach MLflow."""

from __future__ import annotations

import re
from collections.abc import Mapping

MASK = "****"

#: kind -> pattern of a credential value
VALUE_PATTERNS: dict[str, re.Pattern[str]] = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key": re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "Meta access token": re.compile(r"\bEAA[A-Za-z0-9]{30,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "credential assignment": re.compile(
        r"(?i)\b(?:api[_-]?key|access[_-]?token|secret|password|passwd)\b\s*[:=]\s*['\"]?[^\s'\"]{8,}"
    ),
}

_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "cookie", "cookies"}
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"), ("auth", "token"), ("session", "key")}
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def is_secret_name(name: str) -> bool:
    """True for names such as ``api_key``, ``metaAccessToken``, ``DB_PASSWORD``, ``client-secret``."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


def secret_kind(value: str) -> str | None:
    """The kind of credential ``value`` contains (see :data:`VALUE_PATTERNS`), or None."""
    for kind, pattern in VALUE_PATTERNS.items():
        if pattern.search(value):
            return kind
    return None


def scrub(text: str) -> tuple[str, list[str]]:
    """``text`` with every credential-shaped value replaced by :data:`MASK`, and the kinds found."""
    kinds = []
    for kind, pattern in VALUE_PATTERNS.items():
        text, count = pattern.subn(MASK, text)
        if count:
            kinds.append(kind)
    return text, kinds


def mask_secrets(values: Mapping[str, object], what: str) -> tuple[dict[str, str], list[str]]:
    """Return ``values`` as strings with credentials replaced by :data:`MASK`, and
    a note such as ``"param api_key (name)"`` for each masked entry."""
    clean: dict[str, str] = {}
    notes: list[str] = []
    for key, value in values.items():
        text = str(value)
        kind = "name" if is_secret_name(key) else secret_kind(text)
        if kind and text and text != MASK:
            clean[key] = MASK
            notes.append(f"{what} {key} ({kind})")
        else:
            clean[key] = text
    return clean, notes
