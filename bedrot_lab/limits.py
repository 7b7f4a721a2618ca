"""Compute limits per run (``[compute.limits]``): a limited run's body runs in a forked child
process, which the lab watches and stops when its processes use more than a limit allows."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import RUN_LIMIT_KEYS, memory_limit_bytes
from .errors import BedrotLabError
from .fsutil import folder_bytes
from .processes import end_with_parent

if TYPE_CHECKING:
    import psutil

    from .config import Settings

log = logging.getLogger(__name__)

#: the limit that stopped a run (memory, cpu_seconds, wall_seconds or workdir), and its value as configured
LIMIT_TAG = "bedrot.limit"
LIMIT_VALUE_TAG = "bedrot.limit.value"
#: every limit that applied to a run: ``memory=4GB wall_seconds=7200``
LIMITS_TAG = "bedrot.limits"
#: seconds between two looks at the run's processes (memory, CPU, wall time) ...
POLL_SECONDS = 0.2
#: ... and between two counts of the bytes under its workdir
WORKDIR_POLL_SECONDS = 1.0
#: seconds a run past its wall time (or an interrupted one) gets to record its own end before SIGKILL
GRACE_SECONDS = 5.0
#: seconds between two sends of the metrics a limited run logged (a killed child loses what it holds)
FLUSH_SECONDS = 0.5
#: the longest error a child reports (the pipe to the parent holds 64 KiB before the child would block)
ERROR_CHARS = 5000


@dataclass(frozen=True)
class RunLimits:
    """The limits of one run; None where none applies. Sizes and seconds as configured;
    ``origin`` names the table each limit comes from (``[compute.limits.users.ana]``)."""

    memory: str | None = None
    cpu_seconds: float | None = None
    wall_seconds: float | None = None
    workdir: str | None = None
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __bool__(self) -> bool:
        return any(value is not None for _, value in self.items(every=True))

    def items(self, every: bool = False) -> list[tuple[str, Any]]:
        """(key, value) of each limit that applies (of every limit with ``every``)."""
        found = [(key, getattr(self, key)) for key in RUN_LIMIT_KEYS]
        return found if every else [(key, value) for key, value in found if value is not None]

    def shown(self, key: str) -> str:
        """Limit ``key`` as configured: ``"512MiB"``, ``"2"``."""
        value = getattr(self, key)
        return f"{value:g}" if isinstance(value, (int, float)) else str(value)

    def describe(self) -> str:
        """``memory=4GB cpu_seconds=3600``: every limit that applies (the ``bedrot.limits`` tag)."""
        return " ".join(f"{key}={self.shown(key)}" for key, _ in self.items())

    def bytes(self, key: str) -> int | None:
        """Size limit ``key`` (memory, workdir) in bytes."""
        value = getattr(self, key)
        return None if value is None else memory_limit_bytes(value)


def limits_for(settings: Settings, user: str, experiment_name: str) -> RunLimits:
    """The limits of a run of ``experiment_name`` by ``user``: ``[compute.limits]``, overridden by
    the user's table, overridden by the experiment's; a limit set to 0 applies to no run."""
    tables = settings.run_limits
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for where, values in (("[compute.limits]", tables.every_run),
                          (f"[compute.limits.users.{_toml_key(user)}]", tables.users.get(user, {})),
                          (f"[compute.limits.experiments.{_toml_key(experiment_name)}]",
                           tables.experiments.get(experiment_name, {}))):
        merged.update(values)
        origin.update(dict.fromkeys(values, where))
    applied = {key: value for key, value in merged.items() if value != 0}
    return RunLimits(**applied, origin={key: origin[key] for key in applied})


def _toml_key(name: str) -> str:
    return name if name.replace("-", "").replace("_", "").isalnum() and name.isascii() else json.dumps(name)


class ChildStopped(BedrotLabError):
    """A run's child process ended without recording its own end: stopped at a limit, after an
    interrupt, or dead of something else. The parent records it: ``status`` and the one-line message."""

    def __init__(self, message: str, status: str, usage: ChildUsage, interrupted_by: str = ""):
        super().__init__(message)
        self.status = status
        self.usage = usage
        self.interrupted_by = interrupted_by


@dataclass(frozen=True)
class Breach:
    """The limit a run went past, and what it used."""

    key: str
    value: str
    origin: str
    used: str

    @property
    def line(self) -> str:
        """``stopped by [compute.limits] memory = 512MiB: the run's processes held 540 MiB``."""
        return f"stopped by {self.origin} {self.key} = {self.value}: {self.used}"


