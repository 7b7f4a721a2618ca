"""The ``report`` housekeeping job: the sandbox's usage, limits, violations and clean-ups, one MLflow run per report."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..jobs import HousekeepingJob
from .settings import SEVERITIES, files_count, format_size

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ..config import Settings
    from ..jobs import JobContext
    from ..tracking import RunRecorder
    from .settings import Limits, Quotas

log = logging.getLogger(__name__)

#: the MLflow experiment of the reports (other housekeeping may log there too: reports carry JOB_TAG)
EXPERIMENT = "housekeeping"
JOB_TAG = "bedrot.housekeeping"
#: when the report read the sandbox (epoch seconds): the next report's "since"
UNTIL_TAG = "bedrot.report.until"
#: which clean manifests the report counted, and how many of their entries (see reclaimed_since)
RECLAIMED_FILE = "reclaimed.json"
#: a manifest last written this long before the previous report is read again: file times lag the clock
MTIME_SLACK = 5.0
#: a watcher heartbeat this recent means the watcher is live (as `sandbox usage` counts it)
LIVE_SECONDS = 30.0
#: the markdown stored as the run's description (MLflow keeps up to 8,000 characters of a tag)
DESCRIPTION_CHARS = 7000
#: rows of each list in the markdown report
SHOWN = 15

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_RANK = {"": 0, "ok": 1, "soft": 2, "hard": 3}


# -- what the report reads ------------------------------------------------------------------


@dataclass(frozen=True)
class UsageRow:
    """Bytes and files of one user, project (``user/project``), shared area, the sandbox
    root (``root``) or the whole sandbox (``total``), and its quota limits."""

    scope: str
    name: str
    bytes: int
    files: int
    soft: int | None = None
    hard: int | None = None

    @property
    def status(self) -> str:
        """``hard`` or ``soft`` (over that limit), ``ok`` (within its limits), ``""`` (no limits)."""
        if self.hard is not None and self.bytes > self.hard:
            return "hard"
        if self.soft is not None and self.bytes > self.soft:
            return "soft"
        return "ok" if self.soft is not None or self.hard is not None else ""

    @property
    def label(self) -> str:
        return "the sandbox" if self.scope == "total" else "(root)" if self.scope == "root" else \
            f"{self.scope} {self.name}"

    def share(self) -> float | None:
        """Its bytes as a share of the limit it is over (hard, else soft), or of its lowest limit
        when within them; None without limits."""
        limit = self.hard if self.status == "hard" or self.soft is None else self.soft
        return None if not limit else self.bytes / limit

    def describe(self) -> str:
        """``"hard (120%)"``, ``"ok (34%)"``, or ``"-"`` without limits."""
        share = self.share()
        return "-" if share is None else f"{self.status} ({share:.0%})"


@dataclass
class Reclaimed:
    """What cleans took out of the sandbox since the last report: bytes and files archived
    or deleted, from the manifests written since; ``manifests`` maps each manifest read
    (relative to ``<archive>/sandbox``) to how many of its entries are counted by now."""

    since: float | None
    until: float
    archived_bytes: int = 0
    deleted_bytes: int = 0
    files: int = 0
    manifests: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.archived_bytes + self.deleted_bytes

    def state(self) -> dict[str, Any]:
        """What the next report needs to count each entry once (logged as ``reclaimed.json``)."""
        return {"since": self.since, "until": self.until, "manifests": self.manifests}


@dataclass(frozen=True)
class Point:
    """One report's total in the history chart."""

    run_id: str
    at: float
    bytes: int
    files: int


@dataclass(frozen=True)
class LimitedRun:
    """A run stopped by a compute limit (``[compute.limits]``, see bedrot_lab/limits.py)."""

    run_id: str
    experiment: str
    user: str
    limit: str
    value: str
    ended: float | None  # epoch seconds
    error: str


