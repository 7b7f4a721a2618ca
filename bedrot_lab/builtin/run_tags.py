"""Who, where and at which commit a run happened: the built-in ``run_tags``."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from bedrot_lab import hookimpl
from bedrot_lab.tracking import INTERNAL


@functools.lru_cache(maxsize=8)
def git_commit(folder: Path) -> str | None:
    """The HEAD commit of the git work tree holding ``folder``, or None."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


@hookimpl(trylast=True)
def run_tags(settings):
    # the host is among every run's process tags (bedrot_lab.tracking.process_tags)
    tags = {
        "mlflow.user": settings.user,
        "bedrot.user": settings.user,
        INTERNAL + "lake": str(settings.root),
    }
    commit = git_commit(settings.root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags
