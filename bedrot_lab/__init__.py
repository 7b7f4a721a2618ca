"""bedrot-lab: plugin-based experiment tracking for the BEDROT data lake's sandbox.

Everything a plugin author needs is importable from here (``__all__``); other
modules are the framework's own and may change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ConfigError, Settings
from .errors import BedrotLabError, UsageError
from .experiments import Experiment, Param, ParamError, experiment
from .hookspecs import hookimpl
from .jobs import HousekeepingJob, JobContext
from .lake import Dataset, DatasetError

if TYPE_CHECKING:
    from .context import RunContext
    from .lab import Lab
    from .notebooks.session import notebook_context
    from .sandbox.violation import Violation

__version__ = "0.1.0"

#: names loaded on first use, so that ``import bedrot_lab`` stays light
_LAZY = {"Lab": "lab", "RunContext": "context", "Violation": "sandbox.violation",
         "notebook_context": "notebooks.session"}

__all__ = [
    "BedrotLabError", "ConfigError", "Dataset", "DatasetError", "Experiment", "HousekeepingJob", "JobContext", "Lab",
    "Param", "ParamError", "RunContext", "Settings", "UsageError", "Violation", "__version__", "experiment",
    "hookimpl", "notebook_context",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
