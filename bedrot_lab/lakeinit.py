"""Creating a lake: its folders, its settings file, its tracking store, and sample data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import CONFIG_NAME, DEFAULT_CONFIG, load_settings


@dataclass
class InitReport:
    """What ``init`` created and what it found already there."""

    root: Path
    created: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "created": [str(p) for p in self.created],
                "existing": [str(p) for p in self.existing]}


def create_lake(
    path: Path,
    *,
    sample: bool = False,
    seed: int = 7,
    scale: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> InitReport:
    """Lay out a lake at ``path`` without overwriting anything, create its MLflow
    store (one process, under a lock), and write sample data if asked."""
    root = path.expanduser().resolve()
    report = InitReport(root)
    _make(root, report)
    config = root / CONFIG_NAME
    if config.exists():
        report.existing.append(config)
    else:
        config.write_text(DEFAULT_CONFIG.format(name=root.name))
        report.created.append(config)

    settings = load_settings(root)
    folders = [*settings.zones.values(), settings.zone("sandbox") / "users", *settings.plugin_paths,
               settings.specs_dir, settings.state_dir, settings.artifact_root]
    for folder in folders:
        if folder is not None:
            _make(folder, report)
    _ignore_state(settings.state_dir, report)

    from .tracking import open_store, sqlite_path

    database = sqlite_path(settings.tracking_uri)
    if database is None:
        if progress:
            progress(f"opening the tracking store {settings.tracking_uri_shown}")
    else:
        database = database.resolve()
        new = not database.exists()
        (report.created if new else report.existing).append(database)
        if progress and new:
            shown = database.relative_to(root) if database.is_relative_to(root) else database
            progress(f"creating the tracking store {shown}")
    open_store(settings)

    if sample:
        from .sample import write_sample

        result = write_sample(settings, seed=seed, scale=scale, progress=progress)
        report.created.extend(result.written)
        report.existing.extend(result.skipped)
    return report


def _make(folder: Path, report: InitReport) -> None:
    if folder.is_dir():
        report.existing.append(folder)
    else:
        folder.mkdir(parents=True)
        report.created.append(folder)


def _ignore_state(state_dir: Path, report: InitReport) -> None:
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
        report.created.append(ignore)
