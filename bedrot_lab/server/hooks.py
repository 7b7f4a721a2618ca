"""The server as a built-in plugin: it claims ``[server]``; the rest of it is imported only
when a ``bedrot-lab server`` command runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bedrot_lab import hookimpl


@hookimpl
def register_settings(register: Callable[..., None]) -> None:
    register("server", check_table)


def check_table(values: Mapping[str, Any], path: Path | None) -> None:
    """Parse ``[server]`` as ``server start`` will, so a mistake is named by every command."""
    from .settings import ServerSettings

    ServerSettings.from_table(values, path)
