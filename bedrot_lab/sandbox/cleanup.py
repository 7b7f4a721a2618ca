"""`sandbox clean` and `sandbox restore`: stale files moved to the archive zone, with a manifest to put them back."""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import stat as stat_module
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BedrotLabError
from ..fsutil import (
    copy_and_hash_fd,
    fsync_folder,
    open_folder,
    open_nofollow,
    write_all,
)
from ..locks import LockBusy, owned_lock
from .index import Change, owner_of
from .rules import EffectiveRules, Pins, StaleRule, effective_rules
from .settings import ACTIONS

if TYPE_CHECKING:
    from ..config import Settings
    from .index import UsageIndex
    from .settings import GlobSet

log = logging.getLogger(__name__)

MANIFEST_KIND = "bedrot-lab sandbox clean"
MANIFEST_VERSION = 1
#: cleaned files go to <archive zone>/ARCHIVE_AREA/<YYYY-MM-DD>/<path in the sandbox>
ARCHIVE_AREA = "sandbox"
#: the manifests of a day's cleans, in that day's folder
MANIFESTS_DIR = "_manifests"
LOCK_NAME = "sandbox-clean.lock"

LINK = "a link; links are never followed or moved"
CHANGED = "changed since the plan (size or mtime)"
EXISTS = "exists in the sandbox; move it away first"
CREDENTIAL = ("holds a credential (bedrot-lab sandbox check shows where); archiving would only hide it: "
              "remove the credential by hand")


class CleanupError(BedrotLabError):
    """A clean or restore that cannot go ahead (a bad manifest or argument, another clean
    running, a manifest that cannot be written); the message is one line."""


class _Refused(Exception):
    """One file left alone; the message is the :class:`Skipped` reason."""

    def __init__(self, reason: str, failed: bool = True):
        super().__init__(reason)
        self.failed = failed


# -- results ----------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Skipped:
    """A file left alone, and why (one short phrase); ``failed`` is False when leaving it
    alone is the right outcome (a restore of a file that is back already)."""

    path: str
    reason: str
    failed: bool = True

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


@dataclass
class RestoreResult:
    """What :func:`restore` did: the sandbox paths it put back and the entries it left alone."""

    restored: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "skipped": [s.to_dict() for s in self.skipped]}


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
        if _parts(user) is None or "/" in user:
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
    sandbox, archive = _roots(settings)
    stale = _stale_rule(rules or effective_rules(settings))
    started = datetime.now().astimezone()
    day = started.strftime("%Y-%m-%d")
    header = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "created": started.isoformat(timespec="seconds"),
              "user": settings.user, "sandbox": str(settings.zone("sandbox")), "archive": str(settings.zone("archive")),
              "now": plan.now, "older_than": plan.older_than, "only_user": plan.user}
    name = f"clean-{started:%H%M%S}-{secrets.token_hex(3)}.jsonl"
    manifest = _Manifest(Path(archive, ARCHIVE_AREA, day, MANIFESTS_DIR, name), header)
    cleaner = _Cleaner(sandbox, archive, day, stale, stale.keep, frozenset(running_runs), manifest)
    result = CleanResult()
    done = done_bytes = 0
    with _exclusive(settings):
        try:
            for item in plan.items:
                try:
                    entry = cleaner.clean(item)
                except _Refused as exc:
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
                 running: frozenset[str], manifest: _Manifest):
        self.sandbox = sandbox
        self.archive = archive
        self.day = day
        self.stale = stale
        self.keep = keep
        self.running = running
        self.manifest = manifest

    def clean(self, item: CleanItem) -> dict[str, Any]:
        """Archive or delete one item; its manifest entry. Raises _Refused or OSError."""
        parts = _parts(item.path)
        if parts is None:
            raise _Refused("outside the sandbox")
        if item.action not in ACTIONS:
            raise _Refused(f"unknown action {item.action!r}")
        if item.action == "delete":
            spec = self.stale.spec_for(item.path)
            if spec is None or spec.action != "delete":
                raise _Refused(f"its rule ({spec.name if spec else 'none'}) does not say delete; left in place")
        run_id = _running_run(item.path, self.running)
        if run_id:
            raise _Refused(f"run {run_id} is still RUNNING")
        folder = _open_folder(self.sandbox, parts[:-1])  # refuses links on the way
        try:
            # on disk now, not from the index: a .keep may have appeared since the plan
            pinned = Pins(self.keep, lambda p: _lexists(os.path.join(self.sandbox, p))).reason(item.path)
            if pinned:
                raise _Refused(f"pinned by {pinned}")
            fd, before = _open_file(folder, parts[-1])
            try:
                if (before.st_size, before.st_mtime) != (item.size, item.mtime):
                    raise _Refused(CHANGED)
                if item.action == "delete":
                    return self._delete(item, folder, parts[-1], fd, before)
                return self._archive(item, parts, folder, fd, before)
            finally:
                os.close(fd)
        finally:
            os.close(folder)

    def _archive(self, item: CleanItem, parts: list[str], folder: int, fd: int,
                 before: os.stat_result) -> dict[str, Any]:
        target = _open_folder(self.archive, [ARCHIVE_AREA, self.day, *parts[:-1]], create=True)
        try:
            name = _free_name(target, parts[-1])
            self.manifest.open()
            digest, moved = _move(folder, parts[-1], fd, before, target, name)
        finally:
            os.close(target)
        entry = _entry(item, "/".join([ARCHIVE_AREA, self.day, *parts[:-1], name]), digest, moved)
        self.manifest.add(entry)
        return entry

    def _delete(self, item: CleanItem, folder: int, name: str, fd: int, before: os.stat_result) -> dict[str, Any]:
        digest = copy_and_hash_fd(fd)[0]
        if _changed(os.fstat(fd), before) or _changed(os.stat(name, dir_fd=folder, follow_symlinks=False), before):
            raise _Refused("changed while being read; left in place")
        self.manifest.open()
        os.unlink(name, dir_fd=folder)
        os.fsync(folder)
        entry = _entry(item, None, digest, before)
        self.manifest.add(entry)
        return entry


