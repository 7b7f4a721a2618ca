"""The daemon's process: one per lake (a lock in the state folder), the lake's housekeeping
jobs on APScheduler, each run recorded, and a stop that takes seconds, not a job's length."""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BedrotLabError
from ..jobs import JobContext, JobStopped
from ..locks import LockBusy, lock_holder, owned_lock
from ..masked_logging import MaskingFormatter
from ..plugins import describe
from ..secrets import scrub
from . import child
from .history import JobHistory
from .leader import LeaderLock
from .settings import DaemonSettings, Schedule

if TYPE_CHECKING:
    from ..jobs import HousekeepingJob
    from ..lab import Lab

log = logging.getLogger("bedrot_lab.daemon")

LOCK_NAME = "daemon.lock"
LOG_NAME = "daemon.log"
#: seconds between the running daemon's status records (what `daemon status` reads)
STATUS_SECONDS = 2.0
#: seconds after which a service job (the watcher) that ended or failed is started again
SERVICE_RESTART_SECONDS = 30.0
#: seconds a new leader waits beyond its stop_timeout before its first job (the old leader's last job has ended)
HANDOVER_MARGIN = 1.0
_HOLDER = re.compile(r"pid (\d+) of (\S+) since (\S+)")


class DaemonRunning(BedrotLabError):
    """Another daemon holds this lake's lock."""


class LeaderLockLost(BedrotLabError):
    """The leader lock was lost while a job ignored the stop: the process must end at once."""


class UnknownJob(BedrotLabError):
    """No plugin registers a housekeeping job of that name."""

    exit_code = 2


@dataclass(frozen=True)
class Holder:
    """The daemon that holds a lake's lock: its pid, host and start time."""

    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since}"

    @property
    def uptime(self) -> float | None:
        try:
            return time.time() - datetime.fromisoformat(self.since).timestamp()
        except ValueError:
            return None


def current_holder(state_dir: Path) -> Holder | None:
    """The daemon running for the lake whose state folder is ``state_dir``, or None (a lock
    left by a daemon that died does not count: the kernel released it)."""
    record = lock_holder(state_dir / LOCK_NAME)
    match = _HOLDER.fullmatch(record) if record else None
    if record and match is None:
        return Holder(0, "?", record)
    return Holder(int(match[1]), match[2], match[3]) if match else None


