"""``bedrot-lab sandbox``: usage, rule checks, the live watcher, and safe clean-up."""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..cli import CliError
from ..cli.output import echo_json, echo_table
from .settings import files_count, format_size

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .archive import Skipped

#: a watcher writes a heartbeat this often; usage calls it live while it is this fresh
HEARTBEAT_SECONDS = 10.0
LIVE_SECONDS = 3 * HEARTBEAT_SECONDS
#: plan lines printed before "... and N more"
SHOWN = 50
#: without a live watcher, `usage` reconciles an index of fewer files than this by itself
AUTO_REFRESH_FILES = 5_000


@click.group()
def sandbox() -> None:
    """The sandbox's accounts: usage, rules, the watcher and clean-up.

    \b
    The usage index lives in the lake's state folder and is kept current by
    `sandbox watch`; the other commands bring the part they need up to date
    themselves.
    """


# -- shared pieces -------------------------------------------------------------------------


def _settings(state):
    return state.lab.settings


def _sandbox_root(settings) -> Path:
    root = settings.zone("sandbox")
    if not root.is_dir():
        raise CliError(f"the sandbox folder {root} does not exist; create it, or set [zones] sandbox "
                       f"in {settings.config_file}", exit_code=2)
    return root


def _open_index(settings, *, refresh: bool, quiet: bool = False):
    """The usage index, built by a full scan if it never was, else reconciled when asked."""
    from .index import UsageIndex

    _sandbox_root(settings)
    index = UsageIndex.for_settings(settings)
    if _build_if_never(index, quiet) is None and refresh:
        index.reconcile()
    return index


def _build_if_never(index, quiet: bool):
    """A full scan, with progress on stderr, if the index never had one (None if it had)."""
    if index.info().get("full_scans"):
        return None
    return index.build_if_never() if quiet else _with_progress(index, index.build_if_never)


def _with_progress(index, scan):
    """``scan`` (a full scan of ``index``) with its progress on stderr."""
    click.echo(f"indexing {index.root} ...", err=True)
    progress = _Progress("files indexed")
    stats = scan(progress=progress.update)
    progress.done()
    return stats


class _Progress:
    """A count rewritten in place on a terminal's stderr; silent when stderr is not one."""

    def __init__(self, what: str):
        self.what = what
        self.tty = sys.stderr.isatty()
        self.shown = False

    def update(self, count: int, nbytes: int | None = None) -> None:
        if self.tty:
            extra = f" ({_size(nbytes)})" if nbytes is not None else ""
            click.echo(f"\r{count:,} {self.what}{extra}", nl=False, err=True)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            click.echo(err=True)


def _size(nbytes: float | None) -> str:
    return "" if nbytes is None else format_size(nbytes)


def _when(seconds: float | None) -> str | None:
    return None if not seconds else datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")


def _freshness(info: dict[str, Any], now: float, *, just_synced: bool = False) -> dict[str, Any]:
    """How current the index is: the watcher's state, when it last agreed with the disk,
    and since when it is stale (None while a watcher is live or when it was just synced)."""
    heartbeat = float(info.get("watcher_heartbeat") or 0)
    live = now - heartbeat < LIVE_SECONDS
    synced = max(float(info.get(key) or 0) for key in ("last_full_scan", "last_reconcile"))
    as_of = max(synced, heartbeat)
    stale = not live and not just_synced
    return {"as_of": _when(as_of), "watcher": info.get("watcher_mode") if live else None,
            "stale_since": _when(synced) if stale else None}


def _echo_freshness(fresh: dict[str, Any]) -> None:
    if fresh["watcher"]:
        click.echo(f"index as of {_plain_time(fresh['as_of'])}; watcher live ({fresh['watcher']})", err=True)
    elif fresh["stale_since"]:
        click.echo(f"stale since {_plain_time(fresh['stale_since'])}, run with --refresh "
                   f"(watcher not running: bedrot-lab sandbox watch keeps the index live)", err=True)
    else:
        click.echo(f"index as of {_plain_time(fresh['as_of'])}; watcher not running (bedrot-lab sandbox watch)",
                   err=True)


