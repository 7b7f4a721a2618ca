"""The daemon as a built-in plugin: it claims ``[daemon]`` and sends the webhook alerts. The
rest of the daemon is imported only when a daemon command runs (the alerts, when one is sent)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrot_lab import hookimpl

if TYPE_CHECKING:
    from bedrot_lab.config import Settings
    from bedrot_lab.sandbox.violations import Transition


@hookimpl
def register_settings(register: Callable[..., None]) -> None:
    register("daemon", check_table)


def check_table(values: Mapping[str, Any], path: Path | None) -> None:
    """Parse ``[daemon]`` as the daemon will, so a mistake is named by every command."""
    from .settings import DaemonSettings

    DaemonSettings.from_table(values, path)


@hookimpl
def housekeeping_jobs(register: Callable[..., None]) -> None:
    """``reap`` (runs whose process is gone end KILLED) and ``gc`` (``mlflow gc``, off by default)."""
    from .reap import JOBS

    for job in JOBS:
        register(job)


@hookimpl(trylast=True)
def handle_violation(transition: Transition, settings: Settings) -> None:
    """POST each transition to ``[daemon.alerts] webhook``, when one is set; ``trylast``
    like the log sink, so that plugins' sinks do not wait on a webhook that is down."""
    from .alerts import send_alert

    send_alert(transition, settings)
