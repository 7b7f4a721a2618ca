"""Where sandbox violations go by default: the log and ``violations.jsonl``, the built-in ``handle_violation``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from bedrot_lab import hookimpl
from bedrot_lab.locks import file_lock

if TYPE_CHECKING:
    from bedrot_lab.config import Settings
    from bedrot_lab.sandbox.violations import Transition

log = logging.getLogger("bedrot_lab.sandbox.violations")

JSONL_NAME = "violations.jsonl"


def log_level(transition: Transition) -> int:
    """WARNING for a hard violation that is new or escalated, INFO for the rest."""
    alarming = transition.kind in ("new", "escalated") and transition.violation.severity == "hard"
    return logging.WARNING if alarming else logging.INFO


def append_jsonl(path: Path, transition: Transition, settings: Settings) -> None:
    """Append ``transition`` as one JSON line to ``path``, under a lock so that lines
    from processes writing at once never interleave."""
    line = json.dumps({"lake": settings.name, **transition.to_dict()})  # ASCII: names need not be UTF-8
    with file_lock(path.with_name(path.name + ".lock")), path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@hookimpl(trylast=True)
def handle_violation(transition, settings):
    log.log(log_level(transition), "%s", transition.describe())
    append_jsonl(settings.state_dir / JSONL_NAME, transition, settings)
