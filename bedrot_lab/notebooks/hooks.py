"""Notebooks and scripts as a built-in plugin: it makes an experiment of a ``.ipynb`` or
``.py`` file (``experiment_from_file``); papermill and the rest are imported only when one runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bedrot_lab import hookimpl


@hookimpl
def experiment_from_file(path: Path, settings: Any) -> Any:
    if path.suffix == ".ipynb":
        from .notebook import notebook_experiment

        return notebook_experiment(path, settings.root)
    if path.suffix == ".py":
        from .script import script_experiment

        return script_experiment(path, settings.root)
    return None
