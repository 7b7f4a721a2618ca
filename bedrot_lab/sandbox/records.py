"""What the usage index records: files, their owners (from where they lie) and file-system changes."""

# Standard library only: the full scan's helper process (see walk.py) imports this module.

from __future__ import annotations

import re
from dataclasses import dataclass

#: an MLflow run id, as the folder name under ``users/<user>/<project>/runs/``
RUN_ID = re.compile(r"[0-9a-f]{32}")
#: the kinds of :class:`Change`
CHANGE_KINDS = frozenset({"created", "modified", "deleted", "moved"})


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose a folder is, from where it lies under the sandbox.

    ``area`` is ``"users"`` for personal workspaces, else the top folder under
    ``sandbox/`` (a shared area), or ``""`` for files directly in ``sandbox/``.
    ``user``, ``project`` and ``run_id`` come from
    ``users/<user>/<project>/runs/<run id>/...`` as far as the path goes.
    """

    area: str
    user: str | None = None
    project: str | None = None
    run_id: str | None = None


def owner_of(relative_dir: str) -> Owner:
    """The owner of the files in folder ``relative_dir`` (relative to the sandbox root,
    ``"/"``-separated, ``""`` for the root itself).

    >>> owner_of("users/ana/churn/runs/0123456789abcdef0123456789abcdef/ckpt")
    Owner(area='users', user='ana', project='churn', run_id='0123456789abcdef0123456789abcdef')
    >>> owner_of("analysis/q3")
    Owner(area='analysis', user=None, project=None, run_id=None)
    """
    area, user, project, run_id = owner_key(relative_dir)
    return Owner(area, user or None, project or None, run_id or None)


def owner_key(relative_dir: str) -> tuple[str, str, str, str]:
    """owner_of() as the four strings stored in the index, "" for none."""
    parts = [part for part in relative_dir.split("/", 5) if part and part != "."]
    if not parts:
        return ("", "", "", "")
    if parts[0] != "users":
        return (parts[0], "", "", "")
    user = parts[1] if len(parts) > 1 else ""
    project = parts[2] if len(parts) > 2 else ""
    run_id = parts[4] if len(parts) > 4 and parts[3] == "runs" and RUN_ID.fullmatch(parts[4]) else ""
    return ("users", user, project, run_id)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file (or link, or other non-folder entry) as the index knows it.

    ``path`` is relative to the sandbox root and ``"/"``-separated. Times are
    seconds since the epoch as ``os.lstat`` gave them when the file was last
    scanned or changed; the watcher does not see reads, so ``atime`` is as fresh
    as the last reconcile. A symbolic link is recorded with its own ``lstat``
    (``is_link`` true) and never followed.
    """

    path: str
    size: int
    mtime: float
    atime: float
    ctime: float
    is_link: bool
    owner: Owner


@dataclass(frozen=True, slots=True)
class Change:
    """One file-system change for :meth:`~bedrot_lab.sandbox.index.UsageIndex.apply`.

    ``kind`` is ``"created"``, ``"modified"``, ``"deleted"`` or ``"moved"``;
    ``path`` (and ``dest`` for a move) are relative to the sandbox root. A move
    whose ``dest`` is None or outside the sandbox counts as a deletion.
    """

    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False
