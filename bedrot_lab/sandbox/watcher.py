"""Keeps the sandbox usage index current from watchdog events, with a polling fallback."""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from .index import ReconcileStats, UsageIndex
from .records import Change

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

log = logging.getLogger(__name__)

#: file systems where inotify misses changes made elsewhere (other hosts, the VM host)
NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "9p", "ceph", "glusterfs", "lustre",
    "gpfs", "beegfs", "ocfs2", "gfs2", "davfs", "virtiofs", "vboxsf", "vmhgfs", "prl_fs",
    "fuse.sshfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "fuse.davfs2", "fuse.glusterfs",
    "fuse.cephfs", "fuse.juicefs", "fuse.goofys", "fuse.mountpoint-s3", "fuse.blobfuse2", "fuse.vmhgfs-fuse",
})
#: watchdog's loggers that report an inotify queue overflow (events were lost)
OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")
#: changes applied in one transaction at most
MAX_BATCH = 20_000
#: seconds after folders were created or moved before the watches are counted
HEALTH_DELAY = 1.0
#: how long a moved-from event waits for its moved-to (see ``_shorten_move_pairing``)
MOVE_PAIRING_SECONDS = 0.1
_STOP = object()


def filesystem_type(path: str | Path, mounts: str | None = None) -> str:
    """The type of the file system holding ``path`` ("ext4", "nfs4", "fuse.sshfs" ...),
    from ``mounts`` (text in the format of ``/proc/self/mounts``, read when None);
    ``""`` when unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return ""
    target = os.path.realpath(path)
    best, fstype = -1, ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape_mount(fields[1])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, fstype = len(point), fields[2]
    return fstype


def _unescape_mount(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def is_network_fs(fstype: str) -> bool:
    """True for file systems where inotify cannot see every change (see :data:`NETWORK_FS`)."""
    return fstype in NETWORK_FS or fstype.startswith("nfs")


def inotify_watches(fd: int | None = None) -> int:
    """Inotify watches held by descriptor ``fd`` of this process, or by all of its
    inotify descriptors when None (the ``inotify wd:`` lines of ``/proc/self/fdinfo``)."""
    if fd is not None:
        fds = [fd]
    else:
        try:
            fds = [int(name) for name in os.listdir("/proc/self/fd")
                   if _readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify"]
        except OSError:
            return 0
    held = 0
    for number in fds:
        try:
            with open(f"/proc/self/fdinfo/{number}", "rb") as handle:
                held += handle.read().count(b"inotify wd:")
        except OSError:
            pass
    return held


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


class _OverflowSpy(logging.Handler):
    """Notices watchdog's "Inotify queue overflowed" warnings: events were lost."""

    def __init__(self, flag: threading.Event):
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


