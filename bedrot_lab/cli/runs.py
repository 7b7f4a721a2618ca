"""``bedrot-lab runs ...`` and ``bedrot-lab ui``: looking at recorded runs."""

from __future__ import annotations

import os
import sys
from datetime import datetime

import click

from . import CliError
from .output import echo_json, echo_table

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")


@click.group()
def runs() -> None:
    """Runs recorded in the lake's MLflow store."""


@runs.command("list")
@click.option("--experiment", "experiment", help="Only runs of this experiment.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only runs with this status.")
@click.option("--limit", default=20, show_default=True, help="At most this many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_list(state, experiment: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first."""
    client = state.lab.store.client
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment:
        ids = [i for i, name in experiments.items() if name == experiment]
        if not ids:
            raise CliError(f"no runs recorded for experiment {experiment!r}; known: {', '.join(experiments.values())}", 2)
    else:
        ids = list(experiments)
    found = client.search_runs(
        ids, filter_string=f"attributes.status = '{status.upper()}'" if status else "",
        max_results=limit, order_by=["attributes.start_time DESC"],
    ) if ids else []
    rows = [_summary(r, experiments) for r in found]
    if as_json:
        echo_json(rows)
        return
    echo_table(rows, ["run_id", "experiment", "status", "started", "seconds", "name"], empty="no runs yet")


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_show(state, run_id: str, as_json: bool) -> None:
    """Show one run: status, params, metrics, tags, inputs and artifacts."""
    from mlflow.exceptions import MlflowException

    client = state.lab.store.client
    try:
        found = client.get_run(run_id)
    except MlflowException:
        raise CliError(f"no run {run_id!r} in {state.lab.settings.tracking_uri_shown}; see `bedrot-lab runs list`", 2) from None
    experiments = {found.info.experiment_id: client.get_experiment(found.info.experiment_id).name}
    data = {
        **_summary(found, experiments),
        "description": found.data.tags.get("mlflow.note.content", ""),
        "params": found.data.params,
        "metrics": found.data.metrics,
        "tags": {k: v for k, v in sorted(found.data.tags.items()) if not k.startswith("mlflow.")},
        "inputs": [
            {"name": d.dataset.name, "digest": d.dataset.digest,
             "source": d.dataset.source, **{t.key: t.value for t in d.tags}}
            for d in found.inputs.dataset_inputs
        ],
        "artifacts": _artifacts(client, run_id),
        "artifact_uri": found.info.artifact_uri,
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"run {data['run_id']}  {data['experiment']}  {data['status']}  {data['started']}  {data['seconds']}s")
    if data["description"]:
        click.echo("\n" + data["description"])
    for title in ("params", "metrics", "tags"):
        click.echo(f"\n{title.capitalize()}:")
        for key, value in sorted(data[title].items()):
            click.echo(f"  {key} = {value}")
    click.echo("\nInputs:")
    for item in data["inputs"]:
        click.echo(f"  {item['name']}  sha256 {item.get('sha256', item['digest'])[:16]}...  {item['source']}")
    click.echo("\nArtifacts:")
    for path in data["artifacts"]:
        click.echo(f"  {path}")


def _summary(found, experiments: dict[str, str]) -> dict:
    info = found.info
    seconds = round((info.end_time - info.start_time) / 1000, 1) if info.end_time else None
    return {
        "run_id": info.run_id,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "name": info.run_name,
        "status": info.status,
        "started": datetime.fromtimestamp(info.start_time / 1000).strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": seconds,
        "user": found.data.tags.get("bedrot.user", ""),
        "error": found.data.tags.get("error", ""),
    }


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return out


@click.command()
@click.option("--port", default=5000, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.pass_obj
def ui(state, port: int, host: str) -> None:
    """Start the MLflow UI on the lake's tracking store (Ctrl-C stops it)."""
    settings = state.lab.settings
    if settings.tracking_uri.startswith(("http:", "https:")):
        raise CliError(f"the lake tracks to a server already: open {settings.tracking_uri_shown}")
    _check_can_listen(host, port)
    _ = state.lab.store  # create and migrate the store here, never in the server's workers
    artifacts = settings.artifact_root / "artifacts"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
               "--default-artifact-root", str(artifacts), "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    click.echo(f"MLflow UI for {settings.root} at http://{host}:{port}  (Ctrl-C to stop)", err=True)
    sys.stdout.flush()
    os.execvpe(command[0], command, env)


def _check_can_listen(host: str, port: int) -> None:
    """Refuse in one line, before anything starts, an address the server could not listen
    on; the server itself would log the error among its start-up lines and exit 0."""
    import errno
    import socket

    # bound the way uvicorn binds: with SO_REUSEADDR a port in TIME_WAIT is free, one with a listener is not
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OverflowError:
            raise CliError(f"--port {port}: a port is a number from 1 to 65535", exit_code=2) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(f"port {port} on {host} is in use (address already in use); "
                               f"stop what listens there or choose another with --port") from None
            reason = (exc.strerror or str(exc)).lower()
            raise CliError(f"cannot listen on {host}:{port} ({reason}); choose another --host or --port") from None
