"""bedrot-lab: plugin-based experiment tracking for the BEDROT data lake's sandbox."""

from __future__ import annotations

from .experiments import Experiment, Param, experiment
from .hookspecs import hookimpl
from .lake import Dataset

__version__ = "0.1.0"
__all__ = ["Dataset", "Experiment", "Param", "__version__", "experiment", "hookimpl"]
