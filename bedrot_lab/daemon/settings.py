"""The ``[daemon]`` table of ``bedrot-lab.toml``: job schedules and options, alerts, stop deadline, leader lock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..jobs import parse_duration
from ..secrets import scrub

if TYPE_CHECKING:
    from ..config import Settings
    from ..jobs import HousekeepingJob

DAEMON_KEYS = ("jobs", "alerts", "stop_timeout", "log_max_bytes", "leader_lock", "leader_poll")
SCHEDULE_KEYS = ("every", "cron", "enabled")
ALERT_KEYS = ("webhook", "timeout")
DEFAULT_STOP_TIMEOUT = 5.0
DEFAULT_LOG_MAX_BYTES = 5 << 20
DEFAULT_LEADER_POLL = 10.0
#: how a leader lock's URI may start; the psycopg driver's SQLAlchemy form is read as plain libpq
LEADER_LOCK_SCHEMES = ("postgresql+psycopg://", "postgresql://", "postgres://")


@dataclass(frozen=True)
class Schedule:
    """When one job runs: every ``every`` seconds, or at ``cron``; and its options."""

    every: float | None = None
    cron: str | None = None
    enabled: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        if self.cron:
            return f"cron {self.cron}"
        return f"every {_seconds_text(self.every)}" if self.every else "while the daemon runs"


@dataclass(frozen=True)
class DaemonSettings:
    """``[daemon]`` parsed: the per-job tables (their shape checked), alerts, limits."""

    jobs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    webhook: str | None = None
    webhook_timeout: float = 5.0
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    #: a libpq URI (``postgresql://...``): daemons of this lake on several hosts take turns by it
    leader_lock: str | None = None
    leader_poll: float = DEFAULT_LEADER_POLL
    path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> DaemonSettings:
        return cls.from_table(settings.tables.get("daemon", {}), settings.config_file)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], path: Path | None = None) -> DaemonSettings:
        """Parse ``[daemon]``; a mistake raises :class:`ConfigError` naming the file and key."""
        _known(table, DAEMON_KEYS, "daemon", path)
        jobs = table.get("jobs", {})
        if not isinstance(jobs, Mapping):
            raise ConfigError("expected a table of jobs ([daemon.jobs.NAME])", path, "daemon.jobs")
        for name, job in jobs.items():
            if not isinstance(job, Mapping):
                raise ConfigError("expected a table", path, f"daemon.jobs.{name}")
            _schedule_shape(job, f"daemon.jobs.{name}", path)
        alerts = table.get("alerts", {})
        if not isinstance(alerts, Mapping):
            raise ConfigError("expected a table", path, "daemon.alerts")
        _known(alerts, ALERT_KEYS, "daemon.alerts", path)
        webhook = alerts.get("webhook")
        if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))):
            raise ConfigError(f"expected an http:// or https:// URL, got {webhook!r}", path, "daemon.alerts.webhook")
        return cls(
            jobs=dict(jobs),
            webhook=webhook,
            webhook_timeout=_positive(alerts.get("timeout", 5.0), "daemon.alerts.timeout", path),
            stop_timeout=_positive(table.get("stop_timeout", DEFAULT_STOP_TIMEOUT), "daemon.stop_timeout", path),
            log_max_bytes=int(_positive(table.get("log_max_bytes", DEFAULT_LOG_MAX_BYTES), "daemon.log_max_bytes",
                                        path)),
            leader_lock=_leader_lock(table.get("leader_lock"), path),
            leader_poll=_at_least_a_second(table.get("leader_poll", DEFAULT_LEADER_POLL), "daemon.leader_poll", path),
            path=path,
        )

    def unknown_jobs(self, known: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` for a ``[daemon.jobs.NAME]`` no plugin registers."""
        for name in self.jobs:
            if name not in known:
                raise ConfigError(f"no housekeeping job is called {name!r}; jobs: {', '.join(sorted(known))}",
                                  self.path, f"daemon.jobs.{name}")

    def schedule(self, job: HousekeepingJob) -> Schedule:
        """``job``'s schedule and options: its defaults, as ``[daemon.jobs.NAME]`` changes them."""
        table = self.jobs.get(job.name, {})
        key = f"daemon.jobs.{job.name}"
        options = dict(job.options)
        for option, value in table.items():
            if option in SCHEDULE_KEYS:
                continue
            if option not in job.options:
                takes = ", ".join([*SCHEDULE_KEYS, *job.options])
                raise ConfigError(f"unknown key; job {job.name!r} takes {takes}", self.path, f"{key}.{option}")
            default = job.options[option]
            if default is not None and not _same_type(value, default):
                raise ConfigError(f"expected {type(default).__name__}, got {value!r}", self.path, f"{key}.{option}")
            options[option] = value
        if job.service:
            if "every" in table or "cron" in table:
                raise ConfigError(f"job {job.name!r} runs while the daemon runs; it takes no every or cron",
                                  self.path, key)
            return Schedule(enabled=table.get("enabled", job.enabled), options=options)
        every, cron = table.get("every"), table.get("cron")
        if every is None and cron is None:
            every, cron = job.every, job.cron
        return Schedule(every=parse_duration(every) if every else None, cron=cron,
                        enabled=table.get("enabled", job.enabled), options=options)


def _schedule_shape(job: Mapping[str, Any], key: str, path: Path | None) -> None:
    if "every" in job and "cron" in job:
        raise ConfigError("give every or cron, not both", path, key)
    if "every" in job:
        try:
            parse_duration(job["every"])
        except ValueError as exc:
            raise ConfigError(str(exc), path, f"{key}.every") from None
    if "cron" in job:
        check_cron(job["cron"], path, f"{key}.cron")
    if "enabled" in job and not isinstance(job["enabled"], bool):
        raise ConfigError(f"expected true or false, got {job['enabled']!r}", path, f"{key}.enabled")


def check_cron(text: object, path: Path | None, key: str) -> None:
    """A crontab line with five fields (``"0 3 * * *"``), as APScheduler reads it."""
    if not isinstance(text, str) or len(text.split()) != 5:
        raise ConfigError(f"expected a crontab line of five fields such as '0 3 * * *', got {text!r}", path, key)
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(text)
    except ValueError as exc:
        raise ConfigError(f"not a valid crontab line {text!r} ({exc})", path, key) from None


def _known(table: Mapping[str, Any], keys: tuple[str, ...], name: str, path: Path | None) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(f"unknown key; [{name}] takes {', '.join(keys)}", path, f"{name}.{key}")


def _positive(value: object, key: str, path: Path | None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"expected a positive number, got {value!r}", path, key)
    return float(value)


def _leader_lock(value: object, path: Path | None) -> str | None:
    """The leader lock's URI as libpq reads it (``postgresql+psycopg://`` becomes ``postgresql://``)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(LEADER_LOCK_SCHEMES):
        shown = scrub(value)[0] if isinstance(value, str) else repr(value)
        raise ConfigError(f"expected a PostgreSQL URI such as 'postgresql+psycopg://USER@HOST:5432/DATABASE', "
                          f"got {shown!r}", path, "daemon.leader_lock")
    return value.replace("postgresql+psycopg://", "postgresql://", 1)


def _at_least_a_second(value: object, key: str, path: Path | None) -> float:
    seconds = _positive(value, key, path)
    if seconds < 1:
        raise ConfigError(f"expected 1 (second) or more, got {value!r}", path, key)
    return seconds


def _same_type(value: object, default: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _seconds_text(seconds: float | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