def _entry(item: CleanItem, archived: str | None, digest: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": item.path, "archived": archived, "size": st.st_size, "sha256": digest, "mtime": st.st_mtime,
            "mtime_ns": st.st_mtime_ns, "atime_ns": st.st_atime_ns, "mode": stat_module.S_IMODE(st.st_mode),
            "rule": item.rule, "action": item.action}


class _Manifest:
    """The JSON-lines manifest of one clean: created (with its header) just before the
    first file is touched, one fsynced line per file after it, removed again if no
    file was done."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.header = header
        self.fd: int | None = None
        self.entries = 0

    def open(self) -> None:
        if self.fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o644)
            self._write(self.header)
            fsync_folder(self.path.parent)
        except OSError as exc:
            raise CleanupError(f"cannot write the manifest {self.path}: {exc}") from None

    def add(self, entry: dict[str, Any]) -> None:
        try:
            self._write(entry)
        except OSError as exc:
            where = f"archived to {entry['archived']}" if entry["archived"] else "deleted"
            raise CleanupError(f"{entry['path']} was {where} but cannot be recorded in {self.path} ({exc}); "
                               "stopping") from None
        self.entries += 1

    def _write(self, record: dict[str, Any]) -> None:
        assert self.fd is not None
        write_all(self.fd, (json.dumps(record) + "\n").encode())
        os.fsync(self.fd)

    def close(self) -> Path | None:
        """The manifest's path, or None (and no file) when nothing was recorded."""
        if self.fd is None:
            return None
        os.close(self.fd)
        self.fd = None
        if self.entries:
            return self.path
        self.path.unlink(missing_ok=True)
        return None


# -- restore ----------------------------------------------------------------------------


