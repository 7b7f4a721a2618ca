"""``bedrot-lab daemon``: start, stop and look at the housekeeping daemon; run one job now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import click

from ..cli import CliError
from ..cli.output import echo_json, echo_table

#: seconds ``daemon start`` waits for the daemon it started to take the lake's lock
START_WAIT = 30.0


@click.group()
def daemon() -> None:
    """The housekeeping daemon: watcher, rules, clean-up, reports, reaping.

    It watches the sandbox, checks its rules and sends alerts, cleans up, writes usage
    reports and ends dead runs, on the schedules of [daemon] in bedrot-lab.toml. One
    daemon per lake; see docs/daemon.md.
    """


@daemon.command()
@click.option("--foreground", is_flag=True, help="Run in this terminal (logs to stderr too); Ctrl-C stops it.")
@click.pass_obj
def start(state, foreground: bool) -> None:
    """Start the daemon for this lake (in the background unless --foreground).

    A second daemon for the same lake is refused, naming the one that runs.
    """
    from .runtime import Daemon, LeaderLockLost, configure_logging, current_holder

    lab = state.lab
    runner = Daemon(lab)  # a mistake in [daemon] or an unknown job is named before anything starts
    state_dir = lab.settings.state_dir
    if foreground:
        configure_logging(state_dir, runner.settings.log_max_bytes, to_stderr=True)
        try:
            served = runner.serve()
        except LeaderLockLost as lost:
            click.echo(f"Error: {lost}", err=True)
            logging_shutdown()
            os._exit(1)  # a job runs on in a thread without the lock: end it with the process (systemd restarts us)
        if not served:
            logging_shutdown()
            os._exit(0)  # a job ignored the stop deadline: end without waiting for it
        return
    holder = current_holder(state_dir)
    if holder is not None:
        raise CliError(f"a daemon already runs for this lake: {holder.describe()}")
    state_dir.mkdir(parents=True, exist_ok=True)
    errors = state_dir / "daemon.start.err"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bedrot_lab", "--lake", str(lab.settings.root), "daemon", "start", "--foreground"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        holder = current_holder(state_dir)
        serving = holder is not None and holder.pid == process.pid and _serving(state_dir, process.pid)
        if serving:
            click.echo(f"daemon started: {holder.describe()}" + _role_text(serving))
            click.echo(f"log: {state_dir / 'daemon.log'}; stop it with: bedrot-lab daemon stop")
            return
        if process.poll() is not None:
            lines = errors.read_text(errors="replace").strip().splitlines()
            raise CliError(f"the daemon did not start: {lines[-1] if lines else f'exit {process.returncode}'}")
        time.sleep(0.1)
    raise CliError(f"the daemon (pid {process.pid}) did not take the lake's lock within {START_WAIT:g} s; "
                   f"see {state_dir / 'daemon.log'}")


def _serving(state_dir, pid: int) -> dict:
    """The status of daemon ``pid`` once it has scheduled its jobs (or become a standby), else {}."""
    from .history import JobHistory

    with JobHistory.for_state(state_dir) as history:
        recorded = history.status()
    return recorded if recorded.get("state") == "running" and recorded.get("pid") == pid else {}


def _role_text(recorded: dict) -> str:
    """``; standby, leader: ...`` or ``; leader`` with a leader lock, else ""."""
    if recorded.get("role") == "standby":
        return f"; standby (runs no job), leader: {recorded.get('leader')}"
    return "; leader (holds the leader lock)" if recorded.get("role") == "leader" else ""


def logging_shutdown() -> None:
    import logging

    logging.shutdown()


@daemon.command()
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Seconds to wait for it to stop (default: [daemon] stop_timeout + 5).")
@click.pass_obj
def stop(state, timeout: float | None) -> None:
    """Stop this lake's daemon (SIGTERM), and wait until it has stopped."""
    from .runtime import current_holder
    from .settings import DaemonSettings

    settings = state.lab.settings
    holder = current_holder(settings.state_dir)
    if holder is None:
        click.echo("no daemon runs for this lake")
        return
    import socket

    if holder.host != socket.gethostname():
        raise CliError(f"the daemon runs on another host ({holder.describe()}); stop it there")
    timeout = DaemonSettings.from_settings(settings).stop_timeout + 5 if timeout is None else timeout
    started = time.monotonic()
    try:
        os.kill(holder.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    while time.monotonic() - started < timeout:
        if current_holder(settings.state_dir) is None:
            click.echo(f"daemon stopped (pid {holder.pid}) in {time.monotonic() - started:.1f}s")
            return
        time.sleep(0.05)
    raise CliError(f"the daemon ({holder.describe()}) has not stopped after {timeout:g} s")


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def status(state, as_json: bool) -> None:
    """Is the daemon running? Since when, the watcher, each job's last and next run."""
    from .history import JobHistory
    from .runtime import LOG_NAME, current_holder

    lab = state.lab
    state_dir = lab.settings.state_dir
    holder = current_holder(state_dir)
    with JobHistory.for_state(state_dir) as history:
        recorded = history.status()
        jobs = _job_rows(lab, history, recorded if holder else {})
    watcher = _watcher_state(recorded.get("job:watch") or {}, running=holder is not None)
    report = {
        "running": holder is not None,
        "pid": holder.pid if holder else None,
        "host": holder.host if holder else None,
        "since": holder.since if holder else None,
        "role": recorded.get("role") if holder else None,
        "leader": recorded.get("leader") if holder else None,
        "uptime_seconds": round(holder.uptime, 1) if holder and holder.uptime is not None else None,
        "last_stopped": recorded.get("stopped"),
        "log": str(state_dir / LOG_NAME),
        "watcher": watcher,
        "jobs": jobs,
    }
    if as_json:
        echo_json(report)
        return
    if holder:
        click.echo(f"running: {holder.describe()} (up {_duration(holder.uptime)}){_role_text(report)}")
    else:
        stopped = recorded.get("stopped")
        click.echo("not running" + (f" (stopped {_when(stopped)})" if stopped else "")
                   + "; start it with: bedrot-lab daemon start")
    click.echo(f"watcher: {watcher['mode']}" + (f" ({watcher['reason']}), {watcher['events_applied']:,} events "
                                                 f"applied, {watcher['overflows']} overflows"
                                                 if watcher["mode"] != "not running" else ""))
    click.echo(f"log: {report['log']}")
    _echo_jobs(jobs)


@daemon.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def jobs(state, as_json: bool) -> None:
    """The housekeeping jobs: plugin, schedule, options, last run, result, duration, next run."""
    from .history import JobHistory
    from .runtime import current_holder

    lab = state.lab
    with JobHistory.for_state(lab.settings.state_dir) as history:
        rows = _job_rows(lab, history, history.status() if current_holder(lab.settings.state_dir) else {})
    if as_json:
        echo_json(rows)
        return
    _echo_jobs(rows, details=True)


@daemon.command("run-job")
@click.argument("name")
@click.option("--log-json", is_flag=True, hidden=True, help="Log as JSON lines on stderr (a job the daemon runs).")
@click.pass_obj
def run_job(state, name: str, log_json: bool) -> None:
    """Run housekeeping job NAME once now, in the foreground (for cron, or to try a job).

    Exit code 0 when it succeeded, 1 when it failed. Recorded in the daemon's history.
    """
    import logging

    from .runtime import Daemon

    runner = Daemon(state.lab)
    if log_json:
        from ..processes import end_with_parent
        from .child import log_as_json

        log_as_json()
        end_with_parent()  # a job must not run on beside the next leader's, even after a SIGKILL
    elif not state.debug:
        logging.getLogger("bedrot_lab").setLevel(logging.INFO)
    ok, result = runner.run_once(name)
    click.echo(f"{name}: {result}")
    if not ok:
        sys.exit(1)


def _job_rows(lab, history, recorded: dict) -> list[dict]:
    from .settings import DaemonSettings

    settings = DaemonSettings.from_settings(lab.settings)
    next_runs = recorded.get("next_runs") or {}
    running = set(recorded.get("running") or ())
    rows = []
    for name, job in lab.jobs.items():
        schedule = settings.schedule(job)
        summary = history.summary(name)
        rows.append({
            "name": name, "plugin": lab.job_plugins.get(name, ""), "schedule": schedule.describe(),
            "enabled": schedule.enabled, "options": dict(schedule.options), "description": job.description,
            "running": name in running, "next_run": next_runs.get(name), **summary,
        })
    return rows


def _echo_jobs(rows: list[dict], details: bool = False) -> None:
    table = []
    for row in rows:
        result = "running" if row["running"] else (row["result"] or "")
        if row["ok"] is False:
            result = f"FAILED: {result}"
        table.append({
            "job": row["name"], "schedule": row["schedule"] if row["enabled"] else "disabled",
            "last run": _when(row["last_run"]), "took": f"{row['seconds']:.1f}s" if row["seconds"] is not None else "",
            "next run": _when(row["next_run"]) if row["next_run"] else "",
            "failures": str(row["consecutive_failures"] or ""), "result": result[:70],
            **({"plugin": row["plugin"]} if details else {}),
        })
    echo_table(table, list(table[0]) if table else ["job"])


def _watcher_state(noted: dict, running: bool) -> dict:
    """The sandbox watcher as the ``watch`` job last noted it: live while its heartbeat is fresh."""
    heartbeat = noted.get("heartbeat")
    live = running and noted.get("mode") not in (None, "stopped") and time.time() - float(heartbeat or 0) < 30
    return {"mode": noted.get("mode") if live else "not running", "reason": noted.get("reason", ""),
            "heartbeat": heartbeat, "overflows": noted.get("overflows", 0),
            "events_applied": noted.get("events_applied", 0)}


def _when(stamp: float | None) -> str:
    if not stamp:
        return ""
    return datetime.fromtimestamp(float(stamp)).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
