"""The sandbox zone's accounts: a usage index of every file, kept current by a watcher."""

from __future__ import annotations

from .index import (
           Change,
           FileRecord,
           Owner,
           ReconcileStats,
           ScanStats,
           UsageIndex,
           owner_of,
)
from .watcher import SandboxWatcher

__all__ = ["Change", "FileRecord", "Owner", "ReconcileStats", "SandboxWatcher", "ScanStats", "UsageIndex",
           "owner_of"]