class SandboxWatcher:
    """Keeps a UsageIndex current from watchdog events; falls back to polling, and says so.

    The observer thread turns events into :class:`~bedrot_lab.sandbox.records.Change`
    records on a queue; a worker thread applies them in batches (everything that
    arrived within ``batch_seconds`` of the first, deduplicated, one SQLite
    transaction per batch). Only events that change the accounts are asked of
    the kernel (no opens, no closes without writes, no folder modifications).

    ``mode`` is ``"inotify"`` or ``"polling"`` once started, and ``reason`` says
    why. ``polling=None`` chooses: polling when the sandbox is on a network file
    system (inotify there misses changes made by other machines), else inotify.
    After starting with inotify, every ``health_seconds``, a second after
    folders were created or moved (counted by a thread of its own), and after
    every reconcile, the watches held are compared with the folders that exist
    (:meth:`check_health`): a watch limit that is too low makes watchdog skip
    folders without a word, and folders moved while it adds watches can lose
    theirs. Lost watches are restored by restarting the observer (and the blind
    folders re-read); when that cannot restore them it falls back to watchdog's
    polling observer (``lstat`` snapshots every ``poll_seconds``) and
    reconciles. Each of these, and each episode of lost events (an inotify
    queue overflow), is reported through ``on_warning`` (default: the log).

    ``catch_up`` brings the index up to date when starting, after the observer
    is running: a full scan if the index was never built, else a reconcile. With
    ``catch_up=False`` the caller vouches that the index is current (it just ran
    ``full_scan``). ``reconcile_seconds`` adds a periodic reconcile.
    """

    def __init__(
        self,
        index: UsageIndex,
        root: Path,
        *,
        polling: bool | None = None,
        batch_seconds: float = 0.1,
        on_warning: Callable[[str], None] | None = None,
        poll_seconds: float = 1.0,
        health_seconds: float = 60.0,
        reconcile_seconds: float | None = None,
        catch_up: bool = True,
    ):
        self.index = index
        self.root = Path(os.path.abspath(root))
        self.polling = polling
        self.batch_seconds = batch_seconds
        self.on_warning = on_warning or (lambda message: log.warning("%s", message))
        self.poll_seconds = poll_seconds
        self.health_seconds = health_seconds
        self.reconcile_seconds = reconcile_seconds
        self.catch_up = catch_up
        #: "inotify" or "polling" once started ("stopped" before)
        self.mode = "stopped"
        #: why this mode: what was asked for, or what made it fall back
        self.reason = ""
        #: changes applied and batches written since start
        self.applied = 0
        self.batches = 0
        self.overflows = 0  # episodes of lost events (inotify queue overflows), each followed by a reconcile
        self._prefix = str(self.root).rstrip("/") + "/"
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._check_pending = False
        self._overflow = threading.Event()
        self._spy = _OverflowSpy(self._overflow)
        self._count_lock = threading.Lock()
        self._queued = 0
        self._done = 0
        self._last_event = 0.0
        self._next_health = 0.0
        self._health_due = float("inf")
        self._surplus = False
        self._next_reconcile = 0.0

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SandboxWatcher({str(self.root)!r}, mode={self.mode!r})"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start watching: choose the mode, start the observer and the worker, bring
        the index up to date (``catch_up``), then check that inotify sees every folder."""
        if self._worker is not None:
            raise RuntimeError(f"{self!r} is already started")
        if not self.root.is_dir():
            raise FileNotFoundError(f"the sandbox root {self.root} is not a folder")
        fstype = filesystem_type(self.root)
        if self.polling:
            self._start_observer("polling", "polling was asked for")
        elif self.polling is None and is_network_fs(fstype):
            reason = (f"{self.root} is on a {fstype} file system, where inotify does not see changes "
                      f"made by other machines: polling every {self.poll_seconds:g} s")
            self._start_observer("polling", reason)
            self.on_warning(f"sandbox watcher: {reason}")
        else:
            try:
                self._start_observer("inotify", f"inotify on {fstype or 'a local file system'}")
            except OSError as exc:  # the root itself could not be watched (limit 0, no instances)
                reason = f"inotify failed ({exc}): polling every {self.poll_seconds:g} s"
                self._start_observer("polling", reason)
                self.on_warning(f"sandbox watcher: {reason}")
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).addHandler(self._spy)
        self._stopping.clear()
        self._worker = threading.Thread(target=self._run, name="sandbox-watcher", daemon=True)
        self._worker.start()
        if self.catch_up:
            self._submit(self._catch_up).result()
        now = time.monotonic()
        self._next_health = now + self.health_seconds
        self._next_reconcile = now + self.reconcile_seconds if self.reconcile_seconds else float("inf")
        if self.mode == "inotify":
            self.check_health()
        self._monitor = threading.Thread(target=self._watch_the_watches, name="sandbox-watcher-health", daemon=True)
        self._monitor.start()

    def stop(self) -> None:
        """Stop the observer, apply what is still queued, stop the worker."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
            self._monitor = None
        self._stop_observer()
        if self._worker is not None:
            self._queue.put(_STOP)
            self._worker.join()
            self._worker = None
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self._spy)
        self.mode = "stopped"

    def _start_observer(self, mode: str, reason: str) -> None:
        if mode == "polling":
            from watchdog.observers.polling import PollingObserverVFS

            # lstat: links are entries of their own (PollingObserver's os.stat follows
            # them and skips the dangling ones)
            observer: BaseObserver = PollingObserverVFS(os.lstat, os.scandir, polling_interval=self.poll_seconds)
        else:
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
        observer.schedule(_Handler(self), str(self.root), recursive=True, event_filter=_event_filter())
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        if mode == "inotify":
            _shorten_move_pairing(observer)
        self._observer, self.mode, self.reason = observer, mode, reason

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    # -- events -----------------------------------------------------------------------------

    def _relative(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if path.startswith(self._prefix):
            return path[len(self._prefix):]
        if path == self._prefix[:-1]:
            return ""
        return None

    def _event(self, event: Any) -> None:
        """Called in the observer thread for every watchdog event."""
        self._last_event = time.monotonic()
        kind, is_dir = event.event_type, event.is_directory
        if kind in ("modified", "attrib", "closed"):
            if is_dir:
                return
            kind = "modified"
        elif kind not in ("created", "deleted", "moved"):
            return  # opened, closed_no_write
        src = self._relative(event.src_path)
        if kind == "moved":
            dest = self._relative(event.dest_path) if event.dest_path else None
            if src is None:
                if dest is None:
                    return
                change = Change("created", dest, None, is_dir)
            elif is_dir and self.mode == "polling" and dest is not None:
                # a snapshot diff reports folder moves after everything else, even when
                # the old path was reused in the same interval: read both from disk
                self._put(Change("created", src, None, True))
                self._put(Change("created", dest, None, True))
                return
            else:
                change = Change("moved", src, dest, is_dir)
        elif src is None:
            return
        else:
            change = Change(kind, src, None, is_dir)
        self._put(change)

    def _put(self, change: Change) -> None:
        with self._count_lock:  # two observers overlap while one replaces the other
            self._queued += 1
        self._queue.put(change)

    # -- the worker -------------------------------------------------------------------------

    def _submit(self, function: Callable[[], Any]) -> Future[Any]:
        """Run ``function`` in the worker thread, in order with the events queued before it."""
        future: Future[Any] = Future()
        if self._worker is None or threading.current_thread() is self._worker:
            future.set_result(function())
        else:
            self._queue.put((function, future))
        return future

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            batch: list[Change] = []
            requests: list[Any] = []
            stopping = False
            if item is not None:
                deadline = time.monotonic() + self.batch_seconds
                while True:
                    if item is _STOP:
                        stopping = True
                    elif isinstance(item, Change):
                        batch.append(item)
                    else:
                        requests.append(item)
                        break  # a request runs after the events queued before it
                    if len(batch) >= MAX_BATCH:
                        break
                    remaining = deadline - time.monotonic()
                    try:
                        item = self._queue.get(timeout=remaining) if remaining > 0 and not stopping \
                            else self._queue.get_nowait()
                    except queue.Empty:
                        break
            self._apply(batch)
            for function, future in requests:
                try:
                    future.set_result(function())
                except Exception as exc:
                    future.set_exception(exc)
            if stopping:
                self._drain()
                return
            self._housekeeping()

    def _apply(self, batch: list[Change]) -> None:
        if not batch:
            return
        try:
            self.index.apply(batch)
        except Exception as exc:
            log.exception("sandbox watcher: applying %d changes failed", len(batch))
            self.on_warning(f"sandbox watcher: applying {len(batch)} changes failed ({exc}); reconciling")
            self._overflow.set()
        self.applied += len(batch)
        self.batches += 1
        self._done += len(batch)
        if self.mode == "inotify" and any(c.is_dir and c.kind in ("created", "moved") for c in batch):
            # watchdog can lose watches when folders move while it adds them: look soon
            self._health_due = min(self._health_due, time.monotonic() + HEALTH_DELAY)

    def _take_queued(self) -> tuple[list[Change], list[Any]]:
        """Everything queued now: the changes, and the other items (requests, the stop mark)."""
        batch: list[Change] = []
        others: list[Any] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, others
            (batch if isinstance(item, Change) else others).append(item)

    def _drain(self) -> None:
        """Apply every change still queued (the observer has stopped)."""
        batch, others = self._take_queued()
        for item in others:
            if item is not _STOP:
                _function, future = item
                future.cancel()
        self._apply(batch)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._overflow.is_set():
            self._overflow.clear()
            self.overflows += 1
            self.on_warning("sandbox watcher: file-system events were lost (inotify queue overflow); reconciling")
            self.reconcile()
        elif now >= self._next_reconcile:
            self.reconcile()

    def _watch_the_watches(self) -> None:
        """The health thread: count watches and folders when due, and hand a mismatch to
        the worker. Counting reads /proc (a quarter of a second for 50,000 watches), so
        it runs here, not in the worker, whose job is to apply events promptly."""
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            if self.mode != "inotify" or self._check_pending or now < min(self._next_health, self._health_due):
                continue
            self._health_due = float("inf")
            self._next_health = now + self.health_seconds
            try:
                held, folders = self.watch_health()
            except Exception:  # the index was closed under us, or /proc is gone: try later
                log.debug("counting watches failed", exc_info=True)
                continue
            if held != folders:
                self._check_pending = True
                self._submit(self.check_health)

    def _catch_up(self) -> None:
        if self.index.build_if_never() is None:
            self.index.reconcile()

    # -- health -----------------------------------------------------------------------------

    def _inotify_fd(self) -> int | None:
        fd = getattr(getattr(self._observer, "_inotify_fd", None), "_inotify_fd", None)
        return fd if isinstance(fd, int) else None

    def watch_health(self) -> tuple[int, int]:
        """(inotify watches held by this watcher's observer, folders under the root as
        the index knows them). Watches are 0 when polling."""
        held = 0
        if self.mode == "inotify" and self._observer is not None:
            held = inotify_watches(self._inotify_fd())
        return held, self.index.folder_count()

    def check_health(self) -> bool:
        """Compare the watches held with the folders that exist; True when inotify sees
        every folder (or when polling).

        When folders are unwatched, the observer is restarted (a new one first, so
        no event is missed) and the folders that were blind are read again. If
        folders are still unwatched after that, the watch limit is too low
        (watchdog never says so): it falls back to polling and reconciles. Either
        way ``on_warning`` hears of it and ``reason`` says what happened.
        """
        if self.mode != "inotify":
            return True
        if self._worker is not None and threading.current_thread() is not self._worker:
            return self._submit(self.check_health).result()
        self._check_pending = False
        self._health_due = float("inf")
        self._next_health = time.monotonic() + self.health_seconds
        held, folders = self.watch_health()
        if held > folders:
            # watches for folders the index does not know: their events were lost, unless
            # they are still on the way, so look again before reading the disk
            if not self._surplus:
                self._surplus = True
                self._health_due = time.monotonic() + HEALTH_DELAY
                return True
            self._surplus = False
            missed = self._unindexed_folders()
            if missed:
                self.index.apply([Change("created", folder, None, True) for folder in missed])
                self.on_warning(f"sandbox watcher: events for {len(missed)} new folders were lost; read them")
            return True
        self._surplus = False
        if held == folders:
            return True
        if self._apply_queued():  # deleted folders lose their watch before the index hears of it
            held, folders = self.watch_health()
            if held >= folders:
                return True
        blind, gone = self._unwatched_folders()
        if gone:  # deleted while unwatched, or their events are on the way: either way, gone
            self.index.apply([Change("deleted", folder, None, True) for folder in gone])
        if not blind:
            return True
        self._restart_inotify()
        still = self._unwatched_folders()[0]
        if not still:
            self.index.apply([Change("created", folder, None, True) for folder in blind])
            self.reason = (f"inotify; restarted after watchdog lost the watches of {len(blind)} folders "
                           "(folders moved while it was adding watches); re-read them")
            self.on_warning(f"sandbox watcher: {self.reason}")
            return False
        held, folders = self.watch_health()
        limit = _read_int("/proc/sys/fs/inotify/max_user_watches")
        self._fall_back(
            f"inotify holds {held} watches for {folders} folders and cannot watch {len(still)} of them: "
            f"this user's inotify watch limit is reached (fs.inotify.max_user_watches is "
            f"{limit if limit is not None else '?'}, shared by all of the user's processes; raise it with "
            f"sysctl), and watchdog skips the rest silently: polling every {self.poll_seconds:g} s")
        return False

    def _apply_queued(self) -> int:
        """Apply the changes waiting in the queue now (in the worker); how many."""
        if threading.current_thread() is not self._worker:
            return 0
        batch, others = self._take_queued()
        self._apply(batch)
        for item in others:
            self._queue.put(item)
        return len(batch)

    def _watched_inodes(self) -> set[int]:
        fd = self._inotify_fd()
        try:
            with open(f"/proc/self/fdinfo/{fd}", "rb") as handle:
                lines = handle.read().splitlines()
        except (OSError, TypeError):
            return set()
        inodes = set()
        for line in lines:
            if line.startswith(b"inotify wd:"):
                for field in line.split():
                    if field.startswith(b"ino:"):
                        inodes.add(int(field[4:], 16))
                        break
        return inodes

    def _unwatched_folders(self) -> tuple[list[str], list[str]]:
        """Indexed folders that exist, may be read and have no watch; indexed folders
        that are no longer folders on disk."""
        watched = self._watched_inodes()
        prefix = str(self.root)
        blind, gone = [], []
        for folder in self.index.folders():
            path = f"{prefix}/{folder}" if folder else prefix
            try:
                st = os.lstat(path)
            except OSError:
                gone.append(folder)
                continue
            if not stat.S_ISDIR(st.st_mode):
                gone.append(folder)
            elif st.st_ino not in watched and os.access(path, os.R_OK | os.X_OK):
                blind.append(folder)
        return blind, gone

    def _unindexed_folders(self) -> list[str]:
        """The topmost folders on disk that the index does not have."""
        known = set(self.index.folders())
        prefix = str(self.root)
        missed, stack = [], [""]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(f"{prefix}/{folder}" if folder else prefix) as entries:
                    children = [entry.name for entry in entries if entry.is_dir(follow_symlinks=False)]
            except OSError:
                continue
            for name in children:
                child = f"{folder}/{name}" if folder else name
                (stack if child in known else missed).append(child)
        return missed

    def _restart_inotify(self) -> None:
        old = self._observer
        try:
            self._start_observer("inotify", self.reason)
        except OSError as exc:
            log.debug("restarting inotify failed: %s", exc)
            return
        if old is not None:
            old.stop()
            old.join()

    def _fall_back(self, reason: str) -> None:
        self._stop_observer()
        self._start_observer("polling", reason)
        self.on_warning(f"sandbox watcher: {reason}")
        self.index.reconcile()  # changes made while switching, and in the blind folders

    # -- for callers --------------------------------------------------------------------------

    def reconcile(self) -> ReconcileStats:
        """Reconcile the index with the disk (in the worker, after the events queued so far),
        then re-check the watches."""
        def run() -> ReconcileStats:
            stats = self.index.reconcile()
            now = time.monotonic()
            self._next_reconcile = now + self.reconcile_seconds if self.reconcile_seconds else float("inf")
            if stats.changed:
                log.info("sandbox reconcile fixed %s", stats)
            self.check_health()
            return stats

        return self._submit(run).result()

    def wait_idle(self, quiet: float | None = None, timeout: float = 30.0) -> bool:
        """Wait until no event has arrived for ``quiet`` seconds and every queued change
        is applied; False on timeout.

        The default quiet time is 1 s with inotify (watchdog holds the events that
        follow a move-out for up to 0.5 s while it looks for the move-in) and 2.5
        polling intervals when polling.
        """
        if quiet is None:
            quiet = 1.0 if self.mode == "inotify" else 2.5 * self.poll_seconds + 0.2
        started = time.monotonic()
        deadline = started + timeout
        while True:
            now = time.monotonic()
            if self._done >= self._queued and now - max(self._last_event, started) >= quiet:
                return True
            if now >= deadline:
                return False
            time.sleep(0.01)


def _shorten_move_pairing(observer: BaseObserver) -> None:
    """Hold a moved-from event for :data:`MOVE_PAIRING_SECONDS` instead of watchdog's 0.5 s.

    watchdog keeps each moved-from event in a delay queue until its moved-to
    pairs with it, but the queue's reader sleeps out the whole delay once it has
    seen the moved-from at its head, even when the pair arrives a millisecond
    later, and every event behind it waits too. With 50,000 watched folders,
    pairing a folder move takes long enough for that to happen to nearly every
    folder move (measured: each one stalled all events by 0.5 s). Both events
    come from one rename(2) and are read together, so a shorter wait still
    pairs them; a pair that misses it is reported as a deletion and a creation,
    which the index handles the same (it reads the new folder from disk).
    Reaches into watchdog's private state, so it does nothing if that changed.
    """
    for emitter in getattr(observer, "emitters", ()):
        grouper = getattr(getattr(emitter, "_inotify", None), "_move_event_grouper", None)
        delayed = getattr(grouper, "_queue", None)
        if isinstance(getattr(delayed, "delay", None), (int, float)):
            delayed.delay = MOVE_PAIRING_SECONDS


def _event_filter() -> list[type]:
    """The events that change the accounts. The inotify mask follows this list, so the
    kernel does not queue opens and closes-without-write at all: without it, every
    folder listing (a reconcile reads them all) queues four events per folder and
    overflows the kernel's queue (``max_queued_events``) on a large sandbox."""
    from watchdog import events

    return [events.FileCreatedEvent, events.DirCreatedEvent, events.FileDeletedEvent, events.DirDeletedEvent,
            events.FileMovedEvent, events.DirMovedEvent, events.FileModifiedEvent, events.FileAttribEvent,
            events.FileClosedEvent]


class _Handler:
    """The watchdog event handler: hands every event to the watcher (no other work in
    the observer thread)."""

    def __init__(self, watcher: SandboxWatcher):
        self.watcher = watcher

    def dispatch(self, event: Any) -> None:
        self.watcher._event(event)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