def limited_runs(client: MlflowClient, since: float | None, most: int = 1000) -> list[LimitedRun]:
    """The runs of every experiment stopped by a compute limit that ended since ``since`` (epoch
    seconds; ever, when None), newest first, at most ``most``."""
    from mlflow.entities import ViewType

    from ..limits import LIMIT_TAG, LIMIT_VALUE_TAG

    names: dict[str, str] = {}
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ALL, max_results=1000, page_token=token)
        names.update((experiment.experiment_id, experiment.name) for experiment in page)
        token = page.token
        if not token:
            break
    if not names:
        return []
    query = f"tags.`{LIMIT_TAG}` IS NOT NULL"
    if since is not None:
        query += f" and attributes.end_time >= {int(since * 1000)}"
    found = client.search_runs(list(names), filter_string=query, run_view_type=ViewType.ALL,
                               order_by=["attributes.end_time DESC"], max_results=most)
    return [LimitedRun(run.info.run_id, names.get(run.info.experiment_id, run.info.experiment_id),
                       run.data.tags.get("bedrot.user", ""), run.data.tags[LIMIT_TAG],
                       run.data.tags.get(LIMIT_VALUE_TAG, ""),
                       run.info.end_time / 1000 if run.info.end_time else None, run.data.tags.get("error", ""))
            for run in found]


def usage_rows(index: Any, quotas: Quotas | None) -> list[UsageRow]:
    """Every user, project, shared area and the whole sandbox in ``index``, with the limits
    of ``quotas`` (none when None or empty: nothing is looked up)."""
    def limits(scope: str, name: str | None) -> Limits | None:
        return quotas.limits(scope, name) if quotas else None

    def row(scope: str, name: str, nbytes: int, nfiles: int, found: Limits | None) -> UsageRow:
        return UsageRow(scope, name, nbytes, nfiles, found.soft if found else None, found.hard if found else None)

    rows = [row("user", r["user"], r["bytes"], r["files"], limits("user", r["user"])) for r in index.usage("user")]
    for r in index.usage("project"):
        name = f"{r['user']}/{r['project']}"
        rows.append(row("project", name, r["bytes"], r["files"], limits("project", name)))
    for r in index.usage("area"):
        if r["area"]:
            rows.append(row("area", r["area"], r["bytes"], r["files"], limits("area", r["area"])))
        else:
            rows.append(UsageRow("root", "", r["bytes"], r["files"]))
    nbytes, nfiles = index.total()
    rows.append(row("total", "", nbytes, nfiles, limits("total", None)))
    return rows


def quotas_of(ctx: JobContext) -> Quotas | None:
    """The quotas of the effective quota rule, or None when there are none (or a plugin's
    rule that keeps no :class:`Quotas` replaces it)."""
    from .rules import effective_rules

    rule = effective_rules(ctx.lab.settings, ctx.lab.plugins.hook).named("quota")
    quotas = getattr(rule, "quotas", None)
    if rule is not None and not callable(getattr(quotas, "limits", None)):
        ctx.log.info("the quota rule is %r, which keeps no quotas: the report shows no limits", rule)
        return None
    return quotas or None


def open_violations(settings: Settings) -> Counter[tuple[str, str]]:
    """How many violations are open per (rule, severity), as the last check recorded them."""
    from .violations import DB_NAME, ViolationStore

    if not (settings.state_dir / DB_NAME).exists():  # never checked: nothing to count, no file to create
        return Counter()
    with ViolationStore.for_settings(settings) as store:
        return Counter((stored.violation.rule, stored.violation.severity) for stored in store.open_violations())


def freshness(info: Mapping[str, Any], now: float) -> dict[str, float]:
    """How current the index is: seconds since it last agreed with the disk or heard from a
    watcher (``index.age_seconds``), since its last full scan or reconcile, and whether a
    watcher is live. Empty for an index that was never built."""
    if not info.get("full_scans"):
        return {}
    synced = max(float(info.get(key) or 0) for key in ("last_full_scan", "last_reconcile"))
    heartbeat = float(info.get("watcher_heartbeat") or 0)
    return {"index.age_seconds": max(0.0, now - max(synced, heartbeat)),
            "index.reconcile_age_seconds": max(0.0, now - synced),
            "index.watcher_live": 1.0 if now - heartbeat < LIVE_SECONDS else 0.0}


