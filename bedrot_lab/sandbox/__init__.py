"""The sandbox zone's accounts: a usage index of every file, kept current by a watcher.

The names below are imported on first use, so that reading ``[sandbox]`` (every
command does) loads the rules and the index, not the watcher.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Change": "records", "FileRecord": "records", "Owner": "records", "owner_of": "records",
    "ReconcileStats": "index", "ScanStats": "index", "UsageIndex": "index", "SandboxWatcher": "watcher",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