class ChildUsage:
    """What a run's child process used (``run.*`` metrics), from its resource usage as it was reaped."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.wall = 0.0
        self.rusage: Any = None

    def ended(self, rusage: Any) -> None:
        self.wall = time.perf_counter() - self.start
        self.rusage = rusage

    def metrics(self) -> dict[str, float]:
        found = {"run.wall_seconds": round(self.wall or time.perf_counter() - self.start, 4)}
        if self.rusage is not None:
            found["run.cpu_seconds"] = round(self.rusage.ru_utime + self.rusage.ru_stime, 4)
            found["run.peak_rss_mb"] = round(self.rusage.ru_maxrss / 1024, 1)
        return found


def run_in_child(limits: RunLimits, work: Callable[[], None], outcome: Any, recorder: Any,
                 workdir: Path) -> ChildUsage:
    """Run ``work`` (a run's body, recording its own ending: failure, ``on_run_end``, the run
    context closed) in a forked child process under ``limits``, and return what the child used.

    The child reports ``outcome``'s status, error and ``interrupted_by`` back; the run itself
    (opened before, ended after) stays the caller's. The child is stopped when its processes
    (children and grandchildren too) go past a limit: SIGKILL for memory, CPU seconds and the
    bytes under ``workdir``; SIGTERM for wall time (the child records its end), SIGKILL after
    :data:`GRACE_SECONDS`. A stopped run is tagged :data:`LIMIT_TAG` and :data:`LIMIT_VALUE_TAG`,
    and its error is the limit's :attr:`Breach.line`. Raises :class:`ChildStopped` when the child
    could not record its end (the caller does). An interrupt of this process is passed on to the child.
    """
    recorder.flush()  # nothing buffered here may be lost or sent twice
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else what is buffered is printed by both processes
    read_end, write_end = os.pipe()
    usage = ChildUsage()
    parent = os.getpid()
    # held until the child handles them itself: one raised in it before then would go up the lab's stack
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(work, outcome, recorder, (read_end, write_end), parent, mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_end)
    try:
        watch = _Watch(pid, limits, workdir)
        breach, interrupted = watch.wait()
        usage.ended(watch.rusage)
        report = _read_report(read_end)
    finally:
        os.close(read_end)
    if report is not None:
        outcome.status, outcome.error = report["status"], report["error"]
        outcome.interrupted_by = report["interrupted_by"]
        if outcome.status == "FINISHED":
            breach = None  # it was done before it was stopped
    if breach is not None:
        recorder.set_tags({LIMIT_TAG: breach.key, LIMIT_VALUE_TAG: breach.value, "error": breach.line}, by_name=False)
        status = "KILLED" if breach.key == "wall_seconds" else "FAILED"
        if report is None:
            raise ChildStopped(breach.line, status, usage)
        outcome.status, outcome.error, outcome.interrupted_by = status, breach.line, ""
    elif report is None:
        if interrupted:
            raise ChildStopped(f"interrupted by {interrupted}", "KILLED", usage, interrupted)
        raise ChildStopped(watch.death(), "FAILED", usage)
    return usage


def _child(work: Callable[[], None], outcome: Any, recorder: Any, pipe: tuple[int, int], parent: int,
           mask: Any) -> None:
    """The child's whole life: its own signal handling and connections, the work, its outcome
    reported, ``os._exit`` (never the parent's atexit handlers, never the end of the run, which
    is the parent's). ``mask`` is the signal mask to restore once it handles signals itself."""
    from .tracking import after_fork

    code = 1
    read_end, report_to = pipe
    try:
        os.close(read_end)
        _interrupt_once()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _end_with(parent)
        after_fork()
        threading.Thread(target=_send_metrics, args=(recorder,), name="bedrot-limited-flush", daemon=True).start()
        work()
        recorder.flush()  # the metrics it logged last: the parent ends the run, but from its own buffer
        with os.fdopen(report_to, "w") as report:
            report.write(json.dumps({"status": outcome.status, "error": outcome.error[:ERROR_CHARS],
                                   "interrupted_by": outcome.interrupted_by}))
        code = 0
    except BaseException:  # no report: the parent records the death
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _end_with(parent: int) -> None:
    """In the child (Linux): SIGTERM when the lab's process dies (``kill -9``), so that the run's body
    does not go on unwatched; it records its failure, and the daemon's reaper ends the run."""
    if end_with_parent() and os.getppid() != parent:  # gone before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


def _interrupt_once() -> None:
    """In the child: the first SIGINT or SIGTERM interrupts the body (KeyboardInterrupt, RunTerminated),
    later ones are ignored while it records its end. Ctrl-C reaches the child from the terminal and
    again from the parent, which passes on every interrupt it gets; a kill of the child alone remains
    the parent's last word after :data:`GRACE_SECONDS`."""
    from .runner import RunTerminated

    def interrupt(signum: int, frame: Any) -> None:
        for ignored in (signal.SIGINT, signal.SIGTERM):
            signal.signal(ignored, signal.SIG_IGN)
        raise KeyboardInterrupt() if signum == signal.SIGINT else RunTerminated()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)