def reclaimed_since(settings: Settings, since: float | None, counted: Mapping[str, int], until: float) -> Reclaimed:
    """Bytes and files the cleans archived or deleted since the last report.

    Reads the manifests under ``<archive>/sandbox/<day>/_manifests/`` written since
    ``since`` (every one for a first report, ``since`` None) and counts their entries
    beyond the ``counted`` ones (what the last report counted of each), so a clean that
    was still running at the last report is counted in full and no entry twice.
    """
    from .archive import ARCHIVE_AREA, MANIFESTS_DIR, CleanupError, read_manifest

    found = Reclaimed(since, until)
    base = Path(settings.zone("archive"), ARCHIVE_AREA)
    for manifest in sorted(base.glob(f"*/{MANIFESTS_DIR}/*.jsonl")):
        try:
            if since is not None and manifest.stat().st_mtime < since - MTIME_SLACK:
                continue
            _, entries = read_manifest(manifest)
        except (OSError, CleanupError) as exc:
            log.warning("reclaimed bytes: %s is left out: %s", manifest, exc)
            found.unreadable.append(str(manifest))
            continue
        name = manifest.relative_to(base).as_posix()
        for entry in entries[counted.get(name, 0):]:
            size = entry.get("size")
            if not isinstance(size, int) or isinstance(size, bool):
                continue
            found.files += 1
            if entry.get("archived"):
                found.archived_bytes += size
            else:
                found.deleted_bytes += size
        found.manifests[name] = len(entries)
    return found


# -- the previous reports -------------------------------------------------------------------


