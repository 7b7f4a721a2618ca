"""`sandbox restore`: the files a clean archived put back, as its manifest lists them."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fsutil import copy_and_hash_fd
from .archive import ARCHIVE_AREA, CleanupError, Skipped, entry_fields, exclusive, read_manifest, roots
from .moves import Refused, lexists, move_file, open_regular, path_parts, reach_folder
from .records import Change

if TYPE_CHECKING:
    from ..config import Settings
    from .index import UsageIndex

log = logging.getLogger(__name__)

EXISTS = "exists in the sandbox; move it away first"


@dataclass
class RestoreResult:
    """What :func:`restore` did: the sandbox paths it put back and the entries it left alone."""

    restored: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "skipped": [s.to_dict() for s in self.skipped]}


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
    sandbox, archive = roots(settings)
    result = RestoreResult()
    with exclusive(settings):
        try:
            for entry in selected:
                path = str(entry.get("path"))
                try:
                    _restore_one(entry, sandbox, archive)
                except Refused as exc:
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
        raise Refused(f"deleted by rule {entry.get('rule')}; nothing to restore", failed=False)
    fields = entry_fields(entry)
    if fields is None:
        raise Refused("not a valid manifest entry")
    path, archived, digest, size, mtime_ns, atime_ns, mode = fields
    parts, source = path_parts(path), path_parts(archived)
    if parts is None:
        raise Refused("outside the sandbox")
    if source is None or source[0] != ARCHIVE_AREA:
        raise Refused("the archived file is not in the archive zone's sandbox area")
    try:
        folder = reach_folder(archive, source[:-1])
    except FileNotFoundError:
        raise _gone(sandbox, parts, digest) from None
    try:
        try:
            fd, before = open_regular(folder, source[-1])
        except FileNotFoundError:
            raise _gone(sandbox, parts, digest) from None
        try:
            if before.st_size != size or copy_and_hash_fd(fd)[0] != digest:
                raise Refused("the archived file does not match the manifest (size or sha256); left in the archive")
            target = reach_folder(sandbox, parts[:-1], create=True)
            try:
                if lexists(parts[-1], target):
                    raise Refused(EXISTS)
                move_file(folder, source[-1], fd, before, target, parts[-1], expect=digest,
                          times=(atime_ns, mtime_ns), mode=mode)
            finally:
                os.close(target)
        finally:
            os.close(fd)
    finally:
        os.close(folder)


def _gone(sandbox: str, parts: list[str], digest: str) -> Refused:
    """Why an entry whose archived file is gone is skipped."""
    try:
        folder = reach_folder(sandbox, parts[:-1])
        try:
            fd, _ = open_regular(folder, parts[-1])
        finally:
            os.close(folder)
        try:
            same = copy_and_hash_fd(fd)[0] == digest
        finally:
            os.close(fd)
    except (OSError, Refused):
        same = False
    if same:
        return Refused("already restored", failed=False)
    return Refused("the archived file is gone; nothing to restore")


def _at_or_under(path: object, prefix: str) -> bool:
    return isinstance(path, str) and (path == prefix or path.startswith(prefix + "/") or not prefix)
