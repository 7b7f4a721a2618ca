"""The daemon's ``reap`` and ``gc`` jobs: runs left RUNNING by a process that is gone are ended
KILLED, and runs deleted long ago are purged by MLflow's own ``mlflow gc``."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..config import ConfigError
from ..errors import BedrotLabError
from ..jobs import HousekeepingJob, parse_duration
from ..tracking import HEARTBEAT_SECONDS, INTERNAL, internal_tag, pid_scope, proc_stat

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from ..jobs import JobContext

#: why the reap job ended a run KILLED, and when
REAPED_TAG = INTERNAL + "reaped"
#: experiments per search of RUNNING runs
EXPERIMENTS_PER_SEARCH = 100
PAGE = 1000
#: seconds by which the safety check of gc looks further back than mlflow gc, which starts later
GC_MARGIN = 300.0


@dataclass(frozen=True)
class Here:
    """The host the reap job runs on, and where its pids are meaningful (see ``PID_SCOPE_TAG``)."""

    host: str
    scope: str | None

    @classmethod
    def now(cls) -> Here:
        return cls(socket.gethostname(), pid_scope())


def reap(ctx: JobContext) -> str:
    """End KILLED every RUNNING run whose process is gone, with a :data:`REAPED_TAG` tag
    saying why and when (see :func:`why_gone`)."""
    heartbeat_ttl = _duration(ctx, "heartbeat_ttl")
    if heartbeat_ttl <= 2 * HEARTBEAT_SECONDS:
        raise _option_error(ctx, "reap", "heartbeat_ttl", f"must be longer than two heartbeats "
                                                          f"({_seconds(2 * HEARTBEAT_SECONDS)})")
    untracked_ttl = _duration(ctx, "untracked_ttl") if ctx.options.get("untracked_ttl") else None
    client = ctx.lab.store.client
    here = Here.now()
    # all pages first: the store pages by offset, and each run reaped leaves the result
    found_runs = list(running_runs(client))
    reaped, refused, stopped = 0, [], ""
    for found in found_runs:
        if ctx.stopping:
            stopped = "; stopped before the end"
            break
        if why_gone(found, here, time.time(), heartbeat_ttl, untracked_ttl) is None:
            continue
        # read again: the run may have ended since the search (a process ends its run, then exits)
        run = client.get_run(found.info.run_id)
        reason = why_gone(run, here, time.time(), heartbeat_ttl, untracked_ttl)
        if run.info.status != "RUNNING" or reason is None:
            continue
        try:
            end_reaped(client, run.info.run_id, reason)
        except Exception as exc:  # a tracking server's account may end only the runs it may edit
            if getattr(exc, "error_code", None) != "PERMISSION_DENIED":
                raise
            refused.append(run.info.run_id)
            continue
        ctx.log.warning("run %s (%s) ended KILLED: %s", run.info.run_id,
                        run.data.tags.get("bedrot.experiment") or run.info.experiment_id, reason)
        reaped += 1
    summary = f"{len(found_runs)} RUNNING, {reaped} reaped{stopped}"
    if refused:
        account = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this account"
        raise BedrotLabError(f"{summary}; {len(refused)} gone but not ended ({', '.join(refused[:5])}): the tracking "
                             f"server refused {account!r} permission to end them; give the reaper's account EDIT "
                             "on their experiments (bedrot-lab server user set-permission) or make it an admin")
    return summary


def why_gone(run: Run, here: Here, now: float, heartbeat_ttl: float, untracked_ttl: float | None) -> str | None:
    """Why RUNNING ``run`` has no process any more, or None while it may still have one.

    * A run of this host (its ``host`` tag, and ``pid_scope`` when recorded) is judged by its
      pid: gone when no process has that pid, it is a zombie, or it started at another time
      than ``proc_start`` says (the pid was given to another process).
    * A run of another host is gone when its ``heartbeat`` is older than ``heartbeat_ttl``.
    * A run without a heartbeat (made by another tool, or by bedrot-lab before heartbeats)
      is left alone, unless ``untracked_ttl`` is set and the run started longer ago than that.

    The tags are the process tags of :mod:`bedrot_lab.tracking` (``bedrot.internal.<name>``,
    or ``bedrot.<name>`` in runs recorded before that prefix).
    """
    tags = run.data.tags
    host, pid = internal_tag(tags, "host") or "", _whole(internal_tag(tags, "pid"))
    scope = internal_tag(tags, "pid_scope")
    if pid and host == here.host and (scope is None or scope == here.scope):
        if process_alive(pid, _whole(internal_tag(tags, "proc_start"))):
            return None
        return f"process {pid} on {host} gone"
    heartbeat = _epoch(internal_tag(tags, "heartbeat"))
    if heartbeat is not None:
        if now - heartbeat <= heartbeat_ttl:
            return None
        process = f"process {pid} on {host}" if pid and host else "its process"
        return f"no heartbeat from {process} since {_iso(heartbeat)} (heartbeat_ttl {_seconds(heartbeat_ttl)})"
    started = (run.info.start_time or 0) / 1000
    if untracked_ttl is None or not started or now - started <= untracked_ttl:
        return None
    return f"no heartbeat, started {_iso(started)} (untracked_ttl {_seconds(untracked_ttl)})"


def process_alive(pid: int, start: int | None) -> bool:
    """True while process ``pid`` runs and (when ``start`` is given) started at ``start``
    (clock ticks since boot). A process that /proc hides (``hidepid``) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except (OSError, OverflowError):
        return False
    stat = proc_stat(pid)
    if stat is None:
        return True  # it exists, but we cannot see whether it is the run's process
    state, started = stat
    if state in ("Z", "X"):  # exited, not yet waited for by its parent
        return False
    return start is None or started == start