def previous_reports(client: MlflowClient, experiment_id: str, limit: int) -> list[Any]:
    """The last ``limit`` (at least one) finished report runs, newest first."""
    return list(client.search_runs(
        [experiment_id], filter_string=f"tags.`{JOB_TAG}` = 'report' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=max(1, limit)))


def report_time(run: Any) -> float:
    """When a report read the sandbox: its ``bedrot.report.until`` tag, else when it started."""
    try:
        return float(run.data.tags[UNTIL_TAG])
    except (KeyError, ValueError):
        return run.info.start_time / 1000


def counted_before(client: MlflowClient, run: Any) -> dict[str, int]:
    """The manifests report ``run`` counted and how many of their entries (its ``reclaimed.json``)."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="bedrot-report-") as folder:
            path = client.download_artifacts(run.info.run_id, RECLAIMED_FILE, folder)
            manifests = json.loads(Path(path).read_text()).get("manifests", {})
    except Exception as exc:  # an older report, or its artifact gone: count from its time alone
        log.info("report %s: no %s (%s); counting manifests by time", run.info.run_id, RECLAIMED_FILE, exc)
        return {}
    return {str(k): v for k, v in manifests.items() if isinstance(v, int)} if isinstance(manifests, dict) else {}


def history_points(runs: Iterable[Any], current: Point) -> list[Point]:
    """The totals of ``runs`` (reports without ``usage.total.bytes`` left out) and
    ``current``, oldest first."""
    points = [Point(run.info.run_id, report_time(run), int(run.data.metrics["usage.total.bytes"]),
                    int(run.data.metrics.get("usage.total.files", 0)))
              for run in runs if "usage.total.bytes" in run.data.metrics]
    return sorted([*points, current], key=lambda point: point.at)


# -- metrics --------------------------------------------------------------------------------


def metric_part(name: str) -> str:
    """``name`` as one part of a metric name: MLflow's characters without the dot (which
    separates parts). A name that had to change gets a short hash of itself, so two
    names never share a metric: ``"ana"`` stays, ``"ana.b"`` is ``"ana_b-1f2e3d"``."""
    safe = _UNSAFE.sub("_", name)[:64] or "_"
    if safe == name:
        return safe
    return f"{safe}-{hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:6]}"


def usage_metrics(rows: Sequence[UsageRow]) -> dict[str, float]:
    """``usage.<scope>.<name>.bytes`` and ``.files`` of each row (``usage.project.<user>.<project>``,
    ``usage.root``, ``usage.total``)."""
    metrics: dict[str, float] = {}
    for row in rows:
        if row.scope in ("total", "root"):
            key = f"usage.{row.scope}"
        elif row.scope == "project":
            user, _, project = row.name.partition("/")
            key = f"usage.project.{metric_part(user)}.{metric_part(project)}"
        else:
            key = f"usage.{row.scope}.{metric_part(row.name)}"
        metrics[f"{key}.bytes"] = row.bytes
        metrics[f"{key}.files"] = row.files
    return metrics


def violation_metrics(counts: Mapping[tuple[str, str], int]) -> dict[str, float]:
    """``violations.open``, ``violations.open.<severity>`` and ``violations.<rule>.<severity>``."""
    metrics: dict[str, float] = {"violations.open": sum(counts.values())}
    for severity in SEVERITIES:
        metrics[f"violations.open.{severity}"] = sum(n for (_, s), n in counts.items() if s == severity)
    for (rule, severity), count in counts.items():
        key = f"violations.{'.'.join(metric_part(part) for part in rule.split('.'))}.{severity}"
        metrics[key] = metrics.get(key, 0) + count
    return metrics


def reclaimed_metrics(reclaimed: Reclaimed) -> dict[str, float]:
    return {"reclaimed.bytes": reclaimed.bytes, "reclaimed.files": reclaimed.files,
            "reclaimed.archived.bytes": reclaimed.archived_bytes, "reclaimed.deleted.bytes": reclaimed.deleted_bytes}


# -- the markdown ---------------------------------------------------------------------------


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _limit(value: int | None) -> str:
    return format_size(value) if value is not None else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_sections(rows: Sequence[UsageRow], has_quotas: bool, counts: Mapping[tuple[str, str], int],
                      reclaimed: Reclaimed, info: Mapping[str, Any], now: float,
                      limited: Sequence[LimitedRun] = ()) -> list[str]:
    """The report in markdown, one string per section (the first ones are the run's description)."""
    total = next((row for row in rows if row.scope == "total"), UsageRow("total", "", 0, 0))
    fresh = freshness(info, now)
    if fresh:
        watcher = f"watcher live ({info.get('watcher_mode')})" if fresh["index.watcher_live"] else \
            "no watcher running"
        index = f"Index as of {_ago(fresh['index.age_seconds'])}; {watcher}."
    else:
        index = ("The usage index was never built: no usage to report (the `reconcile` job or `bedrot-lab "
                 "sandbox usage` builds it).")
    since = f"since the last report ({_when(reclaimed.since)})" if reclaimed.since else "before this first report"
    freed = (f"Reclaimed by cleans {since}: **{format_size(reclaimed.bytes)}** in {files_count(reclaimed.files)} "
             f"({format_size(reclaimed.archived_bytes)} archived, {format_size(reclaimed.deleted_bytes)} deleted).")
    head = (f"# Sandbox usage report, {_when(now)}\n\n**{format_size(total.bytes)}** in "
            f"{files_count(total.files)}. {index}\n\n{freed}")
    sections = [head]

    over = sorted((row for row in rows if row.status in ("soft", "hard")),
                  key=lambda row: (-_RANK[row.status], -(row.share() or 0)))
    if not has_quotas:
        sections.append("## Quotas\n\nNo quotas are set (`[sandbox.quotas]` in `bedrot-lab.toml`).")
    elif not over:
        sections.append("## Over quota\n\nNobody is over a quota.")
    else:
        lines = ["## Over quota", "", "| who | usage | soft | hard | over |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(row.label)} | {format_size(row.bytes)} | {_limit(row.soft)} | {_limit(row.hard)} | "
                  f"**{row.describe()}** |" for row in over[:SHOWN]]
        if len(over) > SHOWN:
            lines.append(f"\n... and {len(over) - SHOWN} more (tables/usage.json)")
        sections.append("\n".join(lines))

    if counts:
        rules = sorted({rule for rule, _ in counts})
        lines = ["## Open violations", "", "as the last `check` recorded them", "",
                 "| rule | hard | soft | info |", "|---|---|---|---|"]
        lines += [f"| {_cell(rule)} | " + " | ".join(str(counts.get((rule, s), 0)) for s in ("hard", "soft", "info"))
                  + " |" for rule in rules]
        sections.append("\n".join(lines))
    else:
        sections.append("## Open violations\n\nNone, as the last `check` recorded them.")

    users = [row for row in rows if row.scope == "user"]
    if users:
        lines = ["## Largest users", "", "| user | usage | files | soft | hard | status |", "|---|---|---|---|---|---|"]
        lines += [f"| {_cell(row.name)} | {format_size(row.bytes)} | {row.files:,} | {_limit(row.soft)} | "
                  f"{_limit(row.hard)} | {row.describe()} |" for row in users[:SHOWN]]
        sections.append("\n".join(lines))
    areas = [row for row in rows if row.scope in ("area", "root")]
    if areas:
        lines = ["## Areas", "", "| area | usage | files | soft | hard | status |", "|---|---|---|---|---|---|"]
        lines += [f"| {_cell(row.name or '(root)')} | {format_size(row.bytes)} | {row.files:,} | {_limit(row.soft)} | "
                  f"{_limit(row.hard)} | {row.describe()} |" for row in areas[:SHOWN]]
        sections.append("\n".join(lines))
    if limited:
        since = f"since the last report ({_when(reclaimed.since)})" if reclaimed.since else "so far"
        lines = ["## Runs stopped by compute limits", "", f"{len(limited)} {since} (`[compute.limits]`)", "",
                 "| run | experiment | user | limit | value | ended |", "|---|---|---|---|---|---|"]
        lines += [f"| {run.run_id[:8]} | {_cell(run.experiment)} | {_cell(run.user)} | {run.limit} | "
                  f"{_cell(run.value)} | {_when(run.ended) if run.ended else '-'} |" for run in limited[:SHOWN]]
        if len(limited) > SHOWN:
            lines.append(f"\n... and {len(limited) - SHOWN} more (tables/limited_runs.json)")
        sections.append("\n".join(lines))
    if reclaimed.unreadable:
        sections.append("## Manifests left out\n\n" + "\n".join(f"- `{path}`" for path in reclaimed.unreadable))
    return sections


def description(sections: Sequence[str]) -> str:
    """The run's description: the head of the report, up to what MLflow keeps."""
    text = ""
    for section in sections[:3]:
        if len(text) + len(section) > DESCRIPTION_CHARS:
            break
        text += section + "\n\n"
    return text + "The whole report: `report.md`."


# -- figures --------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    """A matplotlib figure drawn by Agg, outside pyplot (no global state: jobs run in threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _size_label(value: float, _: Any = None) -> str:
    return format_size(value).replace(".0 ", " ") if value >= 0 else ""


def _size_axis(axis: Any, largest: float, *, log: bool = False) -> None:
    """Ticks in binary units: powers of two on a log axis, else round numbers of the unit
    (KiB, MiB, GiB ...) of ``largest``."""
    from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator, NullFormatter

    formatter = FuncFormatter(_size_label)
    if log:
        axis.set_major_locator(LogLocator(base=2, numticks=10))
        axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(formatter)
        return
    unit = 1024 ** max(0, min(6, int(math.log(max(largest, 1), 1024))))
    rounded = MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10])

    class UnitLocator(Locator):
        def __call__(self) -> Any:
            return self.tick_values(*self.axis.get_view_interval())

        def tick_values(self, vmin: float, vmax: float) -> Any:
            return rounded.tick_values(vmin / unit, vmax / unit) * unit

    axis.set_major_locator(UnitLocator())
    axis.set_major_formatter(formatter)


