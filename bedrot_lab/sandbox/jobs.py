"""The sandbox's housekeeping jobs: keep the usage index live (``watch``) and correct
(``reconcile``), check the rules and alert (``check``), archive stale files (``clean``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..jobs import HousekeepingJob, JobStopped
from .report import REPORT_JOB
from .settings import files_count, format_size

if TYPE_CHECKING:
    from ..jobs import JobContext

#: seconds between the watcher's heartbeats in the index (what `sandbox usage` and `daemon status` read)
HEARTBEAT_SECONDS = 5.0


def watch(ctx: JobContext) -> str:
    """Keep the usage index current from file-system events until the daemon stops."""
    from .index import UsageIndex
    from .watcher import SandboxWatcher

    settings = ctx.lab.settings
    root = settings.zone("sandbox")
    root.mkdir(parents=True, exist_ok=True)
    with UsageIndex.for_settings(settings) as index:
        index.build_if_never(progress=lambda _files: ctx.check_stop())
        watcher = SandboxWatcher(index, root, polling=True if ctx.options.get("polling") else None,
                                 on_warning=ctx.log.warning)
        watcher.start()
        try:
            ctx.log.info("watching %s (%s)", root, watcher.reason)
            while True:
                now = time.time()
                index.note(watcher_heartbeat=now, watcher_mode=watcher.mode)
                ctx.note(mode=watcher.mode, reason=watcher.reason, heartbeat=now, overflows=watcher.overflows,
                         events_applied=watcher.applied)
                if ctx.stop.wait(HEARTBEAT_SECONDS):
                    break
        finally:
            watcher.stop()
            index.note(watcher_heartbeat=0, watcher_mode="stopped")
            ctx.note(mode="stopped", heartbeat=time.time())
    return f"watched {root} ({watcher.mode}); {watcher.applied:,} events applied"


def reconcile(ctx: JobContext) -> str:
    """Correct the usage index against the disk (what events may have missed)."""
    from .index import UsageIndex

    with UsageIndex.for_settings(ctx.lab.settings) as index:
        built = index.build_if_never(progress=lambda _files: ctx.check_stop())
        if built is not None:
            return f"full scan: {built.files:,} files in {built.dirs:,} folders"
        stats = index.reconcile()
    return (f"reconciled in {stats.seconds:.1f}s: {stats.added} added, {stats.updated} updated, "
            f"{stats.removed} removed")


def check(ctx: JobContext) -> str:
    """Evaluate the effective rules; new, escalated and resolved violations go to the
    ``handle_violation`` hooks (the alerts)."""
    from .index import UsageIndex
    from .violations import check as check_rules

    with UsageIndex.for_settings(ctx.lab.settings) as index:
        # at a daemon's start, the watcher's first scan is waited for: a check of no files tells nothing
        index.build_if_never(progress=lambda _files: ctx.check_stop())
        result = check_rules(ctx.lab.settings, index, ctx.lab.plugins.hook)
    return (f"{len(result.violations)} open ({len(result.hard)} hard), {len(result.transitions)} changes alerted"
            + (f", {len(result.failed_rules)} rules failed" if result.failed_rules else ""))


def clean(ctx: JobContext) -> str:
    """Plan a clean of stale files; apply it when ``apply = true`` (archive, with a manifest).
    Files under the workdir of a run still RUNNING are left alone, as by ``sandbox clean``."""
    from .clean import apply_clean, plan_clean
    from .index import UsageIndex
    from .rules import effective_rules
    from .runs import running_runs

    settings = ctx.lab.settings
    rules = effective_rules(settings, ctx.lab.plugins.hook)
    with UsageIndex.for_settings(settings) as index:
        index.reconcile()
        plan = plan_clean(settings, index, rules=rules)
        running = running_runs(ctx.lab, plan.run_ids())
        plan.leave_running(running)
        planned = f"{files_count(len(plan.items))} ({format_size(sum(i.size for i in plan.items))}) stale"
        if not ctx.options.get("apply"):
            return f"{planned}; report only (set apply = true in [daemon.jobs.clean] to archive)"
        if not plan.items:
            return f"{planned}; nothing to do"

        def progress(done: int, nbytes: int) -> None:
            if ctx.stopping:
                raise JobStopped()

        result = apply_clean(settings, plan, index, running_runs=running, rules=rules, progress=progress)
    manifest = f"; manifest {result.manifest}" if result.manifest else ""
    return (f"{planned}; archived {len(result.archived)}, deleted {len(result.deleted)}, "
            f"left {len(result.skipped)} ({format_size(result.bytes)} freed){manifest}")


JOBS = (
    HousekeepingJob("watch", watch, service=True, options={"polling": False},
                    description="keeps the usage index live from file-system events"),
    HousekeepingJob("reconcile", reconcile, every="1h", description="corrects the usage index against the disk"),
    HousekeepingJob("check", check, every="1m", misfire_grace=30,
                    description="checks quotas, stale files and secrets; alerts on changes"),
    HousekeepingJob("clean", clean, cron="0 3 * * *", own_process=True, options={"apply": False}, misfire_grace=3600,
                    description="archives stale files (report only unless apply = true)"),
    REPORT_JOB,
)