def end_reaped(client: MlflowClient, run_id: str, reason: str) -> None:
    """Tag run ``run_id`` with why it is reaped, then end it KILLED."""
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    client.set_tag(run_id, REAPED_TAG, f"{reason}; reaped at {when} by the housekeeping daemon")
    client.set_terminated(run_id, status="KILLED")


def running_runs(client: MlflowClient) -> Iterator[Run]:
    """Every RUNNING run of the store's active experiments (a deleted experiment's runs are deleted too)."""
    from mlflow.entities import ViewType

    experiments = [experiment.experiment_id for experiment in _pages(
        lambda token: client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=PAGE,
                                                page_token=token))]
    for start in range(0, len(experiments), EXPERIMENTS_PER_SEARCH):
        chunk = experiments[start:start + EXPERIMENTS_PER_SEARCH]
        yield from _pages(lambda token, chunk=chunk: client.search_runs(
            chunk, filter_string="attributes.status = 'RUNNING'", run_view_type=ViewType.ACTIVE_ONLY,
            max_results=PAGE, page_token=token))


# -- gc ------------------------------------------------------------------------------------


class GcRefused(BedrotLabError):
    """``mlflow gc`` would purge runs that are not deleted; it is not run."""


def gc(ctx: JobContext) -> str:
    """Purge the runs deleted more than ``older_than_days`` ago, with their artifacts, through
    ``mlflow gc`` (which also purges the experiments and logged models deleted that long ago)."""
    days = ctx.options["older_than_days"]
    if isinstance(days, bool) or not isinstance(days, int | float) or not days > 0:
        raise _option_error(ctx, "gc", "older_than_days", f"expected a positive number of days, got {days!r}")
    uri = ctx.lab.settings.tracking_uri
    if uri.startswith(("http:", "https:", "databricks")):
        raise _option_error(ctx, "gc", "enabled", f"gc needs the tracking store's database, and [tracking] uri is "
                                                  f"a server ({ctx.lab.settings.tracking_uri_shown}): leave gc off "
                                                  "here and run `mlflow gc` where the server runs")
    seconds = days * 86400
    check_gc_safe(ctx.lab.store.client, time.time() - seconds + GC_MARGIN)
    command = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--tracking-uri", uri,
               "--older-than", f"{seconds:.0f}s"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stopped = ""
    while True:
        try:
            out, err = process.communicate(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if ctx.stopping:
                # each run is purged in a transaction of its own: the rest waits for the next round
                process.terminate()
                out, err = process.communicate()
                stopped = "; stopped before the end"
                break
    purged = {kind: sum(line.startswith(f"{kind} with ID ") for line in out.splitlines())
              for kind in ("Run", "Experiment", "Logged model")}
    if process.returncode and not stopped:
        last = next((line for line in reversed(err.splitlines()) if line.strip()), "")
        raise BedrotLabError(f"mlflow gc failed (exit {process.returncode}) after purging {purged['Run']} runs: "
                             f"{last}")
    return (f"purged {purged['Run']} runs, {purged['Experiment']} experiments and {purged['Logged model']} "
            f"logged models deleted more than {days:g} days ago{stopped}")


def check_gc_safe(client: MlflowClient, before: float) -> None:
    """Raise :class:`GcRefused` when an experiment that ``mlflow gc`` would purge (deleted
    before ``before``, epoch seconds) still holds a run that is not deleted: purging an
    experiment purges all its runs, and MLflow lets a run be restored in a deleted experiment."""
    from mlflow.entities import ViewType

    threshold = int(before * 1000)
    for experiment in _pages(lambda token: client.search_experiments(
            view_type=ViewType.DELETED_ONLY, filter_string=f"last_update_time < {threshold}", max_results=PAGE,
            page_token=token)):
        active = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1)
        if active:
            raise GcRefused(f"not purging: deleted experiment {experiment.name!r} ({experiment.experiment_id}) "
                            f"holds run {active[0].info.run_id}, which is not deleted, and mlflow gc would purge "
                            "it with the experiment; delete that run or restore the experiment")


# -- helpers -------------------------------------------------------------------------------


def _pages(search: Any) -> Iterator[Any]:
    token = None
    while True:
        page = search(token)
        yield from page
        token = page.token
        if not token:
            return


def _duration(ctx: JobContext, option: str) -> float:
    try:
        return parse_duration(ctx.options[option])
    except ValueError as exc:
        raise _option_error(ctx, "reap", option, str(exc)) from None


def _option_error(ctx: JobContext, job: str, option: str, message: str) -> ConfigError:
    return ConfigError(message, ctx.lab.settings.config_file, f"daemon.jobs.{job}.{option}")


def _whole(text: str | None) -> int | None:
    """A positive integer tag (pid, start time); None for anything else (masked, edited by hand)."""
    return int(text) if text and text.isascii() and text.isdigit() and int(text) > 0 else None


def _epoch(text: str | None) -> float | None:
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


JOBS = (
    HousekeepingJob("reap", reap, every="15m", own_process=True, options={"heartbeat_ttl": "1h", "untracked_ttl": ""},
                    description="ends KILLED the runs left RUNNING by a process that is gone"),
    HousekeepingJob("gc", gc, cron="30 3 * * *", enabled=False, own_process=True, options={"older_than_days": 30.0},
                    misfire_grace=3600,
                    description="purges runs deleted more than older_than_days ago (mlflow gc; off by default)"),
)