def chart_rows(rows: Sequence[UsageRow], count: int) -> list[UsageRow]:
    """The rows the bar chart shows: those over a limit, then those with limits nearest to
    them, then the largest; at most ``count``."""
    shown = [row for row in rows if row.bytes > 0 and row.scope != "root"
             and (row.status or not (row.scope == "area" and row.name == "users"))]  # users/: the users' sum
    shown.sort(key=lambda row: (-_RANK[row.status], -(row.share() or 0), -row.bytes))
    return shown[:max(1, count)]


def usage_chart(rows: Sequence[UsageRow], title: str) -> Any:
    """Horizontal bars of usage, coloured by status, with each row's soft and hard limits marked."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colours = {"hard": "#c0392b", "soft": "#e67e22", "ok": "#2e86c1", "": "#95a5a6"}
    figure = _figure(10, 1.6 + 0.38 * len(rows))
    axes = figure.add_subplot()
    positions = list(range(len(rows)))[::-1]
    axes.barh(positions, [row.bytes for row in rows], color=[colours[row.status] for row in rows], height=0.6)
    for position, row in zip(positions, rows):
        for limit, colour in ((row.soft, colours["soft"]), (row.hard, colours["hard"])):
            if limit is not None:
                axes.plot([limit, limit], [position - 0.42, position + 0.42], color=colour, linewidth=2.5)
    axes.set_yticks(positions, [row.label for row in rows])
    values = [v for row in rows for v in (row.bytes, row.soft, row.hard) if v]
    log = bool(values) and max(values) / min(values) > 100
    if log:
        axes.set_xscale("log", base=2)
    _size_axis(axes.xaxis, max(values, default=1), log=log)
    axes.grid(axis="x", alpha=0.3)
    axes.set_title(title)
    handles = [Patch(color=colours[s], label=label) for s, label in
               (("ok", "within limits"), ("soft", "over soft"), ("hard", "over hard"), ("", "no limits"))
               if any(row.status == s for row in rows)]
    if any(row.soft is not None or row.hard is not None for row in rows):
        handles += [Line2D([], [], color=colours["soft"], linewidth=2.5, label="soft limit"),
                    Line2D([], [], color=colours["hard"], linewidth=2.5, label="hard limit")]
    axes.legend(handles=handles, loc="lower right", fontsize="small")
    return figure


def history_chart(points: Sequence[Point], total: UsageRow, title: str) -> Any:
    """The sandbox's total bytes over the reports, with its total limits if it has them."""
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    figure = _figure(10, 4.5)
    axes = figure.add_subplot()
    when = [datetime.fromtimestamp(point.at).astimezone() for point in points]
    axes.plot(when, [point.bytes for point in points], marker="o", color="#2e86c1", label="total usage")
    for limit, colour, label in ((total.soft, "#e67e22", "soft limit"), (total.hard, "#c0392b", "hard limit")):
        if limit is not None:
            axes.axhline(limit, color=colour, linestyle="--", linewidth=1.5, label=label)
    axes.set_ylim(bottom=0)
    _size_axis(axes.yaxis, max(point.bytes for point in points))
    zone = datetime.now().astimezone().tzinfo  # matplotlib would show UTC
    locator = AutoDateLocator(tz=zone)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=zone))
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    return figure