def _plain_time(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else "never"


# -- usage ---------------------------------------------------------------------------------


@sandbox.command()
@click.option("--by", type=click.Choice(["user", "project", "area", "run"]), default="user", show_default=True,
              help="Group the usage by this.")
@click.option("--refresh", is_flag=True, help="Reconcile the index with the disk first (walks the sandbox).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def usage(state, by: str, refresh: bool, as_json: bool) -> None:
    """Bytes and files per user, project, shared area or run.

    Read from the usage index, which the first use builds with a full scan. With
    a watcher running the index is live. Without one, a sandbox of fewer than
    5,000 files is reconciled with the disk first; a larger one is shown as of
    its last refresh, and --refresh reconciles it. Files outside the groups
    (shared areas, the sandbox root) are listed too: the rows add up to the total.
    """
    from .index import USAGE_KEYS, UsageIndex
    from .rules import QuotaRule, effective_rules
    from .settings import Quotas

    settings = _settings(state)
    quota = effective_rules(settings, state.lab.plugins.hook).named("quota")
    quotas = quota.quotas if isinstance(quota, QuotaRule) else Quotas()
    _sandbox_root(settings)
    with UsageIndex.for_settings(settings) as index:
        synced = _build_if_never(index, quiet=as_json) is not None
        live = _freshness(index.info(), time.time())["watcher"] is not None
        if not synced and (refresh or (not live and index.file_count() < AUTO_REFRESH_FILES)):
            index.reconcile()
            synced = True
        with index.snapshot():
            rows, others = index.usage(by), index.others(by)
            nbytes, nfiles = index.total()
        fresh = _freshness(index.info(), time.time(), just_synced=synced)
    for row in rows:
        _add_limits(row, _limits_of(quotas, by, row))
    for row in others:
        shared = row["area"] not in ("", "users")
        _add_limits(row, quotas.limits("area", row["area"]) if shared else None)
    if as_json:
        echo_json({"by": by, "rows": rows, "others": others, "total": {"bytes": nbytes, "files": nfiles}, **fresh})
        return
    keys = list(USAGE_KEYS[by])
    shown = [{**{key: row[key] for key in keys}, **_sizes(row)} for row in rows]
    for row in shown:
        if by == "area" and not row["area"]:
            row["area"] = "(root)"
    shown += [{keys[0]: _outside(row["area"], by), **_sizes(row)} for row in others]
    columns = [*keys, "size", "files"]
    if any(row["soft"] or row["hard"] for row in [*rows, *others]):
        columns += ["soft", "hard", "over"]
    echo_table(shown, columns, empty=f"no files by {by}", right={"size", "files", "soft", "hard"})
    click.echo(f"total: {_size(nbytes)} in {files_count(nfiles)}")
    _echo_freshness(fresh)


def _add_limits(row: dict[str, Any], limits) -> None:
    broken = limits.broken(row["bytes"]) if limits else None
    row.update(soft=limits.soft if limits else None, hard=limits.hard if limits else None,
               over=broken[0] if broken else None)


def _sizes(row: dict[str, Any]) -> dict[str, str]:
    return {"size": _size(row["bytes"]), "files": f"{row['files']:,}", "soft": _size(row["soft"]),
            "hard": _size(row["hard"]), "over": row["over"] or ""}


def _outside(area: str, by: str) -> str:
    """How a usage table names the files of ``area`` that are in no row of ``by``."""
    if not area:
        return "(sandbox root)"
    if area == "users":
        return {"user": "users/ (no user)", "project": "users/ (no project)", "run": "users/ (not in a run)"}[by]
    return f"{area}/ (shared)"


def _limits_of(quotas, by: str, row: dict[str, Any]):
    """The quota limits of one usage row (None for runs, which have no quota)."""
    if by == "run":
        return None
    return quotas.limits(by, f"{row['user']}/{row['project']}" if by == "project" else row[by])


@sandbox.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def scan(state, as_json: bool) -> None:
    """Rebuild the usage index from disk with a full scan.

    Other commands (and a running watcher) keep using the old index until the
    scan is done. Needed only when the index was lost or is suspect.
    """
    from .index import UsageIndex

    settings = _settings(state)
    _sandbox_root(settings)
    with UsageIndex.for_settings(settings) as index:
        stats = index.full_scan() if as_json else _with_progress(index, index.full_scan)
    if as_json:
        echo_json({"files": stats.files, "folders": stats.dirs, "bytes": stats.bytes, "errors": stats.errors,
                   "seconds": round(stats.seconds, 3)})
        return
    click.echo(f"indexed {stats.files:,} files ({_size(stats.bytes)}) in {stats.dirs:,} folders "
               f"in {stats.seconds:.1f}s" + (f"; {stats.errors:,} could not be read" if stats.errors else ""))


# -- check ---------------------------------------------------------------------------------


@sandbox.command()
@click.option("--no-refresh", is_flag=True, help="Check the index as it is, without reconciling it first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def check(state, no_refresh: bool, as_json: bool) -> None:
    """The sandbox's violations now: quotas, stale files, secrets, plugin rules.

    New, escalated and resolved violations go to the handle_violation hooks
    (the log and violations.jsonl in the state folder by default). Exit code 1
    when any violation is hard.
    """
    from .violations import check as check_rules

    lab = state.lab
    if not state.debug:  # the table below says it all; the sinks still record
        logging.getLogger("bedrot_lab.sandbox.violations").setLevel(logging.ERROR)
    with _open_index(lab.settings, refresh=not no_refresh, quiet=as_json) as index:
        result = check_rules(lab.settings, index, lab.plugins.hook)
    for name, error in result.failed_rules.items():
        click.echo(f"warning: sandbox rule {name!r} failed ({error}); its earlier violations stay open", err=True)
    if as_json:
        echo_json({"violations": [v.to_dict() for v in result.violations],
                   "transitions": [t.to_dict() for t in result.transitions],
                   "failed_rules": result.failed_rules, "hard": len(result.hard)})
    else:
        _echo_violations(result.violations)
        kinds = [t.kind for t in result.transitions]
        if kinds:
            counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("new", "escalated", "resolved") if k in kinds)
            click.echo(f"since the last check: {counts}")
    if result.hard:
        sys.exit(1)


def _echo_violations(violations) -> None:
    order = {"hard": 0, "soft": 1, "info": 2}
    rows = [{"severity": v.severity, "rule": v.rule, "subject": _printable(v.subject), "detail": _printable(v.detail)}
            for v in sorted(violations, key=lambda v: (order[v.severity], v.rule, v.subject))]
    echo_table(rows, ["severity", "rule", "subject", "detail"], empty="no violations")


def _printable(text: str) -> str:
    """Names that are not UTF-8 shown with escapes rather than failing to print."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@sandbox.command()
@click.option("--all", "show_all", is_flag=True, help="Also list resolved violations.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def violations(state, show_all: bool, as_json: bool) -> None:
    """The violations recorded by the last checks (open ones, since when)."""
    from .violations import ViolationStore

    settings = _settings(state)
    with ViolationStore.for_settings(settings) as store:
        stored = store.all_violations() if show_all else store.open_violations()
    rows = [{**s.violation.to_dict(), "status": s.status, "since": _when(s.first_seen),
             "last_seen": _when(s.last_seen), "resolved_at": _when(s.resolved_at)} for s in stored]
    if as_json:
        echo_json(rows)
        return
    shown = [{**row, "subject": _printable(row["subject"]), "detail": _printable(row["detail"])} for row in rows]
    columns = ["status", "severity", "rule", "subject", "since", "detail"]
    echo_table(shown, columns if show_all else columns[1:], empty="no open violations")


# -- watch ---------------------------------------------------------------------------------


@sandbox.command()
@click.option("--polling", is_flag=True, help="Poll instead of using inotify.")
@click.option("--check-every", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Check the rules this often (violations are reported when they change).")
@click.option("--status-every", type=click.FloatRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Print a usage line this often.")
@click.option("--reconcile-every", type=click.FloatRange(min=60), default=3600.0, show_default=True,
              metavar="SECONDS", help="Reconcile the index with the disk this often, for what events missed.")
@click.pass_obj
def watch(state, polling: bool, check_every: float, status_every: float, reconcile_every: float) -> None:
    """Watch the sandbox: keep the usage index live, report violations.

    Runs in the foreground and reports violations as they appear, escalate or
    resolve. Ctrl-C stops it.
    """
    from .index import UsageIndex
    from .violations import check as check_rules
    from .watcher import SandboxWatcher

    lab = state.lab
    settings = lab.settings
    root = _sandbox_root(settings)
    _log_to_terminal()
    stop = _stop_on_signals()
    with UsageIndex.for_settings(settings) as index:
        _build_if_never(index, quiet=False)
        watcher = SandboxWatcher(index, root, polling=True if polling else None, reconcile_seconds=reconcile_every,
                                 on_warning=lambda message: _say(f"warning: {message}"))
        watcher.start()
        try:
            _say(f"watching {root} ({watcher.reason}); Ctrl-C to stop")
            next_beat = next_check = next_status = 0.0
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_beat:
                    index.note(watcher_heartbeat=time.time(), watcher_mode=watcher.mode)
                    next_beat = now + HEARTBEAT_SECONDS
                if now >= next_check:
                    result = check_rules(settings, index, lab.plugins.hook)  # the log sink prints transitions
                    next_check = now + check_every
                    open_count = len(result.violations)
                if now >= next_status:
                    nbytes, nfiles = index.total()
                    _say(f"{_size(nbytes)} in {files_count(nfiles)}; {watcher.mode}; {open_count} open violations; "
                         f"{watcher.applied:,} events applied")
                    next_status = now + status_every
                stop.wait(min(next_beat, next_check, next_status) - time.monotonic())
        finally:
            watcher.stop()
            index.note(watcher_heartbeat=0, watcher_mode="stopped")
    _say("stopped")


def _say(message: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {_printable(message)}")


def _log_to_terminal() -> None:
    """Violation transitions (the built-in log sink) print as lines of their own."""
    logger = logging.getLogger("bedrot_lab.sandbox.violations")
    logger.setLevel(logging.INFO)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.propagate = False


def _stop_on_signals():
    import threading

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return stop


# -- clean and restore -----------------------------------------------------------------------


@sandbox.command()
@click.option("--apply", "do_apply", is_flag=True, help="Do it: archive (or delete, where a rule says so).")
@click.option("--older-than", type=click.FloatRange(min=0, min_open=True), default=None, metavar="DAYS",
              help="Files unused for more than DAYS, instead of each rule's own days.")
@click.option("--user", default=None, help="Only this user's workspace (sandbox/users/USER).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def clean(state, do_apply: bool, older_than: float | None, user: str | None, as_json: bool) -> None:
    """Archive stale files, with a manifest to restore them.

    Stale files move to 5_archive/sandbox/<date>/.
    Without --apply, prints the plan and changes nothing. Pinned files (.keep,
    keep globs), links, files under a RUNNING run's workdir, files holding a
    credential (archiving would only hide it) and files changed since the plan
    are left alone, and each is listed with the reason. Only a stale rule with
    action = "delete" deletes; everything else can be put back with
    `bedrot-lab sandbox restore`.
    """
    from .clean import apply_clean, plan_clean
    from .rules import effective_rules
    from .runs import running_runs

    lab = state.lab
    settings = lab.settings
    rules = effective_rules(settings, lab.plugins.hook)
    if user is not None and not (settings.zone("sandbox") / "users" / user).is_dir():
        raise CliError(f"--user {user}: no folder sandbox/users/{user}", exit_code=2)
    with _open_index(settings, refresh=True, quiet=as_json) as index:
        plan = plan_clean(settings, index, older_than=older_than, user=user, rules=rules)
        running = running_runs(lab, plan.run_ids())
        plan.leave_running(running)
        if not do_apply or not plan.items:
            if as_json:
                echo_json({"applied": False, **plan.to_dict()})
            else:
                _echo_plan(plan)
            return
        progress = _Progress("files done")
        result = apply_clean(settings, plan, index, running_runs=running, rules=rules, progress=progress.update)
        progress.done()
    # what the plan left alone (links, running runs, credentials) and what the apply did
    left = sorted([*plan.skipped, *result.skipped], key=lambda skipped: skipped.path)
    if as_json:
        echo_json({"applied": True, **result.to_dict(), "skipped": [skipped.to_dict() for skipped in left]})
        return
    _echo_left_alone(left, more="`sandbox clean --json` lists those still there")
    click.echo(f"archived {files_count(len(result.archived))}, deleted {len(result.deleted):,} "
               f"({_size(result.bytes)} freed)")
    if result.manifest:
        click.echo(f"manifest: {result.manifest}")
        if result.archived:
            click.echo(f"undo with: bedrot-lab sandbox restore {result.manifest}")


def _age(days: float) -> str:
    return f"{days:.0f}d" if days >= 1 else f"{days * 24:.0f}h"


def _echo_left_alone(skipped: Sequence[Skipped], more: str = "--json lists them all") -> None:
    for one in skipped[:SHOWN]:
        click.echo(f"left alone: {_printable(one.path)}: {one.reason}")
    if len(skipped) > SHOWN:
        click.echo(f"... and {len(skipped) - SHOWN:,} more left alone ({more})")


def _echo_plan(plan) -> None:
    items = plan.items
    rows = [{"path": _printable(item.path), "size": _size(item.size), "unused": _age(item.age_days),
             "rule": item.rule, "action": item.action} for item in items[:SHOWN]]
    echo_table(rows, ["path", "size", "unused", "rule", "action"], empty="nothing to clean")
    if len(items) > SHOWN:
        click.echo(f"... and {len(items) - SHOWN:,} more files (--json lists them all)")
    _echo_left_alone(plan.skipped)
    archive = [item for item in items if item.action == "archive"]
    delete = [item for item in items if item.action == "delete"]
    if items:
        click.echo(f"would archive {files_count(len(archive))} ({_size(sum(i.size for i in archive))}) and delete "
                   f"{len(delete):,} ({_size(sum(i.size for i in delete))}); run again with --apply to do it")


@sandbox.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("paths", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def restore(state, manifest: Path, paths: tuple[str, ...], as_json: bool) -> None:
    """Put files archived by `sandbox clean` back where they were.

    Byte for byte, with their times. PATHS (sandbox paths or folders) restore
    only those.

    A file that exists again in the sandbox is not overwritten. Exit code 1
    when a selected file could not be restored.
    """
    from .index import DB_NAME, UsageIndex
    from .restore import restore as restore_files

    settings = _settings(state)
    index = UsageIndex.for_settings(settings) if (settings.state_dir / DB_NAME).exists() else None
    try:
        result = restore_files(settings, manifest, list(paths), index=index)
    finally:
        if index is not None:
            index.close()
    failed = [s for s in result.skipped if s.failed]
    if as_json:
        echo_json(result.to_dict())
    else:
        for skipped in result.skipped:
            click.echo(f"not restored: {_printable(skipped.path)}: {skipped.reason}")
        click.echo(f"restored {files_count(len(result.restored))}")
    if failed:
        sys.exit(1)
