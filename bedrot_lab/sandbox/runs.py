"""A run and the sandbox: the quota gate before it starts, its workdir's bytes when it ends, and
which workdirs belong to runs still RUNNING (left alone by clean)."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..fsutil import folder_bytes
from .index import DB_NAME, UsageIndex
from .rules import EffectiveRules, QuotaRule, effective_rules
from .violation import Violation

if TYPE_CHECKING:
    from ..config import Settings
    from ..lab import Lab

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuotaGate:
    """The quota violations of the user and project a run is about to write to."""

    violations: tuple[Violation, ...] = ()

    @property
    def hard(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "hard"]

    @property
    def soft(self) -> list[Violation]:
        return [v for v in self.violations if v.severity == "soft"]

    def refusal(self) -> str:
        """Why a run is refused: usage, limit and what to do."""
        return (f"{self.hard[0].detail}; free space (see bedrot-lab sandbox usage --by project) "
                f"or raise the limit in [sandbox.quotas]")

    def tag(self) -> str:
        """The ``bedrot.sandbox.quota`` tag of a run that starts over a soft limit."""
        return "; ".join(v.detail for v in self.soft)


def quota_gate(settings: Settings, project: str, *, rules: EffectiveRules | None = None,
               reconcile: bool = True) -> QuotaGate:
    """Check ``settings.user``'s workspace and its ``project`` against the effective quota
    rule (of ``rules``, else the built-in one of ``[sandbox]``).

    The built-in rule costs nothing when neither has a limit. Otherwise the user's
    folder is reconciled into the usage index first (a walk of that folder alone;
    unless ``reconcile`` is False), so the answer is current even when no watcher
    runs. A plugin's quota rule is evaluated whole and its violations of this
    user and project kept.
    """
    rule = (rules or effective_rules(settings)).named("quota")
    user = settings.user
    scopes = [("user", user, None), ("project", f"{user}/{project}", project)]
    if isinstance(rule, QuotaRule):
        scopes = [(scope, name, part) for scope, name, part in scopes if rule.quotas.limits(scope, name)]
    if rule is None or not scopes or not settings.zone("sandbox").is_dir():
        return QuotaGate()
    found: list[Violation] = []
    with UsageIndex.for_settings(settings) as index:
        if reconcile:
            index.reconcile(under=f"users/{user}")
        if isinstance(rule, QuotaRule):
            for scope, name, part in scopes:
                nbytes, nfiles = index.owner_totals(user, part)
                found.extend(rule.check(scope, name, nbytes, nfiles))
        else:
            subjects = {f"{scope}:{name}" for scope, name, _ in scopes}
            found.extend(v for v in rule.evaluate(index, time.time()) if v.subject in subjects)
    return QuotaGate(tuple(found))


def workdir_bytes(settings: Settings, workdir: Path, run_id: str) -> int:
    """Bytes under run ``run_id``'s workdir (links counted as themselves, never followed);
    0 when the run made none. When the lake has a usage index, the workdir is
    reconciled into it and its total read from there (so ``sandbox usage --by run``
    lists the run at once); otherwise the folder is walked."""
    if not workdir.is_dir():
        return 0
    if (settings.state_dir / DB_NAME).exists():
        try:
            relative = workdir.relative_to(settings.zone("sandbox")).as_posix()
            with UsageIndex.for_settings(settings) as index:
                index.reconcile(under=relative)
                return index.run_bytes(run_id)
        except (ValueError, OSError, sqlite3.Error) as exc:
            log.debug("usage index not updated for %s: %s", workdir, exc)
    return folder_bytes(workdir)


def running_runs(lab: Lab, run_ids: Iterable[str]) -> set[str]:
    """The runs among ``run_ids`` that MLflow says are still RUNNING (MLflow is opened
    only when there are some to ask about)."""
    run_ids = set(run_ids)
    if not run_ids:
        return set()
    from mlflow.exceptions import MlflowException

    client = lab.store.client
    running = set()
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status == "RUNNING":
                running.add(run_id)
        except MlflowException:  # not a run of this store: nothing runs there
            pass
    return running