# -- the job --------------------------------------------------------------------------------


def usage_frame(rows: Sequence[UsageRow]) -> Any:
    import pandas as pd

    return pd.DataFrame({
        "scope": [row.scope for row in rows],
        "name": [row.name for row in rows],
        "bytes": [row.bytes for row in rows],
        "files": [row.files for row in rows],
        "size": [format_size(row.bytes) for row in rows],
        "soft_bytes": pd.array([row.soft for row in rows], dtype="Int64"),
        "hard_bytes": pd.array([row.hard for row in rows], dtype="Int64"),
        "status": [row.status for row in rows],
        "share_of_soft": [row.bytes / row.soft if row.soft else None for row in rows],
        "share_of_hard": [row.bytes / row.hard if row.hard else None for row in rows],
    })


def history_frame(points: Sequence[Point]) -> Any:
    import pandas as pd

    return pd.DataFrame({
        "run_id": [point.run_id for point in points],
        "report_time": [datetime.fromtimestamp(point.at).astimezone().isoformat(timespec="seconds")
                        for point in points],
        "bytes": [point.bytes for point in points],
        "files": [point.files for point in points],
    })


def limited_frame(limited: Sequence[LimitedRun]) -> Any:
    import pandas as pd

    return pd.DataFrame({
        "run_id": [run.run_id for run in limited],
        "experiment": [run.experiment for run in limited],
        "user": [run.user for run in limited],
        "limit": [run.limit for run in limited],
        "value": [run.value for run in limited],
        "ended": [datetime.fromtimestamp(run.ended).astimezone().isoformat(timespec="seconds") if run.ended
                  else None for run in limited],
        "error": [run.error for run in limited],
    })


