"""The daemon as a built-in plugin: it claims ``[daemon]``. The rest of the daemon is
imported only when a daemon command runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bedrot_lab import hookimpl


@hookimpl
def register_settings(register: Callable[..., None]) -> None:
    register("daemon", check_table)


def check_table(values: Mapping[str, Any], path: Path | None) -> None:
    """Parse ``[daemon]`` as the daemon will, so a mistake is named by every command."""
    from .settings import DaemonSettings

    DaemonSettings.from_table(values, path)
