"""The sandbox's rules checked against the usage index: violations and the Rule protocol,
the quota and stale-file rules, and the effective set of rules (the built-in ones of
``[sandbox]`` as plugins replace and add to them) that check, clean and the run gate use."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .credentials import SecretsRule
from .settings import (
    DAY,
    GlobSet,
    Quotas,
    SandboxRules,
    StaleSpec,
    files_count,
    format_size,
    glob_regex,
)
from .violation import Rule, Violation, file_age, folder_of, owns, subject_of

if TYPE_CHECKING:
    from ..config import Settings
    from .index import UsageIndex
    from .records import FileRecord

log = logging.getLogger(__name__)


# -- quotas -------------------------------------------------------------------------------


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


# -- combining and evaluating ----------------------------------------------------------------


def builtin_rules(sandbox: SandboxRules) -> list[Rule]:
    """The built-in rules of a ``[sandbox]`` table: ``quota``, ``stale`` and (unless
    ``secrets = false``) ``secrets``. Built once per table object (the stale rule
    compiles its globs), so every run of a process reuses them."""
    built = _BUILT.get(id(sandbox))
    if built is None or built[0] is not sandbox:
        rules: list[Rule] = [QuotaRule(sandbox.quotas), stale_rule(sandbox)]
        if sandbox.secrets:
            rules.append(SecretsRule(sandbox.secret_max_bytes, sandbox.secret_ignore, sandbox.secret_cache))
        if len(_BUILT) > 64:
            _BUILT.clear()
        built = _BUILT[id(sandbox)] = (sandbox, tuple(rules))
    return list(built[1])


#: id of a SandboxRules -> (that object, kept so its id is not reused; its built-in rules)
_BUILT: dict[int, tuple[SandboxRules, tuple[Rule, ...]]] = {}


def stale_rule(sandbox: SandboxRules) -> StaleRule:
    """The built-in stale rule of a ``[sandbox]`` table."""
    return StaleRule(sandbox.stale, sandbox.keep)


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
    builtin = [rule for rule in builtin_rules(SandboxRules.from_settings(settings)) if rule.name not in replaced]
    return [*builtin, *extra]


@dataclass(frozen=True)
class EffectiveRules:
    """The rules the sandbox is held to: the built-in ones of ``[sandbox]`` as the plugins
    replace and add to them (``sandbox_rules``). ``sandbox check``, ``sandbox clean`` and
    the run quota gate all use these. ``incomplete`` when a plugin's rules could not be used."""

    rules: tuple[Rule, ...]
    incomplete: bool = False

    def named(self, name: str) -> Rule | None:
        """The rule called ``name`` (``"quota"``, ``"stale"``, ``"secrets"`` ...), if any."""
        return next((rule for rule in self.rules if rule.name == name), None)


def effective_rules(settings: Settings, hook: Any = None) -> EffectiveRules:
    """The built-in rules of ``settings`` with the plugins' rules (``hook.sandbox_rules``, a
    plugin manager's ``pm.hook``; None for the built-ins alone). A plugin whose hook
    raised, returned something that is not a rule, or named a rule like another
    plugin's is left out, in one line naming it."""
    from ..plugins import call_each, log_failure

    extra: list[Rule] = []
    owners: dict[str, str] = {}
    incomplete = False
    for call in call_each(hook.sandbox_rules, settings=settings) if hook is not None else ():
        if call.error is not None:
            log_failure(call, "; its rules are left out")
            incomplete = True
            continue
        problem, mine = "", []
        try:
            mine = rules_of(call.result)
        except TypeError as exc:
            problem = str(exc)
        clash = next((rule.name for rule in mine if rule.name in owners), None)
        if clash:
            problem = f"plugin {owners[clash]!r} returns a rule named {clash!r} too; rename one"
        if problem:
            log.error("sandbox_rules of plugin %r: %s; its rules are left out", call.plugin, problem)
            incomplete = True
            continue
        owners.update(dict.fromkeys((rule.name for rule in mine), call.plugin))
        extra.extend(mine)
    return EffectiveRules(tuple(all_rules(settings, [extra])), incomplete)


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