def _send_metrics(recorder: Any) -> None:
    """Send the metrics the run queued every :data:`FLUSH_SECONDS`, so that a child stopped by
    SIGKILL loses at most that much of what it logged."""
    while True:
        time.sleep(FLUSH_SECONDS)
        try:
            if recorder.pending:
                recorder.flush()
        except Exception as exc:  # the next log or the end sends them again
            log.debug("metrics not sent yet: %s", exc)


def _read_report(read_end: int) -> dict[str, str] | None:
    """The child's report, if it wrote one (never blocks: a grandchild may hold the pipe open)."""
    os.set_blocking(read_end, False)
    chunks = []
    try:
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    try:
        report = json.loads(b"".join(chunks))
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


class _Watch:
    """The parent's watch over a child process and its descendants."""

    def __init__(self, pid: int, limits: RunLimits, workdir: Path):
        import psutil

        self.pid = pid
        self.limits = limits
        self.workdir = workdir
        self.process = psutil.Process(pid)
        self.start = time.monotonic()
        self.cpu_used = 0.0
        self.status = 0
        self.rusage: Any = None
        self._next_workdir = self.start
        try:  # readable once the child ends: the watch wakes at once instead of at its next look
            self._exit_fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # not Linux
            self._exit_fd = None

    def wait(self) -> tuple[Breach | None, str]:
        """Wait for the child to end, stopping it at its limits or when this process is
        interrupted; returns the limit it went past (if any) and the interrupting signal's name."""
        from .runner import RunTerminated

        breach: Breach | None = None
        interrupted = ""
        kill_at: float | None = None
        while True:
            try:
                if self._reaped():
                    break
                if kill_at is not None:
                    if time.monotonic() >= kill_at:
                        self._signal_tree(signal.SIGKILL)
                        kill_at = None
                elif breach is None:
                    breach = self._check()
                    if breach is not None and breach.key == "wall_seconds":
                        self._signal_tree(signal.SIGTERM)
                        kill_at = time.monotonic() + GRACE_SECONDS
                    elif breach is not None:
                        self._signal_tree(signal.SIGKILL)
                self._pause()
            except (KeyboardInterrupt, RunTerminated) as exc:
                if interrupted:
                    continue  # a second interrupt while the first is passed on
                interrupted = "SIGTERM" if isinstance(exc, RunTerminated) else "SIGINT"
                # Ctrl-C reached the child too (one process group), a kill of this pid did not
                self._signal(self.pid, signal.SIGTERM if interrupted == "SIGTERM" else signal.SIGINT)
                kill_at = time.monotonic() + GRACE_SECONDS
        if self._exit_fd is not None:
            os.close(self._exit_fd)
        return breach, interrupted

    def _pause(self) -> None:
        """Wait :data:`POLL_SECONDS`, or less when the child ends meanwhile."""
        if self._exit_fd is None:
            time.sleep(POLL_SECONDS)
        else:
            select.select([self._exit_fd], [], [], POLL_SECONDS)

    def _reaped(self) -> bool:
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped by the call an interrupt cut short
            return True
        if pid == 0:
            return False
        self.status, self.rusage = status, rusage
        return True

    def _check(self) -> Breach | None:
        """The first limit the child's processes are past, or None."""
        limits = self.limits
        wall = time.monotonic() - self.start
        if limits.wall_seconds is not None and wall > limits.wall_seconds:
            return self._breach("wall_seconds", f"the run was still going after {wall:.1f} s")
        processes = list(self._tree())
        if limits.memory is not None:
            held = sum(_rss(process) for process in processes)
            if held > (limits.bytes("memory") or 0):
                return self._breach("memory", f"the run's processes held {_size(held)}")
        if limits.cpu_seconds is not None:
            self.cpu_used = max(self.cpu_used, sum(_cpu_seconds(process) for process in processes))
            if self.cpu_used > limits.cpu_seconds:
                return self._breach("cpu_seconds", f"the run's processes used {self.cpu_used:.1f} CPU seconds")
        if limits.workdir is not None and time.monotonic() >= self._next_workdir:
            self._next_workdir = time.monotonic() + WORKDIR_POLL_SECONDS
            held = folder_bytes(self.workdir)
            if held > (limits.bytes("workdir") or 0):
                return self._breach("workdir", f"the run's workdir held {_size(held)}")
        return None

    def _breach(self, key: str, used: str) -> Breach:
        return Breach(key, self.limits.shown(key), self.limits.origin.get(key, "[compute.limits]"), used)

    def _tree(self) -> Iterator[psutil.Process]:
        """The child and its descendants, by parent pid (a kernel in a session of its own too)."""
        import psutil

        yield self.process
        try:
            yield from self.process.children(recursive=True)
        except psutil.Error:
            return

    def _signal_tree(self, signum: int) -> None:
        """Send ``signum`` to the child and its descendants. For SIGKILL, stop them all first
        (SIGSTOP) so that none starts another process unseen, then kill every one."""
        if signum != signal.SIGKILL:
            for process in self._tree():
                self._signal(process.pid, signum)
            return
        stopped: dict[int, psutil.Process] = {}
        while True:
            new = [process for process in self._tree() if process.pid not in stopped]
            if not new:
                break
            for process in new:
                stopped[process.pid] = process
                self._signal(process.pid, signal.SIGSTOP)
        for process in stopped.values():
            try:
                process.send_signal(signal.SIGKILL)  # psutil checks the pid is still this process
            except Exception:  # gone already
                pass

    @staticmethod
    def _signal(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except OSError:  # gone already
            pass

    def death(self) -> str:
        """Why the child ended without recording its end, in one line."""
        if os.WIFSIGNALED(self.status):
            number = os.WTERMSIG(self.status)
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            return f"the run's process was killed by {name} before it could record its end"
        return (f"the run's process exited with code {os.waitstatus_to_exitcode(self.status)} before it could "
                "record its end")


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except Exception:  # ended meanwhile
        return 0


def _cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds of ``process`` and of its children that it has reaped."""
    try:
        times = process.cpu_times()
    except Exception:  # ended meanwhile
        return 0.0
    return times.user + times.system + times.children_user + times.children_system


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
