"""The errors of notebook and script runs."""

from __future__ import annotations

from ..errors import BedrotLabError, UsageError


class NotebookError(UsageError):
    """A notebook or script that cannot be run as it is (unreadable, a bad parameters cell)."""


class CellFailed(BedrotLabError):
    """A notebook cell raised: the run ends FAILED, naming the cell."""


class ScriptFailed(BedrotLabError):
    """A script exited with a non-zero code: the run ends FAILED, with its stderr."""
