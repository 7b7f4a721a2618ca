"""``bedrot-lab runs ...`` and ``bedrot-lab ui``: looking at recorded runs."""

from __future__ import annotations

import os
import re
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ..tracking import FINDING_TAG, NOTE_TAG, OUTCOME_TAG, OUTCOMES
from . import CliError
from .output import SHORT_ID, duration, echo_json, echo_table, number, run_seconds, terminal_width

STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED")
#: the tag by which MLflow links a child run to its parent
PARENT_TAG = "mlflow.parentRunId"
#: the shortest run id prefix `runs show` takes (git's short ids are 7; run ids are 32 hex digits)
MIN_PREFIX = 6
#: runs an ambiguous prefix error names
MAX_CANDIDATES = 5
_HEX = re.compile(r"[0-9a-f]+")
#: bookkeeping tags (process, host, heartbeat) that `runs show` leaves to --json
INTERNAL_TAGS = "bedrot.internal."
#: `runs list --outcome none`: the runs never given an outcome
NO_OUTCOME = "none"


@click.group()
def runs() -> None:
    """Runs recorded in the lake's MLflow store."""


@runs.command("list")
@click.option("--experiment", "experiment", help="Only runs of this experiment.")
@click.option("--status", type=click.Choice(STATUSES, case_sensitive=False), help="Only runs with this status.")
@click.option("--outcome", metavar="[" + "|".join((*OUTCOMES, NO_OUTCOME)) + "]",
              help="Only runs given this outcome by `runs annotate` (none: never given one).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_list(state, experiment: str | None, status: str | None, outcome: str | None, limit: int,
              as_json: bool) -> None:
    """List runs, newest first, a sweep's runs under their parent.

    Run ids are shown by their first 8 characters; `runs show` takes any unique
    prefix of 6 or more. An OUTCOME column appears when a listed run has one.
    """
    outcome = _outcome_option(outcome, (*OUTCOMES, NO_OUTCOME))
    client = state.lab.store.client
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if experiment:
        ids = [i for i, name in experiments.items() if name == experiment]
        if not ids:
            raise CliError(f"no runs recorded for experiment {experiment!r}; known: {', '.join(experiments.values())}", 2)
    else:
        ids = list(experiments)
    conditions = [f"attributes.status = '{status.upper()}'"] if status else []
    if outcome:
        conditions.append(f"tags.`{OUTCOME_TAG}` " + ("IS NULL" if outcome == NO_OUTCOME else f"= '{outcome}'"))
    found = client.search_runs(
        ids, filter_string=" AND ".join(conditions), max_results=limit, order_by=["attributes.start_time DESC"],
    ) if ids else []
    if as_json:
        echo_json([_summary(r, experiments) for r in found])
        return
    if not (experiment or status or outcome):  # a sweep's parent is shown above its children, even if older
        found = [*found, *_missing_parents(client, found)]
    rows = [{**_summary(r, experiments), "run": ("  " * depth) + r.info.run_id[:SHORT_ID],
             "started": _started(r.info.start_time, "%Y-%m-%d %H:%M"), "duration": duration(run_seconds(r.info))}
            for depth, r in nested(found)[:limit]]
    columns = ["run", "experiment", "status", *(["outcome"] if any(row["outcome"] for row in rows) else []),
               "started", "duration", "name"]
    echo_table(rows, columns, empty="no runs yet", right={"duration"}, shrink=("name", "experiment"))


