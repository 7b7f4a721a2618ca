"""Housekeeping jobs: what a plugin hands the daemon to run on a schedule (``housekeeping_jobs``)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lab import Lab

#: "30s", "15m", "1h", "1d" (a number, then a unit)
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``"30s"``, ``"15m"``, ``"1h"`` or ``"1d"``; :class:`ValueError` otherwise."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"not a duration: {text!r}; write a number and a unit, such as 30s, 15m, 1h or 1d")
    return float(match[1]) * _UNITS[match[2]]


class JobStopped(Exception):
    """Raised by :meth:`JobContext.check_stop` when the daemon is stopping."""


@dataclass
class JobContext:
    """What a job's function gets: the lab, the daemon's stop event, its options."""

    lab: Lab
    stop: threading.Event
    options: Mapping[str, Any] = field(default_factory=dict)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("bedrot_lab.daemon.job"))
    #: where :meth:`note` goes (the daemon's status record); nowhere by default
    notes: Callable[[Mapping[str, Any]], None] = lambda values: None

    @property
    def stopping(self) -> bool:
        """True once the daemon was asked to stop: finish the unit of work at hand, then return."""
        return self.stop.is_set()

    def note(self, **values: Any) -> None:
        """Record the job's state as it runs (JSON values), for ``bedrot-lab daemon status``:
        the watcher notes its mode, heartbeat and lost-event count this way."""
        self.notes(values)

    def check_stop(self) -> None:
        """Raise :class:`JobStopped` if the daemon is stopping (call it between units of work)."""
        if self.stop.is_set():
            raise JobStopped()


@dataclass(frozen=True)
class HousekeepingJob:
    """A job the housekeeping daemon runs on a schedule, and ``bedrot-lab daemon run-job NAME`` once.

    ``run(ctx)`` does one round of the job and returns a one-line summary of what it
    did (or None). It should check ``ctx.stopping`` (or call ``ctx.check_stop()``)
    between units of work: the daemon stops within seconds and never interrupts a
    job by force. ``every`` (``"15m"``) or ``cron`` (``"0 3 * * *"``) is the default
    schedule, which ``[daemon.jobs.NAME]`` may change; a ``service`` job instead runs
    from the daemon's start until it stops (the sandbox watcher). ``options`` maps
    each option ``[daemon.jobs.NAME]`` may set to its default (its type is the
    default's type). ``enabled`` is the default of ``enabled``. An ``own_process`` job
    is run by the daemon as ``bedrot-lab daemon run-job NAME`` in a child process: for a
    job that imports MLflow, pandas or matplotlib, so that the daemon stays small (what
    the job allocated is returned when it ends) and a stop can end it by signal.
    """

    name: str
    run: Callable[[JobContext], str | None]
    every: str | None = None
    cron: str | None = None
    service: bool = False
    own_process: bool = False
    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    misfire_grace: float = 60.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", self.name or ""):
            raise ValueError(f"job name {self.name!r}: lower-case letters, digits, - and _, starting with a letter")
        if not self.service and (self.every is None) == (self.cron is None):
            raise ValueError(f"job {self.name!r}: give it either every or cron (or make it a service)")
        if self.service and self.own_process:
            raise ValueError(f"job {self.name!r}: a service runs in the daemon's process")
        if self.every is not None:
            parse_duration(self.every)
