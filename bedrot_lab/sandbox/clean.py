"""`sandbox clean`: the plan of what the stale rules would archive or delete, and doing it file by file."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import copy_and_hash_fd
from .archive import ARCHIVE_AREA, CleanupError, ManifestWriter, Skipped, exclusive, manifest_entry, roots
from .moves import LINK, Refused, changed, lexists, move_file, open_regular, path_parts, reach_folder
from .records import Change, owner_of
from .rules import EffectiveRules, Pins, StaleRule, effective_rules
from .settings import ACTIONS

if TYPE_CHECKING:
    from ..config import Settings
    from .index import UsageIndex
    from .settings import GlobSet

log = logging.getLogger(__name__)

CHANGED = "changed since the plan (size or mtime)"
CREDENTIAL = ("holds a credential (bedrot-lab sandbox check shows where); archiving would only hide it: "
              "remove the credential by hand")


@dataclass(frozen=True)
class CleanItem:
    """One file the plan would archive or delete. ``path`` is relative to the sandbox and
    ``"/"``-separated; ``size`` and ``mtime`` are as the index recorded them, and the
    file is left alone if either differs on disk when its turn comes."""

    path: str
    size: int
    mtime: float
    rule: str
    action: str
    age_days: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CleanPlan:
    """What a clean would do at time ``now``: ``items`` to archive or delete, and the stale
    files it leaves alone (``skipped``) with why."""

    items: list[CleanItem]
    skipped: list[Skipped]
    now: float
    older_than: float | None = None
    user: str | None = None

    @property
    def bytes(self) -> int:
        """Bytes the plan would archive or delete."""
        return sum(item.size for item in self.items)

    def run_ids(self) -> set[str]:
        """The MLflow runs whose workdirs hold files of the plan."""
        return {run_id for item in self.items if (run_id := owner_of(item.path.rpartition("/")[0]).run_id)}

    def leave_running(self, running_runs: Collection[str]) -> None:
        """Move the items under the workdir of a run in ``running_runs`` to ``skipped``."""
        running = frozenset(running_runs)
        keep = []
        for item in self.items:
            run_id = _running_run(item.path, running)
            if run_id:
                self.skipped.append(Skipped(item.path, f"run {run_id} is still RUNNING"))
            else:
                keep.append(item)
        self.items = keep
        self.skipped.sort(key=lambda skip: skip.path)

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now, "older_than": self.older_than, "user": self.user, "files": len(self.items),
                "bytes": self.bytes, "items": [item.to_dict() for item in self.items],
                "skipped": [skip.to_dict() for skip in self.skipped]}


@dataclass
class CleanResult:
    """What :func:`apply_clean` did: the manifest entries of the files it archived and
    deleted, the files it left alone, the manifest (None when it did nothing) and the
    bytes it archived or deleted."""

    archived: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    manifest: Path | None = None
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"archived": self.archived, "deleted": self.deleted, "skipped": [s.to_dict() for s in self.skipped],
                "manifest": str(self.manifest) if self.manifest else None, "bytes": self.bytes}


# -- plan -------------------------------------------------------------------------------


def plan_clean(settings: Settings, index: UsageIndex, *, older_than: float | None = None,
               user: str | None = None, running_runs: Collection[str] = (),
               now: float | None = None, rules: EffectiveRules | None = None) -> CleanPlan:
    """The stale files of the sandbox (its effective rules, ``rules`` or the built-in ones
    of ``[sandbox]``, evaluated at ``now``) and what a clean would do to each. Changes nothing.

    ``older_than`` (days) replaces every rule's own days; ``user`` keeps only
    ``users/<user>/``. Links, files under the workdir of a run in
    ``running_runs`` and files holding a credential (when the secrets rule is
    on) are listed in ``skipped``; pinned files are not listed at all.
    """
    now = time.time() if now is None else now
    under = ""
    if user is not None:
        if path_parts(user) is None or "/" in user:
            raise CleanupError(f"not a user name: {user!r}")
        under = f"users/{user}"
    if older_than is not None and not older_than >= 0:
        raise CleanupError(f"--older-than must be a number of days, 0 or more; got {older_than!r}")
    plan = CleanPlan([], [], now, older_than, user)
    rules = rules or effective_rules(settings)
    credentials = _credential_files(rules, index, now)
    for stale in _stale_rule(rules).stale_files(index, now, under=under, older_than=older_than):
        record = stale.record
        if record.is_link:
            plan.skipped.append(Skipped(record.path, LINK))
        elif record.path in credentials:
            plan.skipped.append(Skipped(record.path, CREDENTIAL))
        else:
            plan.items.append(CleanItem(record.path, record.size, record.mtime, stale.spec.name,
                                        stale.spec.action, stale.age_days))
    plan.items.sort(key=lambda item: item.path)
    plan.leave_running(running_runs)
    return plan


def _stale_rule(rules: EffectiveRules) -> StaleRule:
    rule = rules.named("stale")
    if not isinstance(rule, StaleRule):
        raise CleanupError(f"the stale rule is replaced by {rule!r}, which is not a StaleRule: `sandbox clean` "
                           "archives only what a StaleRule (bedrot_lab.sandbox.rules) says is stale")
    return rule


def _credential_files(rules: EffectiveRules, index: UsageIndex, now: float) -> set[str]:
    """The files the secrets rule finds credentials in (read again only where changed
    since the last check, thanks to its cache)."""
    rule = rules.named("secrets")
    if rule is None:
        return set()
    return {violation.path for violation in rule.evaluate(index, now) if violation.path}


def _running_run(path: str, running: frozenset[str]) -> str | None:
    """The id of the run in ``running`` whose workdir holds ``path``, or None."""
    run_id = owner_of(path.rpartition("/")[0]).run_id
    return run_id if run_id and run_id in running else None


# -- apply ------------------------------------------------------------------------------


def apply_clean(settings: Settings, plan: CleanPlan, index: UsageIndex | None = None, *,
                running_runs: Collection[str] = (), rules: EffectiveRules | None = None,
                progress: Callable[[int, int], None] | None = None) -> CleanResult:
    """Do what ``plan`` says: archive files to ``<archive>/sandbox/<YYYY-MM-DD>/<path>``,
    or delete those whose rule says ``delete``, recording each in a manifest (fsynced
    line by line, so an interrupted clean leaves a manifest of exactly what it did).

    Every file is checked again on disk just before it is touched, and left alone
    (in ``skipped``) when it is a link or reached through one, pinned, changed since
    the plan, gone, or under the workdir of a run in ``running_runs``; an error on
    one file skips that file only. ``progress(files, bytes)`` is called after each
    item of the plan, with the items handled so far and their planned bytes; what
    it raises stops the clean. ``index``, when given, learns what left the sandbox.
    """
    sandbox, archive = roots(settings)
    stale = _stale_rule(rules or effective_rules(settings))
    started = datetime.now().astimezone()
    day = started.strftime("%Y-%m-%d")
    manifest = ManifestWriter.for_clean(settings, archive, day, started, now=plan.now, older_than=plan.older_than,
                                        only_user=plan.user)
    cleaner = _Cleaner(sandbox, archive, day, stale, stale.keep, frozenset(running_runs), manifest)
    result = CleanResult()
    done = done_bytes = 0
    with exclusive(settings):
        try:
            for item in plan.items:
                try:
                    entry = cleaner.clean(item)
                except Refused as exc:
                    result.skipped.append(Skipped(item.path, str(exc)))
                except FileNotFoundError:
                    result.skipped.append(Skipped(item.path, "gone"))
                except OSError as exc:
                    log.debug("clean %s failed", item.path, exc_info=True)
                    result.skipped.append(Skipped(item.path, f"error: {exc}"))
                else:
                    (result.archived if entry["archived"] else result.deleted).append(entry)
                    result.bytes += entry["size"]
                done += 1
                done_bytes += item.size
                if progress is not None:
                    progress(done, done_bytes)
        finally:
            result.manifest = manifest.close()
            gone = [entry["path"] for entry in (*result.archived, *result.deleted)]
            if index is not None and gone:
                index.apply([Change("deleted", path) for path in gone])
    return result


class _Cleaner:
    """The checks and moves of one clean, file by file."""

    def __init__(self, sandbox: str, archive: str, day: str, stale: StaleRule, keep: GlobSet,
                 running: frozenset[str], manifest: ManifestWriter):
        self.sandbox = sandbox
        self.archive = archive
        self.day = day
        self.stale = stale
        self.keep = keep
        self.running = running
        self.manifest = manifest

    def clean(self, item: CleanItem) -> dict[str, Any]:
        """Archive or delete one item; its manifest entry. Raises Refused or OSError."""
        parts = path_parts(item.path)
        if parts is None:
            raise Refused("outside the sandbox")
        if item.action not in ACTIONS:
            raise Refused(f"unknown action {item.action!r}")
        if item.action == "delete":
            spec = self.stale.spec_for(item.path)
            if spec is None or spec.action != "delete":
                raise Refused(f"its rule ({spec.name if spec else 'none'}) does not say delete; left in place")
        run_id = _running_run(item.path, self.running)
        if run_id:
            raise Refused(f"run {run_id} is still RUNNING")
        folder = reach_folder(self.sandbox, parts[:-1])  # refuses links on the way
        try:
            # on disk now, not from the index: a .keep may have appeared since the plan
            pinned = Pins(self.keep, lambda p: lexists(os.path.join(self.sandbox, p))).reason(item.path)
            if pinned:
                raise Refused(f"pinned by {pinned}")
            fd, before = open_regular(folder, parts[-1])
            try:
                if (before.st_size, before.st_mtime) != (item.size, item.mtime):
                    raise Refused(CHANGED)
                if item.action == "delete":
                    return self._delete(item, folder, parts[-1], fd, before)
                return self._archive(item, parts, folder, fd, before)
            finally:
                os.close(fd)
        finally:
            os.close(folder)

    def _archive(self, item: CleanItem, parts: list[str], folder: int, fd: int,
                 before: os.stat_result) -> dict[str, Any]:
        target = reach_folder(self.archive, [ARCHIVE_AREA, self.day, *parts[:-1]], create=True)
        try:
            name = _free_name(target, parts[-1])
            self.manifest.open()
            digest, moved = move_file(folder, parts[-1], fd, before, target, name)
        finally:
            os.close(target)
        archived = "/".join([ARCHIVE_AREA, self.day, *parts[:-1], name])
        entry = manifest_entry(item.path, archived, digest, moved, item.rule, item.action)
        self.manifest.add(entry)
        return entry

    def _delete(self, item: CleanItem, folder: int, name: str, fd: int, before: os.stat_result) -> dict[str, Any]:
        digest = copy_and_hash_fd(fd)[0]
        if changed(os.fstat(fd), before) or changed(os.stat(name, dir_fd=folder, follow_symlinks=False), before):
            raise Refused("changed while being read; left in place")
        self.manifest.open()
        os.unlink(name, dir_fd=folder)
        os.fsync(folder)
        entry = manifest_entry(item.path, None, digest, before, item.rule, item.action)
        self.manifest.add(entry)
        return entry


def _free_name(folder: int, name: str) -> str:
    """``name``, or ``name.~1~``, ``name.~2~`` ... whichever is free in ``folder``."""
    candidate, number = name, 0
    while lexists(candidate, folder):
        number += 1
        candidate = f"{name}.~{number}~"
    return candidate
