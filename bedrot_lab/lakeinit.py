"""Creating a lake, or adopting an existing one: folders, settings file, store, specs, sample data."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    CONFIG_NAME,
    DEFAULT_CONFIG,
    ZONES,
    Settings,
    load_settings,
    settings_from,
)
from .errors import UsageError
from .fsutil import atomic_write

#: zone key -> the unnumbered folder names of BEDROT's older lake, found when the numbered one is missing
OLDER_ZONE_NAMES: dict[str, tuple[str, ...]] = {
    "landing": ("landing",), "raw": ("raw",), "staging": ("staging",), "curated": ("curated",),
    "archive": ("archive",),
}
#: what ``init --sample`` wrote (in the lake's state folder), so that a second ``--sample`` knows its own files
SAMPLE_MANIFEST = "sample.json"


class SampleRefused(UsageError):
    """``--sample`` in a lake that already holds files where the sample would write."""


@dataclass
class InitReport:
    """What ``init`` found, created, and left as it was."""

    root: Path
    created: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    #: zone -> (its folder, what found it: "folder" or the environment variable), for a lake adopted
    found: dict[str, tuple[Path, str]] = field(default_factory=dict)
    #: the specs that come with bedrot-lab, written into the lake (also in ``created``)
    specs: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "created": [str(p) for p in self.created],
                "existing": [str(p) for p in self.existing],
                "found": {zone: {"path": str(path), "by": by} for zone, (path, by) in self.found.items()}}


def create_lake(
    path: Path,
    *,
    sample: bool = False,
    seed: int = 7,
    scale: int | None = None,
    progress: Callable[[str], None] | None = None,
    env: Mapping[str, str] = os.environ,
) -> InitReport:
    """Lay out a lake at ``path``, or adopt the lake that is there: zone folders already
    there (or named by LANDING_ZONE ... SANDBOX_ZONE) go into a new ``bedrot-lab.toml``,
    only what is missing is created, nothing is moved or overwritten. Then the MLflow
    store (one process, under a lock), the specs that come with bedrot-lab, and sample
    data if asked, which is refused (:class:`SampleRefused`) before anything is written
    when files of the lake's own are where the sample would write."""
    root = path.expanduser().resolve()
    report = InitReport(root)
    config = root / CONFIG_NAME
    text = None
    if config.is_file():
        settings = load_settings(root, env=env)
    else:
        report.found = find_zones(root, env)
        text = config_text(root.name, {zone: folder for zone, (folder, _) in report.found.items()}, root)
        settings = settings_from(root, tomllib.loads(text), config, env)
    if sample:
        _refuse_real_files(settings)

    _make(root, report)
    if text is None:
        report.existing.append(config)
    else:
        config.write_text(text)
        report.created.append(config)
    folders = [*settings.zones.values(), settings.zone("sandbox") / "users", *settings.plugin_paths,
               settings.specs_dir, settings.state_dir, settings.artifact_root]
    for folder in folders:
        if folder is not None:
            _make(folder, report)
    _ignore_state(settings.state_dir, report)
    if settings.specs_dir is not None:
        _write_specs(settings.specs_dir, report)

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
        _remember_sample(settings, result.written)
        report.created.extend(result.written)
        report.existing.extend(result.skipped)
    return report


def find_zones(root: Path, env: Mapping[str, str] = os.environ) -> dict[str, tuple[Path, str]]:
    """The zone folders an existing lake at ``root`` already has: the folder the lake's
    historic environment variable names (LANDING_ZONE ...; relative to ``root``), else
    ``1_landing`` ... ``sandbox``, else the older lake's ``landing`` ... ``archive``."""
    found = {}
    for zone, (default, variable) in ZONES.items():
        named = env.get(variable)
        if named and (folder := _under(root, named)).is_dir():
            found[zone] = (folder, variable)
            continue
        for name in (default, *OLDER_ZONE_NAMES.get(zone, ())):
            if (root / name).is_dir():
                found[zone] = (root / name, "folder")
                break
    return found


def config_text(name: str, zones: Mapping[str, Path], root: Path) -> str:
    """A new ``bedrot-lab.toml``: the defaults, with the ``[zones]`` found in ``zones``
    (relative to ``root`` when inside it)."""
    text = DEFAULT_CONFIG.format(name=name)
    for zone, folder in zones.items():
        default = ZONES[zone][0]
        shown = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else str(folder)
        text = text.replace(f'\n{zone} = "{default}"\n', f"\n{zone} = {json.dumps(shown)}  # found by init\n", 1)
    return text


def _under(root: Path, folder: str) -> Path:
    path = Path(folder).expanduser()
    return path if path.is_absolute() else root / path


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


def _write_specs(specs_dir: Path, report: InitReport) -> None:
    """Copy the specs that come with bedrot-lab into ``specs_dir``; a file of the same name there is kept."""
    from .specs import packaged_specs

    for name, source in packaged_specs().items():
        target = specs_dir / name
        try:
            with target.open("xb") as out:
                out.write(source.read_bytes())
        except FileExistsError:
            report.existing.append(target)
        else:
            report.created.append(target)
            report.specs.append(target)


def _refuse_real_files(settings: Settings) -> None:
    """Raise :class:`SampleRefused` naming the files that are where the sample would write
    and that an earlier ``init --sample`` did not write (or that changed since)."""
    from .sample import sample_paths

    written = _sample_manifest(settings)
    real = [path for path in sample_paths(settings)
            if path.exists() and written.get(_key(path, settings.root)) != _stamp(path)]
    if real:
        shown = ", ".join(_key(path, settings.root) for path in real)
        raise SampleRefused(f"--sample would write over files already in the lake: {shown}; "
                            "sample data goes into a folder of its own: bedrot-lab init NEW_FOLDER --sample")


def _remember_sample(settings: Settings, written: list[Path]) -> None:
    manifest = settings.state_dir / SAMPLE_MANIFEST
    files = {**_sample_manifest(settings), **{_key(path, settings.root): _stamp(path) for path in written}}
    atomic_write(manifest, (json.dumps({"files": files}, indent=1) + "\n").encode())


def _sample_manifest(settings: Settings) -> dict[str, list[int]]:
    try:
        return json.loads((settings.state_dir / SAMPLE_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _stamp(path: Path) -> list[int]:
    """Size and modification time: a sample file the user has since changed is theirs."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]