def report(ctx: JobContext) -> str:
    """Log the sandbox's usage as one run of experiment ``housekeeping``: usage per user, project,
    area and in total against the quotas, the open violations, what cleans reclaimed since the
    last report, the runs stopped by compute limits since then, the index's freshness, a usage
    table, two charts and a markdown report."""
    from .index import UsageIndex

    settings = ctx.lab.settings
    now = time.time()
    quotas = quotas_of(ctx)
    settings.zone("sandbox").mkdir(parents=True, exist_ok=True)
    with UsageIndex.for_settings(settings) as index:
        # an index never built is built first (at a daemon's start, the watcher's scan is waited for)
        built = index.build_if_never(progress=lambda _files: ctx.check_stop())
        if built is None and ctx.options.get("refresh"):
            index.reconcile()
        now = time.time()
        info = index.info()
        rows = usage_rows(index, quotas)
    ctx.check_stop()
    counts = open_violations(settings)
    ctx.check_stop()

    store = ctx.lab.store
    client = store.client
    experiment = store.experiment_id(EXPERIMENT)  # tagged for MLflow's classic view (tracking.KIND_TAG)
    previous = previous_reports(client, experiment, int(ctx.options.get("history", 30)) - 1)
    last = previous[0] if previous else None
    reclaimed = reclaimed_since(settings, report_time(last) if last else None,
                                counted_before(client, last) if last else {}, now)
    limited = limited_runs(client, reclaimed.since)
    ctx.check_stop()

    total = next((row for row in rows if row.scope == "total"), None)
    sections = markdown_sections(rows, bool(quotas), counts, reclaimed, info, now, limited)
    metrics = {**violation_metrics(counts), **reclaimed_metrics(reclaimed), **freshness(info, now),
               "limits.stopped_runs": len(limited)}
    if total is not None:
        metrics.update(usage_metrics(rows))
    day = datetime.fromtimestamp(now).astimezone()
    recorder = store.start_run(
        EXPERIMENT, run_name=f"usage report {day:%Y-%m-%d}", description=description(sections),
        tags={JOB_TAG: "report", UNTIL_TAG: f"{now:.3f}", "bedrot.report.quotas": "yes" if quotas else "no"})
    try:
        _log_report(ctx, recorder, rows, metrics, previous, reclaimed, sections, total, day)
        if limited:
            from ..context import log_table

            log_table(recorder, limited_frame(limited), "limited_runs")
    except BaseException as exc:
        from ..jobs import JobStopped

        recorder.end("KILLED" if isinstance(exc, (JobStopped, KeyboardInterrupt)) else "FAILED")
        raise
    recorder.end("FINISHED")

    over = [row for row in rows if row.status in ("soft", "hard")]
    usage = f"{format_size(total.bytes)} in {files_count(total.files)}" if total else "no usage"
    hard = sum(1 for row in over if row.status == "hard")
    return (f"run {recorder.run_id[:8]}: {usage}, {len(over)} over quota ({hard} hard), "
            f"{sum(counts.values())} open violations, {format_size(reclaimed.bytes)} reclaimed"
            + (f", {len(limited)} runs stopped by compute limits" if limited else ""))


def _log_report(ctx: JobContext, recorder: RunRecorder, rows: Sequence[UsageRow], metrics: Mapping[str, float],
                previous: Sequence[Any], reclaimed: Reclaimed, sections: Sequence[str], total: UsageRow | None,
                day: datetime) -> None:
    from ..context import log_table

    recorder.log_metrics(metrics)
    recorder.log_dict(reclaimed.state(), RECLAIMED_FILE)
    recorder.log_text("\n\n".join(sections) + "\n", "report.md")
    if total is None:
        return
    if total.files:
        log_table(recorder, usage_frame(rows), "usage")
    ctx.check_stop()
    points = history_points(previous, Point(recorder.run_id, reclaimed.until, total.bytes, total.files))
    points = points[-max(1, int(ctx.options.get("history", 30))):]
    log_table(recorder, history_frame(points), "history")
    shown = chart_rows(rows, int(ctx.options.get("chart_rows", 20)))
    if total.files and shown:
        title = f"Sandbox usage against quotas, {day:%Y-%m-%d}" if any(row.status for row in rows) else \
            f"Sandbox usage (no quotas set), {day:%Y-%m-%d}"
        recorder.log_figure(usage_chart(shown, title), "figures/usage_vs_limits.png")
    ctx.check_stop()
    if len(points) > 1 or total.files:
        recorder.log_figure(history_chart(points, total, f"Sandbox total usage, last {len(points)} reports"),
                            "figures/total_usage.png")


REPORT_JOB = HousekeepingJob(
    "report", report, every="1d", own_process=True, options={"history": 30, "chart_rows": 20, "refresh": False},
    misfire_grace=3600,
    description="logs a usage report (usage against quotas, violations, reclaimed bytes, charts) to MLflow")