def _outcome_option(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """``value`` of an --outcome option, lower-cased, or one clear line (click's own error for a
    choice is three)."""
    if value is None:
        return None
    if value.strip().lower() not in allowed:
        raise CliError(f"--outcome {value!r} is not an outcome: give one of {', '.join(allowed)}", exit_code=2)
    return value.strip().lower()


def nested(found: list) -> list[tuple[int, Any]]:
    """``found`` in display order with each run's depth: newest first, each sweep's child
    runs right under their parent (in the order they ran), the sweep placed by its newest run."""
    by_id = {r.info.run_id: r for r in found}
    children: dict[str, list] = {}
    for r in found:
        parent = r.data.tags.get(PARENT_TAG)
        if parent in by_id:
            children.setdefault(parent, []).append(r)

    def newest(r) -> int:
        return max([r.info.start_time, *(newest(c) for c in children.get(r.info.run_id, []))])

    def walk(r, depth: int):
        yield depth, r
        for child in sorted(children.get(r.info.run_id, []), key=lambda c: c.info.start_time):
            yield from walk(child, depth + 1)

    tops = [r for r in found if r.data.tags.get(PARENT_TAG) not in by_id]
    return [item for top in sorted(tops, key=newest, reverse=True) for item in walk(top, 0)]


def _missing_parents(client, found: list) -> list:
    """The parents of runs in ``found`` that are not in it themselves (still recorded)."""
    from mlflow.exceptions import MlflowException

    have = {r.info.run_id for r in found}
    wanted = {r.data.tags[PARENT_TAG] for r in found if r.data.tags.get(PARENT_TAG)} - have
    parents = []
    for run_id in sorted(wanted):
        try:
            parents.append(client.get_run(run_id))
        except MlflowException:
            continue
    return parents


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def runs_show(state, run_id: str, as_json: bool) -> None:
    """Show one run: params, metrics, inputs, report and artifacts.

    RUN_ID may be any unique prefix of a run id, of 6 characters or more.
    """
    client = state.lab.store.client
    found = find_run(client, run_id, state.lab.settings.tracking_uri_shown)
    run_id = found.info.run_id
    experiments = {found.info.experiment_id: client.get_experiment(found.info.experiment_id).name}
    data = {
        **_summary(found, experiments),
        "description": found.data.tags.get(NOTE_TAG, ""),
        "findings": [text for key, text in sorted(found.data.tags.items()) if key.startswith(FINDING_TAG)],
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
    from .markdown import to_terminal

    width = min(terminal_width(), 100)
    took = duration(run_seconds(found.info))
    head = {"run": run_id, "experiment": data["experiment"], "name": data["name"], "status": data["status"],
            "started": f"{data['started']}, " + (f"took {took}" if took else "still running"), "user": data["user"],
            "sweep": f"child of run {data['parent_run_id']}" if data["parent_run_id"] else "",
            "outcome": data["outcome"]}
    _echo_pairs("", {key: value for key, value in head.items() if value}, sort=False)
    if data["error"]:
        click.echo(textwrap.fill(data["error"], width, initial_indent="error       ", subsequent_indent=" " * 12))
    description = data["description"]
    for finding in data["findings"]:  # shown under their own heading below
        description = description.replace(finding, "")
    if description.strip():
        click.echo("\n" + to_terminal(re.sub(r"\n{3,}", "\n\n", description).strip(), width))
    if data["findings"]:
        click.echo("\nFindings:\n")
        click.echo(textwrap.indent(to_terminal("\n\n".join(data["findings"]), width - 2), "  ",
                                   lambda line: bool(line.strip())))
    _echo_pairs("Params", data["params"])
    _echo_pairs("Metrics", {key: number(value, 6) for key, value in data["metrics"].items()})
    _echo_pairs("Tags", {key: value for key, value in data["tags"].items() if not key.startswith(INTERNAL_TAGS)})
    click.echo("\nInputs:")
    rows = [_input_row(d, state.lab.settings.root) for d in found.inputs.dataset_inputs]
    if rows:
        echo_table(rows, ["name", "path", "rows", "sha256"], right={"rows"}, indent="  ")
    else:
        click.echo("  (none)")
    report = _report(client, run_id) if "report.md" in data["artifacts"] else ""
    if report:
        click.echo("\nReport:\n")
        click.echo(textwrap.indent(to_terminal(report, width - 2), "  ", lambda line: bool(line.strip())))
    click.echo("\nArtifacts:")
    for path in data["artifacts"]:
        click.echo(f"  {path}")


@runs.command("annotate")
@click.argument("run_id")
@click.option("--finding", metavar="TEXT", help="What the run taught, in Markdown; - reads it from stdin.")
@click.option("--outcome", metavar="[" + "|".join(OUTCOMES) + "]", help="How the experiment came out.")
@click.option("--json", "as_json", is_flag=True, help="Print what was set as JSON.")
@click.pass_obj
def runs_annotate(state, run_id: str, finding: str | None, outcome: str | None, as_json: bool) -> None:
    """Write a finding and an outcome back to a run, whatever its state.

    The finding is appended to the run's description (which the MLflow UI shows on the
    run's page) as a section "Finding (date, user)", after what is there; the outcome
    is the run's tag bedrot.outcome, by which `runs list --outcome` and MLflow's search
    (tags.bedrot.outcome = 'failure') find runs. Credentials in the finding are masked.
    RUN_ID may be any unique prefix of a run id, of 6 characters or more.
    """
    from ..tracking import annotate_run

    outcome = _outcome_option(outcome, OUTCOMES)
    if finding == "-":
        finding = click.get_text_stream("stdin").read()
    if finding is not None and not finding.strip():
        raise CliError("the finding is empty: give its text with --finding TEXT (or --finding - to read it "
                       "from stdin)", exit_code=2)
    if finding is None and outcome is None:
        raise CliError(f"nothing to write to run {run_id!r}: give --finding TEXT, --outcome "
                       f"{'|'.join(OUTCOMES)}, or both", exit_code=2)
    client = state.lab.store.client
    found = find_run(client, run_id, state.lab.settings.tracking_uri_shown)
    done = annotate_run(client, found.info.run_id, user=state.lab.settings.user, finding=finding, outcome=outcome)
    if as_json:
        echo_json(done)
        return
    wrote = [f"outcome {outcome}"] if outcome else []
    if finding is not None:
        wrote.insert(0, "finding appended to its description")
    click.echo(f"annotated run {found.info.run_id} ({found.info.status}): {', '.join(wrote)}")


def find_run(client, run_id: str, store: str):
    """The run whose id is ``run_id`` or starts with it (6 characters at least, like git's
    short ids); one clear error when it is too short, unknown or matches several runs."""
    from mlflow.entities import ViewType
    from mlflow.exceptions import MlflowException

    wanted = run_id.strip().lower()
    if len(wanted) < MIN_PREFIX:
        raise CliError(f"run id {run_id!r} is too short: give at least {MIN_PREFIX} characters of it "
                       f"(see `bedrot-lab runs list`)", exit_code=2)
    unknown = CliError(f"no run {run_id!r} in {store}; see `bedrot-lab runs list`", exit_code=2)
    if not _HEX.fullmatch(wanted):
        raise unknown
    if len(wanted) == 32:
        try:
            return client.get_run(wanted)
        except MlflowException:
            raise unknown from None
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    matches = client.search_runs(experiments, filter_string=f"attributes.run_id LIKE '{wanted}%'",
                                 run_view_type=ViewType.ALL, max_results=MAX_CANDIDATES + 1,
                                 order_by=["attributes.start_time DESC"]) if experiments else []
    if not matches:
        raise unknown
    if len(matches) > 1:
        names = {e.experiment_id: e.name for e in client.search_experiments(view_type=ViewType.ALL)}
        listed = "; ".join(f"{m.info.run_id} ({names.get(m.info.experiment_id, m.info.experiment_id)}, "
                           f"{_started(m.info.start_time, '%Y-%m-%d %H:%M')})" for m in matches[:MAX_CANDIDATES])
        more = " and more" if len(matches) > MAX_CANDIDATES else ""
        raise CliError(f"run id {run_id!r} is ambiguous: it matches {len(matches[:MAX_CANDIDATES])}{more} runs: "
                       f"{listed}; give more characters", exit_code=2)
    return matches[0]


def _echo_pairs(title: str, pairs: dict[str, Any], *, sort: bool = True) -> None:
    """``key  value`` lines, keys aligned, under ``title`` (indented) or without one."""
    indent = "  " if title else ""
    if title:
        click.echo(f"\n{title}:")
        if not pairs:
            click.echo("  (none)")
    width = max((len(key) for key in pairs), default=0)
    for key, value in sorted(pairs.items()) if sort else pairs.items():
        click.echo(f"{indent}{key:<{width}}  {value}".rstrip())


def _input_row(dataset_input, lake: Path) -> dict[str, str]:
    """One input data set as ``name path rows sha256[:12]`` (a path in the lake relative to
    it): from its profile where it has them, else from the input's tags (older runs)."""
    dataset = dataset_input.dataset
    tags = {t.key: t.value for t in dataset_input.tags}
    profile = _json(dataset.profile)
    source = _json(dataset.source)
    path = source.get("uri") or source.get("path") or dataset.source or ""
    path = str(path).removeprefix("file://")
    if Path(path).is_relative_to(lake):
        path = Path(path).relative_to(lake).as_posix()
    rows = profile.get("rows", profile.get("num_rows", tags.get("rows")))
    sha256 = profile.get("sha256") or tags.get("sha256") or dataset.digest or ""
    return {"name": dataset.name, "path": path, "rows": "" if rows is None else f"{int(rows):,}"
            if str(rows).isdigit() else str(rows), "sha256": str(sha256)[:12]}


def _json(text: str | None) -> dict:
    import json

    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _report(client, run_id: str) -> str:
    """The run's ``report.md``, or "" when it cannot be read."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="bedrot-show-") as folder:
            return Path(client.download_artifacts(run_id, "report.md", folder)).read_text(errors="replace")
    except Exception:  # the report is a bonus here; the artifact list still names it
        return ""


def _started(epoch_ms: int, form: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(epoch_ms / 1000).strftime(form)


def _summary(found, experiments: dict[str, str]) -> dict:
    info = found.info
    seconds = run_seconds(info)
    return {
        "run_id": info.run_id,
        "experiment": experiments.get(info.experiment_id, info.experiment_id),
        "name": info.run_name,
        "status": info.status,
        "started": _started(info.start_time),
        "seconds": None if seconds is None else round(seconds, 1),
        "user": found.data.tags.get("bedrot.user", ""),
        "error": found.data.tags.get("error", ""),
        "parent_run_id": found.data.tags.get(PARENT_TAG, ""),
        "outcome": found.data.tags.get(OUTCOME_TAG, ""),
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
    # the mode is the browser's choice in MLflow 3.17 (docs/mlflow-ui.md): a link can carry it
    click.echo(f"MLflow UI for {settings.root} at http://{host}:{port}/#/experiments?workflowType=machine_learning"
               "  (Ctrl-C to stop)", err=True)
    click.echo('first visit in a browser: click "Model training" at the top of the sidebar and close the MLflow '
               "Assistant panel (x); the browser remembers both (docs/mlflow-ui.md)", err=True)
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
