"""What clean and restore share: the archive's layout, the manifest format, one clean or restore at a time."""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat as stat_module
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BedrotLabError
from ..fsutil import fsync_folder, write_all
from ..locks import LockBusy, owned_lock

if TYPE_CHECKING:
    from datetime import datetime

    from ..config import Settings

log = logging.getLogger(__name__)

MANIFEST_KIND = "bedrot-lab sandbox clean"
MANIFEST_VERSION = 1
#: cleaned files go to <archive zone>/ARCHIVE_AREA/<YYYY-MM-DD>/<path in the sandbox>
ARCHIVE_AREA = "sandbox"
#: the manifests of a day's cleans, in that day's folder
MANIFESTS_DIR = "_manifests"
LOCK_NAME = "sandbox-clean.lock"


class CleanupError(BedrotLabError):
    """A clean or restore that cannot go ahead (a bad manifest or argument, another clean
    running, a manifest that cannot be written); the message is one line."""


@dataclass(frozen=True)
class Skipped:
    """A file left alone, and why (one short phrase); ``failed`` is False when leaving it
    alone is the right outcome (a restore of a file that is back already)."""

    path: str
    reason: str
    failed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roots(settings: Settings) -> tuple[str, str]:
    """The sandbox and archive zones, resolved; neither may lie inside the other."""
    sandbox = os.path.realpath(settings.zone("sandbox"))
    archive = os.path.realpath(settings.zone("archive"))
    if sandbox == archive or archive.startswith(sandbox.rstrip("/") + "/") \
            or sandbox.startswith(archive.rstrip("/") + "/"):
        raise CleanupError(f"the archive zone ({archive}) and the sandbox ({sandbox}) must not lie inside one another")
    return sandbox, archive


@contextmanager
def exclusive(settings: Settings) -> Iterator[None]:
    """One clean or restore at a time in a lake; another one fails at once."""
    try:
        with owned_lock(settings.state_dir / "locks" / LOCK_NAME, settings.user):
            yield
    except LockBusy as busy:
        raise CleanupError(f"another sandbox clean or restore is running ({busy.holder}); "
                           "try again when it ends") from None


# -- the manifest ---------------------------------------------------------------------------


def manifest_entry(path: str, archived: str | None, digest: str, st: os.stat_result, rule: str,
                   action: str) -> dict[str, Any]:
    """The manifest line of sandbox file ``path``, archived to ``archived`` (relative to the
    archive zone) or deleted (None), as ``st`` found it."""
    return {"path": path, "archived": archived, "size": st.st_size, "sha256": digest, "mtime": st.st_mtime,
            "mtime_ns": st.st_mtime_ns, "atime_ns": st.st_atime_ns, "mode": stat_module.S_IMODE(st.st_mode),
            "rule": rule, "action": action}


def entry_fields(entry: dict[str, Any]) -> tuple[str, str, str, int, int, int, int] | None:
    """``path``, ``archived``, ``sha256``, ``size``, ``mtime_ns``, ``atime_ns`` and ``mode`` of
    the entry of an archived file; None when one is missing or of the wrong type (a hand-edited entry)."""
    path, archived, digest = entry.get("path"), entry.get("archived"), entry.get("sha256")
    numbers = [entry.get(key) for key in ("size", "mtime_ns", "atime_ns", "mode")]
    if not (isinstance(path, str) and isinstance(archived, str) and isinstance(digest, str)
            and all(isinstance(n, int) and not isinstance(n, bool) for n in numbers)):
        return None
    size, mtime_ns, atime_ns, mode = numbers
    return path, archived, digest, size, mtime_ns, atime_ns, mode


class ManifestWriter:
    """The JSON-lines manifest of one clean: created (with its header) just before the
    first file is touched, one fsynced line per file after it, removed again if no
    file was done."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.header = header
        self.fd: int | None = None
        self.entries = 0

    @classmethod
    def for_clean(cls, settings: Settings, archive: str, day: str, started: datetime, *, now: float,
                  older_than: float | None, only_user: str | None) -> ManifestWriter:
        """The manifest of a clean begun at ``started`` into ``archive``'s folder of ``day``,
        whose plan was made at ``now`` with ``older_than`` and ``only_user``."""
        header = {"kind": MANIFEST_KIND, "version": MANIFEST_VERSION, "created": started.isoformat(timespec="seconds"),
                  "user": settings.user, "sandbox": str(settings.zone("sandbox")),
                  "archive": str(settings.zone("archive")), "now": now, "older_than": older_than,
                  "only_user": only_user}
        name = f"clean-{started:%H%M%S}-{secrets.token_hex(3)}.jsonl"
        return cls(Path(archive, ARCHIVE_AREA, day, MANIFESTS_DIR, name), header)

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