def read_manifest(manifest: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the entries of a clean's manifest. Raises :class:`CleanupError`
    when it does not exist or is not a manifest. A last line cut short (a clean
    killed while writing it) is ignored."""
    manifest = Path(manifest)
    try:
        lines = manifest.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise CleanupError(f"no manifest {manifest}") from None
    except OSError as exc:
        raise CleanupError(f"cannot read the manifest {manifest}: {exc}") from None
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not records:
            if not isinstance(record, dict) or record.get("kind") != MANIFEST_KIND \
                    or record.get("version") != MANIFEST_VERSION:
                raise CleanupError(f"{manifest} is not a sandbox clean manifest")
        elif not isinstance(record, dict):
            if number == len(lines):  # no newline after it: cut short
                log.debug("%s: ignoring a cut-short last line", manifest)
                continue
            raise CleanupError(f"{manifest}, line {number}: not a manifest entry")
        records.append(record)
    if not records:
        raise CleanupError(f"{manifest} is not a sandbox clean manifest")
    return records[0], records[1:]


def restore(settings: Settings, manifest: Path, paths: Sequence[str] = (), *,
            index: UsageIndex | None = None) -> RestoreResult:
    """Put back the files a clean archived, as ``manifest`` lists them: all of them, or
    those at or under the sandbox ``paths`` given (each must match an entry).

    Each file's bytes are checked against the manifest's sha256 first; a file is
    never restored over an existing one, nor outside the sandbox or from outside
    the archive zone (a hand-edited entry), nor through a link. Its mode, mtime
    and atime are set back as they were. Entries that cannot be restored are in
    ``skipped`` with why. ``index``, when given, learns what came back.
    """
    _, entries = read_manifest(manifest)
    wanted = [path.strip("/") for path in paths]
    selected = [entry for entry in entries if not wanted or any(_at_or_under(entry.get("path"), p) for p in wanted)]
    unmatched = [p for p in wanted if not any(_at_or_under(entry.get("path"), p) for entry in entries)]
    if unmatched:
        raise CleanupError(f"no entry of {manifest} is at or under {', '.join(unmatched)}")
    sandbox, archive = _roots(settings)
    result = RestoreResult()
    with _exclusive(settings):
        try:
            for entry in selected:
                path = str(entry.get("path"))
                try:
                    _restore_one(entry, sandbox, archive)
                except _Refused as exc:
                    result.skipped.append(Skipped(path, str(exc), exc.failed))
                except FileExistsError:
                    result.skipped.append(Skipped(path, EXISTS))
                except OSError as exc:
                    log.debug("restore %s failed", path, exc_info=True)
                    result.skipped.append(Skipped(path, f"error: {exc}"))
                else:
                    result.restored.append(path)
        finally:
            if index is not None and result.restored:
                index.apply([Change("created", path) for path in result.restored])
    return result


def _restore_one(entry: dict[str, Any], sandbox: str, archive: str) -> None:
    if entry.get("archived") is None:
        raise _Refused(f"deleted by rule {entry.get('rule')}; nothing to restore", failed=False)
    path, archived, digest = entry.get("path"), entry.get("archived"), entry.get("sha256")
    numbers = [entry.get(key) for key in ("size", "mtime_ns", "atime_ns", "mode")]
    if not (isinstance(path, str) and isinstance(archived, str) and isinstance(digest, str)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)):
        raise _Refused("not a valid manifest entry")
    size, mtime_ns, atime_ns, mode = numbers
    parts, source = _parts(path), _parts(archived)
    if parts is None:
        raise _Refused("outside the sandbox")
    if source is None or source[0] != ARCHIVE_AREA:
        raise _Refused("the archived file is not in the archive zone's sandbox area")
    try:
        folder = _open_folder(archive, source[:-1])
    except FileNotFoundError:
        raise _gone(sandbox, parts, digest) from None
    try:
        try:
            fd, before = _open_file(folder, source[-1])
        except FileNotFoundError:
            raise _gone(sandbox, parts, digest) from None
        try:
            if before.st_size != size or copy_and_hash_fd(fd)[0] != digest:
                raise _Refused("the archived file does not match the manifest (size or sha256); left in the archive")
            target = _open_folder(sandbox, parts[:-1], create=True)
            try:
                if _lexists(parts[-1], target):
                    raise _Refused(EXISTS)
                _move(folder, source[-1], fd, before, target, parts[-1], expect=digest,
                      times=(atime_ns, mtime_ns), mode=mode)
            finally:
                os.close(target)
        finally:
            os.close(fd)
    finally:
        os.close(folder)


def _gone(sandbox: str, parts: list[str], digest: str) -> _Refused:
    """Why an entry whose archived file is gone is skipped."""
    try:
        folder = _open_folder(sandbox, parts[:-1])
        try:
            fd, _ = _open_file(folder, parts[-1])
        finally:
            os.close(folder)
        try:
            same = copy_and_hash_fd(fd)[0] == digest
        finally:
            os.close(fd)
    except (OSError, _Refused):
        same = False
    if same:
        return _Refused("already restored", failed=False)
    return _Refused("the archived file is gone; nothing to restore")


def _at_or_under(path: object, prefix: str) -> bool:
    return isinstance(path, str) and (path == prefix or path.startswith(prefix + "/") or not prefix)


# -- moving files -----------------------------------------------------------------------


def _move(source: int, name: str, fd: int, before: os.stat_result, target: int, target_name: str, *,
          expect: str | None = None, times: tuple[int, int] | None = None,
          mode: int | None = None) -> tuple[str, os.stat_result]:
    """Move file ``name`` in folder ``source`` (open as ``fd``, stat'ed as ``before``) to
    ``target_name`` in folder ``target``; its sha256 and the stat of what arrived.

    On one file system: hash, rename, then confirm the file that arrived is the one
    hashed (else hash what arrived). Across file systems: a verified copy, then the
    source is removed only if it is unchanged. ``expect``: the sha256 the bytes
    must have, or nothing moves. ``times`` (atime, mtime in ns) and ``mode`` are set
    on the moved file (default: the source's).
    """
    times = times or (before.st_atime_ns, before.st_mtime_ns)
    mode = stat_module.S_IMODE(before.st_mode) if mode is None else mode
    if not _cross_device(before.st_dev, target):
        digest = copy_and_hash_fd(fd)[0]
        if _changed(os.fstat(fd), before):
            raise _Refused("changed while being read; left in place")
        if expect is not None and digest != expect:
            raise _Refused("changed after it was checked (sha256); left in place")
        try:
            _move_name(name, target_name, source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            log.debug("%s: another file system after all; copying", name)
        else:
            os.fsync(target)
            os.fsync(source)
            arrived = os.stat(target_name, dir_fd=target, follow_symlinks=False)
            if not _changed(arrived, before):
                if (arrived.st_atime_ns, arrived.st_mtime_ns) != times:
                    os.utime(fd, ns=times)
                if stat_module.S_IMODE(arrived.st_mode) != mode:
                    os.fchmod(fd, mode)
                return digest, os.fstat(fd)
            # another file took the name between the hash and the rename: record what moved
            other, arrived = _open_file(target, target_name)
            try:
                digest = copy_and_hash_fd(other)[0]
            finally:
                os.close(other)
            if expect is not None and digest != expect:
                _move_name(target_name, name, target, source)
                raise _Refused("changed during the move (sha256); put back")
            return digest, arrived
    digest = _copy_into(fd, target, target_name, times, mode, expect)
    try:
        now = os.stat(name, dir_fd=source, follow_symlinks=False)
    except FileNotFoundError:
        now = None
    if now is None or _changed(now, before) or _changed(os.fstat(fd), before):
        os.unlink(target_name, dir_fd=target)
        os.fsync(target)
        raise _Refused("changed while being copied; left in place")
    os.unlink(name, dir_fd=source)
    os.fsync(source)
    return digest, os.stat(target_name, dir_fd=target, follow_symlinks=False)


def _copy_into(fd: int, target: int, name: str, times: tuple[int, int], mode: int, expect: str | None) -> str:
    """Copy open file ``fd`` to ``name`` in folder ``target`` through a temporary file beside
    it: written, fsynced, read back and compared by sha256, mode and times set, then
    renamed into place (never over an existing file). Returns the sha256."""
    temporary = f".bedrot-clean-{secrets.token_hex(6)}.tmp"
    out = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                  dir_fd=target)
    placed = False
    try:
        try:
            digest = copy_and_hash_fd(fd, out)[0]
            if expect is not None and digest != expect:
                raise _Refused("changed after it was checked (sha256); left in place")
            if copy_and_hash_fd(out)[0] != digest:
                raise _Refused("the copy does not match the original (sha256); original kept")
            os.fchmod(out, mode)
            os.utime(out, ns=times)
            os.fsync(out)
        finally:
            os.close(out)
        _move_name(temporary, name, target, target)
        placed = True
        os.fsync(target)
    finally:
        if not placed:
            with suppress(OSError):
                os.unlink(temporary, dir_fd=target)
    return digest


def _move_name(name: str, new_name: str, folder: int, new_folder: int) -> None:
    """Rename ``name`` in ``folder`` to ``new_name`` in ``new_folder``, never replacing a file
    there. Raises FileExistsError, and OSError EXDEV across file systems."""
    # link + unlink, unlike rename, fails when the new name is taken
    try:
        os.link(name, new_name, src_dir_fd=folder, dst_dir_fd=new_folder, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EEXIST):
            raise
        if _lexists(new_name, new_folder):  # hard links not allowed here: check, then rename
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), new_name) from None
        os.rename(name, new_name, src_dir_fd=folder, dst_dir_fd=new_folder)
        return
    try:
        os.unlink(name, dir_fd=folder)
    except OSError:
        os.unlink(new_name, dir_fd=new_folder)
        raise


def _cross_device(device: int, folder: int) -> bool:
    """True when open folder ``folder`` is on another file system than ``device``."""
    return os.fstat(folder).st_dev != device


def _changed(now: os.stat_result, before: os.stat_result) -> bool:
    """True unless ``now`` is the same file as ``before``, with the same size and mtime."""
    return (now.st_ino, now.st_dev, now.st_size, now.st_mtime_ns) != (
        before.st_ino, before.st_dev, before.st_size, before.st_mtime_ns)


# -- paths and descriptors -----------------------------------------------------------------


def _parts(path: str) -> list[str] | None:
    """The names in relative ``"/"``-separated ``path``; None for one that could leave its
    root (absolute, ``..``, ``.`` or empty names, NUL)."""
    parts = path.split("/")
    if not path or "\0" in path or any(part in ("", ".", "..") for part in parts):
        return None
    return parts


def _roots(settings: Settings) -> tuple[str, str]:
    """The sandbox and archive zones, resolved; neither may lie inside the other."""
    sandbox = os.path.realpath(settings.zone("sandbox"))
    archive = os.path.realpath(settings.zone("archive"))
    if sandbox == archive or archive.startswith(sandbox.rstrip("/") + "/") \
            or sandbox.startswith(archive.rstrip("/") + "/"):
        raise CleanupError(f"the archive zone ({archive}) and the sandbox ({sandbox}) must not lie inside one another")
    return sandbox, archive


def _open_folder(root: str, parts: Sequence[str], *, create: bool = False) -> int:
    """A descriptor of folder ``root/parts...``, reached one name at a time without
    following links (``root`` itself is resolved). ``create`` makes missing folders.
    Raises _Refused when a link or a file is on the way."""
    if create:
        os.makedirs(root, exist_ok=True)
    fd = open_folder(root)
    try:
        for depth, part in enumerate(parts):
            if create:
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
            try:
                child = open_folder(part, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                where = "/".join(parts[:depth + 1])
                if stat_module.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise _Refused(f"reached through the link {where}; links are never followed") from None
                raise _Refused(f"{where} is not a folder") from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(folder: int, name: str) -> tuple[int, os.stat_result]:
    """Open regular file ``name`` in ``folder`` to read, without following a link and, where
    the owner allows it, without touching its atime (which the stale rules read)."""
    st = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if stat_module.S_ISLNK(st.st_mode):
        raise _Refused(LINK)
    if not stat_module.S_ISREG(st.st_mode):  # never open a device or a FIFO
        raise _Refused("not a regular file")
    try:
        fd = open_nofollow(name, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused(LINK) from None
        raise
    st = os.fstat(fd)
    if not stat_module.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Refused("not a regular file")
    return fd, st


def _lexists(name: str, folder: int | None = None) -> bool:
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _free_name(folder: int, name: str) -> str:
    """``name``, or ``name.~1~``, ``name.~2~`` ... whichever is free in ``folder``."""
    candidate, number = name, 0
    while _lexists(candidate, folder):
        number += 1
        candidate = f"{name}.~{number}~"
    return candidate


def _running_run(path: str, running: frozenset[str]) -> str | None:
    """The id of the run in ``running`` whose workdir holds ``path``, or None."""
    run_id = owner_of(path.rpartition("/")[0]).run_id
    return run_id if run_id and run_id in running else None


@contextmanager
def _exclusive(settings: Settings) -> Iterator[None]:
    """One clean or restore at a time in a lake; another one fails at once."""
    try:
        with owned_lock(settings.state_dir / "locks" / LOCK_NAME, settings.user):
            yield
    except LockBusy as busy:
        raise CleanupError(f"another sandbox clean or restore is running ({busy.holder}); "
                           "try again when it ends") from None