def configure_logging(state_dir: Path, max_bytes: int, *, to_stderr: bool) -> Path:
    """Log the daemon and its jobs to ``<state>/daemon.log`` (rotated) and, in the
    foreground, to stderr; returns the log file's path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOG_NAME
    formatter = MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=3)]
    if to_stderr:
        handlers.append(logging.StreamHandler())
    for logger_name in ("bedrot_lab", "apscheduler"):
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.INFO if logger_name == "bedrot_lab" else logging.WARNING)
        logger.propagate = False
        for handler in handlers:
            handler.setFormatter(formatter)
            logger.addHandler(handler)
    # Daemon._on_event logs a failed, missed or skipped run once, in the daemon's words
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    return path


class Daemon:
    """The lake's housekeeping jobs, scheduled as ``[daemon]`` says.

    :meth:`serve` runs them until SIGTERM or SIGINT (one daemon per lake);
    :meth:`run_once` runs one job now, in the calling process.
    """

    def __init__(self, lab: Lab):
        self.lab = lab
        self.settings = DaemonSettings.from_settings(lab.settings)
        self.settings.unknown_jobs(lab.jobs)
        self.schedules: dict[str, Schedule] = {name: self.settings.schedule(job) for name, job in lab.jobs.items()}
        self.stop = threading.Event()
        self.state_dir = lab.settings.state_dir
        self._running: dict[str, threading.Thread] = {}
        self._children: dict[str, Any] | None = None  # job -> its process, while the daemon serves
        self._overran: set[str] = set()  # jobs still running at their next time (logged once)
        self._history: JobHistory | None = None
        self._starting = threading.Lock()  # a job starts, or its term's halt is set: not both at once
        self._said = ""  # the standby's last words (logged again only when they change)
        self._halt: threading.Event | None = None  # the current term's stop, while leading
        self._lost = ""  # why the leader lock was lost during this term

    # -- one job now ----------------------------------------------------------------------

    def run_once(self, name: str) -> tuple[bool, str]:
        """Run job ``name`` once in this process (stopped by SIGTERM or SIGINT); returns
        whether it succeeded and its summary. Recorded in the job history like a daemon's run."""
        if name not in self.lab.jobs:
            raise UnknownJob(f"no housekeeping job is called {name!r}; jobs: {', '.join(self.lab.jobs) or 'none'}")
        with self._stop_on_signals(), JobHistory.for_state(self.state_dir) as history:
            self._history = history
            try:
                return self._run(name, raise_errors=False)
            finally:
                self._history = None

    # -- the daemon ----------------------------------------------------------------------

    def serve(self) -> bool:
        """Run the jobs until SIGTERM or SIGINT, holding the lake's daemon lock (and, with
        ``[daemon] leader_lock``, only while holding the leader lock; a standby otherwise).
        Returns False when a job was still running at the stop deadline (the caller should
        then end the process without waiting for it); raises :class:`LeaderLockLost` when
        that happened because the leader lock was lost (end the process at once, too)."""
        since = datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            with owned_lock(self.state_dir / LOCK_NAME, f"{socket.gethostname()} since {since}"):
                return self._serve(since)
        except LockBusy as busy:
            raise DaemonRunning(f"a daemon already runs for this lake: {busy.holder}; see `bedrot-lab daemon "
                                "status`, stop it with `bedrot-lab daemon stop`") from None

    def _serve(self, since: str) -> bool:
        enabled = [name for name, schedule in self.schedules.items() if schedule.enabled]
        leader = self._leader_lock()
        with self._stop_on_signals(), JobHistory.for_state(self.state_dir) as history:
            self._history = history
            self._children = {}
            leading = leader is None or leader.acquire()
            history.set_status(state="running", pid=os.getpid(), host=socket.gethostname(), since=since,
                               started=time.time(), stopped=None, jobs=enabled, next_runs={}, running=[],
                               **self._role(leader, leading))
            if leader is not None:
                log.info("daemon started (pid %d); leader lock: %s, key %d, every %g s", os.getpid(), leader.where,
                         leader.key, leader.poll)
            late: list[str] = []
            try:
                while not self.stop.is_set():
                    if leading:
                        late = self._lead(history, enabled, leader)
                        if late and not self.stop.is_set():
                            raise LeaderLockLost(f"lost the leader lock while {', '.join(late)} ran on past the "
                                                 "stop deadline: the daemon ends so that it cannot run on without it")
                    else:
                        self._stand_by(history, leader)
                    leading = not self.stop.is_set() and (leader is None or leader.acquire())
            finally:
                if leader is not None:
                    leader.close()
                history.set_status(state="stopped", stopped=time.time(), next_runs={}, running=late, role=None,
                                   leader=None)
                self._history = None
        if late:
            log.warning("daemon stopped; %s still running at the deadline: ended with the process", ", ".join(late))
        else:
            log.info("daemon stopped")
        return not self._running

    def _leader_lock(self) -> LeaderLock | None:
        """The leader lock of ``[daemon] leader_lock``, connected (or None without one)."""
        if self.settings.leader_lock is None:
            return None
        leader = LeaderLock(self.settings.leader_lock, self.lab.settings.name, self.settings.leader_poll,
                            grace=self.settings.stop_timeout)
        leader.connect()
        return leader

    def _role(self, leader: LeaderLock | None, leading: bool) -> dict[str, Any]:
        """The status's ``role`` and ``leader``: None without a leader lock."""
        if leader is None:
            return {"role": None, "leader": None}
        return {"role": "leader" if leading else "standby", "leader": leader.name if leading else self._leader(leader)}

    def _leader(self, leader: LeaderLock) -> str:
        return f"unknown ({leader.problem})" if leader.problem else leader.holder()

    def _lead(self, history: JobHistory, enabled: list[str], leader: LeaderLock | None) -> list[str]:
        """Run the jobs until the daemon stops or, with a leader lock, loses it; returns the
        jobs still running at the stop deadline."""
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        halt = self._halt = threading.Event()  # this term's stop: the jobs see it as ctx.stopping
        if self.stop.is_set():
            halt.set()
        self._lost = ""
        history.set_status(**self._role(leader, True))
        jobs = ", ".join(f"{name} {self.schedules[name].describe()}" for name in enabled) or "no jobs enabled"
        if leader is None:
            log.info("daemon started (pid %d): %s", os.getpid(), jobs)
        else:
            self._said = ""
            leader.watch(self._lose)
            # a leader that lost the lock a moment ago may still be stopping its jobs: give it its stop deadline
            handover = self.settings.stop_timeout + HANDOVER_MARGIN
            log.info("leader now (%s); the jobs start in %g s: %s", leader.name, handover, jobs)
            if halt.wait(handover):
                leader.unwatch()
                self._halt = None
                if self._lost:
                    log.error("lost the leader lock (%s) before any job started; standby", self._lost)
                return []
        scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max(4, len(enabled) + 1))})
        scheduler.add_listener(lambda event: self._on_event(scheduler, event, halt),
                               EVENT_JOB_ERROR | EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
        for name in enabled:
            self._add(scheduler, name, history, halt)
        scheduler.start()
        self._record_status(scheduler, history)
        try:
            while not halt.wait(STATUS_SECONDS):
                self._record_status(scheduler, history)
        finally:
            with self._starting:  # set already (a signal, the lock lost); under the lock, no job starts after this
                halt.set()
            if self._lost:
                log.error("lost the leader lock (%s): stopping the jobs (%s), then standby", self._lost,
                          ", ".join(self._running) or "none running")
            else:
                log.info("stopping: %s", ", ".join(self._running) or "no job running")
            scheduler.shutdown(wait=False)
            self._signal_children(signal.SIGTERM)
            late = [] if self._join(self.settings.stop_timeout) else sorted(self._running)
            if late:  # a job in a child is killed; a job in a thread ends with the process
                self._signal_children(signal.SIGKILL)
                self._join(2.0)
            if leader is not None:
                leader.unwatch()
            history.set_status(next_runs={}, running=late)
            self._halt = None
        return late

    def _lose(self, why: str) -> None:
        """The leader lock is gone (called by its watching thread): halt the term's jobs now."""
        self._lost = why
        halt = self._halt
        if halt is not None:
            halt.set()

    def _stop_now(self) -> None:
        """SIGTERM or SIGINT: the daemon stops, and with it the jobs of the term."""
        self.stop.set()
        halt = self._halt
        if halt is not None:
            halt.set()

    def _stand_by(self, history: JobHistory, leader: LeaderLock) -> None:
        """Wait one poll (or until the daemon stops) running nothing; say who leads when that changes."""
        holder = self._leader(leader)
        history.set_status(role="standby", leader=holder, next_runs={}, running=[], heartbeat=time.time())
        said = (f"the leader lock's database does not answer ({leader.problem})" if leader.problem
                else f"leader is {holder}")
        if said != self._said:
            log.info("standby: %s; trying again every %g s", said, leader.poll)
            self._said = said
        deadline = time.monotonic() + leader.poll
        while (left := deadline - time.monotonic()) > 0 and not self.stop.wait(min(STATUS_SECONDS, left)):
            history.set_status(heartbeat=time.time())

    def _add(self, scheduler: Any, name: str, history: JobHistory, halt: threading.Event, delay: float = 0.0) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.date import DateTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        job, schedule = self.lab.jobs[name], self.schedules[name]
        now = datetime.now().astimezone()
        first: datetime | None = None
        if job.service:  # once; _on_event starts it again when it ends
            trigger: Any = DateTrigger(now + timedelta(seconds=delay))
        elif schedule.every:
            trigger = IntervalTrigger(seconds=schedule.every)
            first = _first_interval_run(history.last_success(name), schedule.every, now)
        else:
            trigger = CronTrigger.from_crontab(schedule.cron)
            last = history.last_success(name)
            if last is not None:
                missed = trigger.get_next_fire_time(None, datetime.fromtimestamp(last).astimezone())
                first = now if missed is not None and missed <= now else None
        options: dict[str, Any] = {"id": name, "name": name, "misfire_grace_time": max(1, round(job.misfire_grace)),
                                   "coalesce": True, "max_instances": 1}
        if first is not None:
            options["next_run_time"] = first
        scheduler.add_job(self._run, trigger, args=[name], kwargs={"halt": halt}, **options)

    def _run(self, name: str, raise_errors: bool = True, halt: threading.Event | None = None) -> tuple[bool, str]:
        """Run job ``name`` (in this thread or its own process) unless ``halt`` (its term's
        stop; the daemon's by default) is set."""
        halt = halt or self.stop
        with self._starting:  # a term that ends sets its halt under this lock: no job starts after that
            if halt.is_set():
                return False, "not started: the daemon was stopping"
            self._running[name] = threading.current_thread()
        self._overran.discard(name)
        try:
            if self.lab.jobs[name].own_process and self._children is not None:
                return self._run_child(name, halt)
            return self._run_here(name, halt, raise_errors)
        finally:
            self._running.pop(name, None)

    def _run_here(self, name: str, halt: threading.Event, raise_errors: bool) -> tuple[bool, str]:
        job: HousekeepingJob = self.lab.jobs[name]
        history = self._history
        assert history is not None
        ctx = JobContext(self.lab, halt, self.schedules[name].options, logging.getLogger(f"bedrot_lab.daemon.{name}"),
                         notes=lambda values: history.note(name, values))
        run = history.started(name)
        try:
            result = job.run(ctx) or "done"
        except JobStopped:
            history.ended(run, None, "stopped half way: the daemon was stopping")
            log.info("%s: stopped half way", name)
            return False, "stopped"
        except Exception as exc:
            error = scrub(describe(exc))[0]
            history.ended(run, False, error)
            if raise_errors:
                raise  # the scheduler's error listener logs it with its traceback
            # a refusal the user can act on is one line; anything else keeps its traceback
            log.error("%s failed: %s", name, error, exc_info=None if isinstance(exc, BedrotLabError) else exc)
            return False, error
        history.ended(run, True, result)
        log.info("%s: %s", name, result)
        return True, result

    def _run_child(self, name: str, halt: threading.Event) -> tuple[bool, str]:
        """Run job ``name`` in a child process, which records its run and logs through this one."""
        history = self._history
        assert history is not None and self._children is not None
        started = time.time()
        try:
            process = child.start(self.lab.settings.root, name)
            self._children[name] = process
            if halt.is_set():  # the stop came while it was starting
                process.terminate()
            assert process.stderr is not None
            last_line = child.forward(process.stderr, name)
            code = process.wait()
        finally:
            self._children.pop(name, None)
        run = history.run_by(name, process.pid)
        if run is not None and run["ended"] is not None:
            return bool(run["ok"]), run["result"] or ""
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        result = f"its process ended ({how}) before the job did" + (f": {last_line}" if last_line else "")
        ok = None if halt.is_set() else False
        history.ended(run["id"] if run else history.started(name, at=started), ok, result)
        (log.info if ok is None else log.error)("%s: %s", name, result)
        return False, result

    def _signal_children(self, number: int) -> None:
        for process in list((self._children or {}).values()):
            try:
                process.send_signal(number)
            except ProcessLookupError:
                pass

    def _on_event(self, scheduler: Any, event: Any, halt: threading.Event) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED

        service = self.lab.jobs[event.job_id].service
        if service and event.code in (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED) and not halt.is_set():
            assert self._history is not None
            self._add(scheduler, event.job_id, self._history, halt, delay=SERVICE_RESTART_SECONDS)
        if event.code == EVENT_JOB_EXECUTED:
            return
        if event.code == EVENT_JOB_ERROR:
            again = f"it starts again in {SERVICE_RESTART_SECONDS:g} s" if service else "it runs again at its next time"
            error = event.exception
            log.error("%s failed: %s; %s", event.job_id, describe(error), again, exc_info=None if isinstance(
                error, BedrotLabError) else (type(error), error, error.__traceback__))
        elif event.code == EVENT_JOB_MISSED:
            log.warning("%s missed its time (%s); it runs at its next one", event.job_id, event.scheduled_run_time)
        elif event.job_id not in self._overran:  # once per run, not at every time it outlasts
            self._overran.add(event.job_id)
            log.info("%s is still running; its next times are skipped until it ends", event.job_id)

    def _record_status(self, scheduler: Any, history: JobHistory) -> None:
        next_runs = {job.id: job.next_run_time.timestamp() for job in scheduler.get_jobs() if job.next_run_time}
        history.set_status(heartbeat=time.time(), next_runs=next_runs, running=sorted(self._running))

    def _join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._running

    def _stop_on_signals(self) -> Any:
        return _SignalStop(self._stop_now)


class _SignalStop:
    """SIGTERM and SIGINT call ``stop`` for the block (in the main thread), then the old
    handlers come back."""

    def __init__(self, stop: Callable[[], None]):
        self.stop = stop
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for number in (signal.SIGTERM, signal.SIGINT):
            self.previous[number] = signal.signal(number, lambda *_: self.stop())

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _first_interval_run(last_success: float | None, every: float, now: datetime) -> datetime:
    """When an interval job first runs after a (re)start: at once when it never succeeded or
    its last success is older than its interval (a due run is not lost, and a backlog is not
    replayed), else one interval after that success."""
    if last_success is None or time.time() - last_success >= every:
        return now
    return datetime.fromtimestamp(last_success + every).astimezone()
