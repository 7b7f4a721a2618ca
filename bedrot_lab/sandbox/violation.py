"""What a sandbox rule reports: a :class:`Violation`, and the :class:`Rule` protocol every
rule (built-in or a plugin's) follows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .settings import SEVERITIES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .index import UsageIndex
    from .records import FileRecord, Owner


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
