"""The sandbox as a built-in plugin: its ``[sandbox]`` table, the quota gate before a run,
and a run's workdir bytes when it ends. The rest of the sandbox is imported only when used."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bedrot_lab import hookimpl

if TYPE_CHECKING:
    from bedrot_lab import Experiment, Lab, RunContext

log = logging.getLogger("bedrot_lab.sandbox")

QUOTA_TAG = "bedrot.sandbox.quota"


@hookimpl
def register_settings(register: Callable[..., None]) -> None:
    register("sandbox", check_table)


def check_table(values: Mapping[str, Any], path: Path | None) -> None:
    """Parse ``[sandbox]`` as the rules will, so a mistake is named by every command."""
    from .settings import SandboxRules

    SandboxRules.from_table(values, path)


@hookimpl
def validate_run(experiment: Experiment, lab: Lab) -> list[str]:
    """Refuse a run whose user or project is over a hard quota of the effective quota rule
    (after a reconcile of the user's folder, so the answer is current without a watcher)."""
    from .rules import effective_rules
    from .runs import quota_gate

    gate = quota_gate(lab.settings, experiment.name, rules=effective_rules(lab.settings, lab.plugins.hook))
    return [gate.refusal()] if gate.hard else []


@hookimpl
def before_run(ctx: RunContext) -> None:
    """Tag (and warn about) a run that starts over a soft quota. ``validate_run`` has just
    reconciled the user's folder, so the index is read as it is. Never fails the run."""
    from .rules import effective_rules
    from .runs import quota_gate

    try:
        gate = quota_gate(ctx.settings, ctx.experiment.name, reconcile=False,
                          rules=effective_rules(ctx.settings, ctx.lab.plugins.hook))
    except Exception as exc:
        log.warning("soft quota not checked: %s", exc)
        return
    if gate.soft:
        log.warning("over a soft sandbox quota: %s", gate.tag())
        ctx.set_tag(QUOTA_TAG, gate.tag())


@hookimpl
def housekeeping_jobs(register: Callable[..., None]) -> None:
    from .jobs import JOBS

    for job in JOBS:
        register(job)


@hookimpl
def on_run_end(ctx: Any) -> None:
    """Log ``run.sandbox_bytes``: what the run's workdir holds at its end (0 without one)."""
    from .runs import workdir_bytes

    ctx.recorder.log_metrics({"run.sandbox_bytes": workdir_bytes(ctx.settings, ctx.workdir_path, ctx.run_id)})
