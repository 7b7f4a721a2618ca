"""Registering run outputs in the MLflow Model Registry and promoting them into 4_curated/.

A promotion never leaves a half-written or unexplained file in the curated zone:
the bytes are copied and hashed in one pass into a temporary file beside the
target, checked against the version's digest, its contract and every plugin's
``validate_promotion``; the file it replaces is archived (hard link, or a
verified copy) before an atomic rename; an intent journal in the lake's state
folder lets the next promotion finish a promotion that was killed half way, and
the lineage only records what happened.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import BedrotLabError
from .fsutil import atomic_write, copy_and_hash, fsync_folder
from .locks import LockBusy, owned_lock

if TYPE_CHECKING:
    from .lab import Lab

CANDIDATE, CURATED = "candidate", "curated"
LINEAGE_DIR = "_lineage"


class PromotionError(BedrotLabError):
    """A promotion that cannot go ahead; the message says why and what to do."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass
class PromotionResult:
    """What a promote or rollback did."""

    name: str
    version: str
    curated_path: str
    status: str  # promote, rollback, already current, dry run
    run_id: str = ""
    sha256: str = ""
    replaced: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    recovered: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# -- paths ----------------------------------------------------------------------------


def normal_path(curated_path: str) -> str:
    """One spelling per file: ``demo/./table.parquet`` and ``demo//table.parquet`` are ``demo/table.parquet``."""
    return PurePosixPath(curated_path).as_posix() if curated_path else curated_path


def curated_target(lab: Lab, curated_path: str) -> Path:
    """The file ``curated_path`` names inside 4_curated/, refusing absolute paths, ``..``
    and anything that resolves (through links too) outside the curated zone."""
    pure = PurePosixPath(curated_path)
    if not curated_path or pure.is_absolute() or Path(curated_path).is_absolute():
        raise PromotionError(f"curated path {curated_path!r} must be relative to the curated zone")
    if ".." in pure.parts or any(part.startswith("_") for part in pure.parts[:1]):
        raise PromotionError(f"curated path {curated_path!r} may not contain '..' or start with '_'")
    zone = lab.settings.zone("curated").resolve()
    target = zone / pure
    resolved = target.resolve()
    if resolved != zone and zone not in resolved.parents:
        raise PromotionError(f"curated path {curated_path!r} resolves to {resolved}, outside {zone}")
    return target


def default_model_name(curated_path: str) -> str:
    """``metaads/campaign_summary.csv`` -> ``curated.metaads.campaign_summary``."""
    stem = str(PurePosixPath(curated_path).with_suffix(""))
    return "curated." + re.sub(r"[^A-Za-z0-9_.-]+", ".", stem).strip(".")


# -- register -------------------------------------------------------------------------


def register(lab: Lab, run_id: str, output: str, curated_path: str, name: str | None = None) -> dict[str, Any]:
    """Make output ``output`` of run ``run_id`` a version of registered model ``name``,
    tagged with its curated path, format, schema, rows, digest, plugin and experiment,
    and move alias ``candidate`` to it. Returns the version's fields."""
    from mlflow.exceptions import MlflowException

    client = lab.store.client
    target = curated_target(lab, curated_path)
    curated_path = normal_path(curated_path)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise PromotionError(f"no run {run_id!r} in {lab.settings.tracking_uri_shown}") from None
    if run.info.status != "FINISHED":
        raise PromotionError(f"run {run_id} is {run.info.status}; only FINISHED runs can be registered")
    record = _output_record(client, run_id, output)
    if Path(record["file"]).suffix != target.suffix:
        raise PromotionError(
            f"output {output!r} is {record['format']} but {curated_path!r} ends in {target.suffix or 'nothing'}; "
            f"log it with ctx.log_output(..., format={target.suffix.lstrip('.')!r}) or change the path")
    if _artifact_path(client, run_id, record["file"]) is None and not _artifact_listed(client, run_id, record["file"]):
        raise PromotionError(f"run {run_id} has no artifact {record['file']}; its output was lost")
    name = name or default_model_name(curated_path)
    folder = _registered_folder(lab, run_id, record, curated_path)
    try:
        client.create_registered_model(name, description=_model_description(lab, name, curated_path))
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
        existing = client.search_model_versions(f"name = '{name}'", max_results=1)
        other = existing[0].tags.get("curated_path") if existing else None
        if other and other != curated_path:
            raise PromotionError(f"registered model {name!r} is for {other!r}, not {curated_path!r}; "
                                 "give this one its own --name") from None
    tags = {
        "curated_path": curated_path,
        "format": record["format"],
        "schema": json.dumps(record["schema"]),
        "rows": str(record["rows"]),
        "sha256": record["sha256"],
        "bytes": str(record.get("bytes", "")),
        "output": output,
        "artifact": f"{folder}/{PurePosixPath(record['file']).name}",
        "plugin": run.data.tags.get("bedrot.plugin", ""),
        "experiment": run.data.tags.get("bedrot.experiment", ""),
        "registered_by": lab.settings.user,
    }
    # the folder's own URI, not runs:/...: a server that proxies the run's artifacts cannot
    # resolve a runs:/ source when its UI asks for the version's MLmodel (HTTP 500)
    source = f"{run.info.artifact_uri.rstrip('/')}/{folder}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.update_model_version(name, version.version, description=version_description(lab, version, []))
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return {"name": name, "version": str(version.version), "run_id": run_id, "source": version.source, **tags}


def _output_record(client: Any, run_id: str, output: str) -> dict[str, Any]:
    from .context import artifact_name

    try:
        local = client.download_artifacts(run_id, f"outputs/{artifact_name(output)}.json")
    except Exception:
        names = sorted(k.split(".")[1] for k in client.get_run(run_id).data.tags if k.startswith("output.")
                       and k.endswith(".sha256"))
        raise PromotionError(
            f"run {run_id} has no output {output!r}; its outputs: {', '.join(names) or 'none'}") from None
    return json.loads(Path(local).read_text())


def _artifact_root(client: Any, run_id: str) -> Path | None:
    """The local folder of a run's artifacts when the artifact store is a local folder, else None."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(client.get_run(run_id).info.artifact_uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None


def _artifact_path(client: Any, run_id: str, artifact: str) -> Path | None:
    """The local file of a run artifact when the artifact store is a local folder, else None."""
    root = _artifact_root(client, run_id)
    return root / artifact if root is not None and (root / artifact).is_file() else None


def _artifact_listed(client: Any, run_id: str, artifact: str) -> bool:
    parent = str(PurePosixPath(artifact).parent)
    return any(item.path == artifact for item in client.list_artifacts(run_id, parent))


def _registered_folder(lab: Lab, run_id: str, record: dict[str, Any], curated_path: str) -> str:
    """Put output ``record`` of run ``run_id`` in the run's ``registered/<output>/`` folder,
    beside an ``MLmodel`` file whose signature is the output's schema; return the folder.

    MLflow's registry page shows a version's schema only from an ``MLmodel`` file at
    the version's source, so the source is this folder, not the bare file. A local
    artifact store gets a hard link (no second copy of the data), any other an upload.
    """
    import tempfile

    client = lab.store.client
    file = PurePosixPath(record["file"])
    folder = f"registered/{file.stem}"
    mlmodel = _mlmodel(run_id, folder, record, _not_null_columns(lab, curated_path))
    root = _artifact_root(client, run_id)
    if root is not None:
        (root / folder).mkdir(parents=True, exist_ok=True)
        _link_or_copy(root / record["file"], root / folder / file.name)
        atomic_write(root / folder / "MLmodel", mlmodel.encode())
        return folder
    scratch = lab.settings.state_dir / "downloads"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as local:
        staged = Path(local) / file.stem
        staged.mkdir()
        Path(client.download_artifacts(run_id, record["file"], local)).rename(staged / file.name)
        (staged / "MLmodel").write_text(mlmodel)
        client.log_artifacts(run_id, str(staged), folder)
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    """Make ``target`` hold ``source``'s bytes: a hard link, or a copy where links fail."""
    if target.exists() and os.path.samefile(source, target):
        return
    temporary = target.with_name(f".{target.name}.{os.getpid()}-{time.monotonic_ns()}.tmp")
    try:
        os.link(source, temporary)
    except OSError:  # a file system without hard links
        copy_and_hash(source, temporary)
    os.replace(temporary, target)


def _mlmodel(run_id: str, folder: str, record: dict[str, Any], not_null: set[str]) -> str:
    """An ``MLmodel`` file for a data set: no model flavor MLflow could load, and the
    columns as the signature's outputs (required where the contract says not null)."""
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    columns = [ColSpec(_column_type(kind), str(column), required=column in not_null)
               for column, kind in record["schema"].items()]
    flavor = {"file": PurePosixPath(record["file"]).name, "format": record["format"], "rows": record["rows"],
              "sha256": record["sha256"], "read_with": "pandas, DuckDB or any reader of the format"}
    signature = ModelSignature(outputs=Schema(columns)) if columns else None
    return Model(artifact_path=folder, run_id=run_id, flavors={"bedrot_data_set": flavor},
                 signature=signature).to_yaml()


#: pandas dtype (as ``ctx.log_output`` records it) -> MLflow column type
_COLUMN_TYPES = {"int8": "integer", "int16": "integer", "int32": "integer", "uint8": "integer",
                 "uint16": "integer", "float32": "float", "float64": "double", "bool": "boolean",
                 "boolean": "boolean"}


def _column_type(dtype: str) -> str:
    kind = dtype.lower()
    if kind.startswith("datetime64"):
        return "datetime"
    if kind in _COLUMN_TYPES:
        return _COLUMN_TYPES[kind]
    return "long" if kind.startswith(("int", "uint")) else "string"


def _not_null_columns(lab: Lab, curated_path: str) -> set[str]:
    from .contracts import contract_for

    try:
        contract = contract_for(lab, curated_path)
    except BedrotLabError:  # a broken contract file is reported by promote, not here
        return set()
    return set(contract.not_null) if contract else set()


# -- what the registry says ----------------------------------------------------------------


def lake_path(lab: Lab, curated_path: str) -> str:
    """``curated_path`` as the lake names it, zone folder first (``4_curated/demo/table.parquet``)."""
    return _in_lake(lab, lab.settings.zone("curated") / curated_path)


def _in_lake(lab: Lab, path: Path) -> str:
    """``path`` relative to the lake root, or absolute when its zone lies outside the lake."""
    try:
        return path.relative_to(lab.settings.root).as_posix()
    except ValueError:
        return str(path)


def _model_description(lab: Lab, name: str, curated_path: str) -> str:
    return (f"Curated data set `{lake_path(lab, curated_path)}`. Each version is a run's output, registered "
            f"by bedrot-lab; `bedrot-lab promote {name}` validates one and writes it there (alias `curated`).\n\n"
            "MLflow's own *Promote model* button is not that: it copies a version into another registered "
            "model and writes nothing to the curated zone.")


def version_description(lab: Lab, version: Any, history: list[dict[str, Any]]) -> str:
    """The markdown MLflow's registry page shows for ``version``: its file in the lake,
    rows, short sha256, source run, who registered it, and, from the curated file's
    lineage ``history``, every promotion, supersession and rollback that concerned it."""
    client = lab.store.client
    tags = version.tags
    run = client.get_run(version.run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    rows = tags.get("rows", "?")
    rows = f"{int(rows):,}" if rows.isdigit() else rows
    events = _events(history, version.name, str(version.version))
    registered = _when(datetime.fromtimestamp(version.creation_timestamp / 1000, UTC))
    lines = [
        f"Data set for `{lake_path(lab, tags['curated_path'])}`: {rows} rows, sha256 `{tags.get('sha256', '')[:12]}`",
        "",
        f"- **Status:** {_status(events)}",
        f"- **Source run:** `{_plain(run.info.run_name)}` in experiment `{_plain(experiment)}` "
        f"(run id `{version.run_id}`), output `{_plain(tags.get('output', ''))}`",
        f"- **Registered:** {registered}" + (f" by {tags['registered_by']}" if tags.get("registered_by") else ""),
        *(f"- **{kind.capitalize()}:** {text}" for kind, _, text in events),
    ]
    return "\n".join(lines)


def _events(history: list[dict[str, Any]], name: str, version: str) -> list[tuple[str, str, str]]:
    """What the curated file's lineage says happened to ``version`` of ``name``, oldest
    first: (kind, when, text), kind one of promoted, put back, superseded, rolled back."""
    events = []
    for before, entry in zip([None, *history], history, strict=False):
        when, who = _when(datetime.fromisoformat(entry["promoted_at"])), entry["promoted_by"]
        if (entry["model"], entry["version"]) == (name, version):
            if entry["action"] == "rollback":
                events.append(("put back", when, f"by a rollback on {when} by {who}"))
            else:
                events.append(("promoted", when, f"{when} by {who}"))
        elif before and (before["model"], before["version"]) == (name, version):
            if entry["action"] == "rollback":
                events.append(("rolled back", when,
                               f"on {when} by {who}; version {entry['version']} was put back in its place"))
            else:
                events.append(("superseded", when, f"by version {entry['version']} on {when}"))
    return events


def _status(events: list[tuple[str, str, str]]) -> str:
    if not events:
        return "registered, not promoted"
    kind, when, text = events[-1]
    if kind in ("promoted", "put back"):
        return f"in the curated zone since {when} (alias `curated`)"
    return f"{kind} {text}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _plain(text: str | None) -> str:
    """``text`` safe inside a markdown code span."""
    return (text or "").replace("`", "'")


def _describe_last_two(lab: Lab, curated_path: str) -> None:
    """Rewrite the descriptions of the versions the newest lineage entry changed: the
    one now in the curated zone and the one it replaced."""
    from mlflow.exceptions import MlflowException

    history = read_lineage(lab, curated_path)
    client = lab.store.client
    for model, number in dict.fromkeys((e["model"], e["version"]) for e in history[-2:]):
        try:
            version = client.get_model_version(model, number)
        except MlflowException:  # deleted from the registry since
            continue
        client.update_model_version(model, number, description=version_description(lab, version, history))


# -- lineage ---------------------------------------------------------------------------


def lineage_file(lab: Lab, curated_path: str) -> Path:
    return lab.settings.zone("curated") / LINEAGE_DIR / f"{curated_path}.json"


def read_lineage(lab: Lab, curated_path: str) -> list[dict[str, Any]]:
    """The promotions of ``curated_path``, oldest first."""
    path = lineage_file(lab, curated_path)
    if not path.is_file():
        return []
    return json.loads(path.read_text())["history"]


def _append_lineage(lab: Lab, curated_path: str, entry: dict[str, Any]) -> None:
    history = read_lineage(lab, curated_path)
    if history and history[-1].get("promotion_id") == entry["promotion_id"]:
        return  # already recorded (a recovery after the lineage was written)
    path = lineage_file(lab, curated_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"curated_path": curated_path, "history": [*history, entry]}, indent=2).encode())


def current_promotions(lab: Lab, name: str | None = None) -> list[dict[str, Any]]:
    """The newest lineage entry of every curated file (or every entry of model ``name``)."""
    root = lab.settings.zone("curated") / LINEAGE_DIR
    rows = []
    for path in sorted(root.rglob("*.json")) if root.is_dir() else []:
        history = json.loads(path.read_text())
        entries = history["history"] if name else history["history"][-1:]
        rows += [{"curated_path": history["curated_path"], **e} for e in entries if not name or e["model"] == name]
    return rows


def history_of(lab: Lab, name: str) -> tuple[str, list[dict[str, Any]]]:
    """The curated path of model ``name`` and its file's whole lineage."""
    for alias in (CURATED, CANDIDATE):
        try:
            curated_path = _version(lab.store.client, name, None, alias).tags["curated_path"]
            return curated_path, read_lineage(lab, curated_path)
        except PromotionError:
            continue
    raise PromotionError(f"registered model {name!r} has no candidate or curated version")


# -- promote ---------------------------------------------------------------------------


def promote(lab: Lab, name: str, *, version: str | None = None, alias: str | None = None,
            dry_run: bool = False, force: bool = False, wait: float = 60.0) -> PromotionResult:
    """Promote a version of registered model ``name`` into the curated zone.

    ``version`` or ``alias`` (default: the ``candidate`` alias) picks the version.
    Any problem (contract, digest, a plugin's veto, a curated file changed behind
    our back without ``force``) raises :class:`PromotionError` and changes nothing.
    """
    chosen = _version(lab.store.client, name, version, alias)
    _refuse_copies(chosen)
    curated_path = _curated_path_of(chosen)
    with _promotion_lock(lab, curated_path, wait):
        recovered = _recover(lab, curated_path)
        result = _promote_locked(lab, chosen, curated_path, dry_run=dry_run, force=force)
    result.recovered = recovered
    if result.status == "promote":
        lab.plugins.hook.after_promotion(result=result, lab=lab)
    return result


def rollback(lab: Lab, name: str, to_version: str | None = None, *, force: bool = False,
             wait: float = 60.0) -> PromotionResult:
    """Put back an earlier promoted version (default: the one before the current),
    from its archived copy when there is one, the same way as :func:`promote`."""
    curated_path = _curated_path_of(_version(lab.store.client, name, None, CURATED))
    with _promotion_lock(lab, curated_path, wait):
        recovered = _recover(lab, curated_path)  # first, so "the one before" is counted from the truth
        lineage = read_lineage(lab, curated_path)
        history = [e for e in lineage if e["model"] == name]
        if not history:
            raise PromotionError(f"{name} has never been promoted; nothing to roll back")
        current = history[-1]["version"]
        promoted = [e["version"] for e in history]
        if to_version is None:
            earlier = [v for v in promoted if v != current]
            if not earlier:
                raise PromotionError(f"{name} has only ever had v{current} in the curated zone; nothing to roll back to")
            to_version = earlier[-1]
        elif str(to_version) not in promoted:
            raise PromotionError(f"{name} v{to_version} was never promoted, so there is nothing to roll back to; "
                                 f"promote it with `bedrot-lab promote {name} --version {to_version}`")
        archived = [e["replaced"]["archived_to"] for e in lineage
                    if e.get("replaced") and e["replaced"].get("version") == str(to_version)]
        root = lab.settings.root
        source = next((root / a for a in reversed(archived) if (root / a).is_file()), None)
        chosen = _version(lab.store.client, name, str(to_version), None)
        result = _promote_locked(lab, chosen, curated_path, force=force, action="rollback", source=source)
    result.recovered = recovered
    if result.status == "rollback":
        lab.plugins.hook.after_promotion(result=result, lab=lab)
    return result


def _refuse_copies(version: Any) -> None:
    """A version whose source is another version (what MLflow's "Promote model" button
    makes) carries the original's tags but is not what its curated file's lineage knows."""
    if not version.source.startswith("models:/"):
        return
    original = version.source.removeprefix("models:/").rsplit("/", 1)
    how = (f"bedrot-lab promote {original[0]} --version {original[1]}" if len(original) == 2
           else "bedrot-lab promote with the original's name")
    raise PromotionError(f"{version.name} v{version.version} is a copy of {version.source} made in MLflow "
                         f"(its \"Promote model\" button), not a registered run output; promote the original: {how}")


def _curated_path_of(version: Any) -> str:
    curated_path = version.tags.get("curated_path")
    if not curated_path:
        raise PromotionError(f"{version.name} v{version.version} has no curated_path tag; "
                             "register it with `bedrot-lab register`")
    return normal_path(curated_path)


def _promote_locked(lab: Lab, chosen: Any, curated_path: str, *, dry_run: bool = False, force: bool = False,
                    action: str = "promote", source: Path | None = None) -> PromotionResult:
    """The promotion itself; the caller holds the file's lock and has recovered its journal."""
    name, tags = chosen.name, chosen.tags
    target = curated_target(lab, curated_path)
    result = PromotionResult(name, str(chosen.version), curated_path, "dry run" if dry_run else action,
                             run_id=chosen.run_id, sha256=tags.get("sha256", ""))
    history = read_lineage(lab, curated_path)
    current = history[-1] if history else None
    on_disk = _file_state(target, current)
    if current and current["version"] == str(chosen.version) and current["model"] == name \
            and on_disk == current["sha256"]:
        result.status = "already current"
        return result
    if current and target.exists() and on_disk != current["sha256"] and not force:
        raise PromotionError(
            f"{target} was changed outside bedrot-lab since its last promotion "
            f"(sha256 {on_disk[:12]}... is not in the lineage); look at it, then use --force to archive it and go on")

    for stale in target.parent.glob(f".{target.name}.promote-*.tmp"):  # left by a killed promotion
        stale.unlink()
    origin = source or _source_file(lab, chosen)
    _checkpoint("downloaded")
    temporary = target.with_name(f".{target.name}.promote-{os.getpid()}.tmp")
    new_folders = [] if dry_run else _make_folders(target.parent)
    try:
        digest, size = copy_and_hash(origin, None if dry_run else temporary)
        problems = []
        if digest != tags.get("sha256"):
            problems.append(f"digest mismatch: the bytes hash to {digest}, the version says {tags.get('sha256')}")
        _checkpoint("temp_written")
        if not problems:
            problems += _validate(lab, name, chosen, origin if dry_run else temporary, curated_path)
        if problems:
            raise PromotionError(f"{name} v{chosen.version} not promoted to {curated_path}:\n  - "
                                 + "\n  - ".join(problems), problems)
        if dry_run:
            return result
        entry = _lineage_entry(lab, name, chosen, digest, size, action)
        archived = _archive(lab, target, curated_path, current, on_disk) if target.exists() else None
        entry["replaced"] = archived
        result.replaced = archived
        _checkpoint("archived")
        _write_journal(lab, curated_path, {"entry": entry, "temporary": str(temporary)})
        os.replace(temporary, target)
        fsync_folder(target.parent)
        _checkpoint("replaced")
        _finish(lab, curated_path, target, entry)
    finally:
        if temporary.exists():
            temporary.unlink()
        if not target.exists():  # refused: leave no empty folders behind either
            for folder in reversed(new_folders):
                with contextlib.suppress(OSError):  # another promotion may be filling it
                    folder.rmdir()
    return result


# -- steps -----------------------------------------------------------------------------


def _version(client: Any, name: str, version: str | None, alias: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if version is not None:
            return client.get_model_version(name, str(version))
        return client.get_model_version_by_alias(name, alias or CANDIDATE)
    except MlflowException:
        what = f"version {version}" if version is not None else f"alias {alias or CANDIDATE!r}"
        raise PromotionError(f"registered model {name!r} has no {what}; see `bedrot-lab promotions list`") from None


def _source_file(lab: Lab, version: Any) -> Path:
    """The version's bytes: the run's artifact file when the store is local, else a download."""
    client = lab.store.client
    # versions registered before the registered/<output>/ folders have the file itself as their source
    artifact = version.tags.get("artifact") or version.source.split(f"runs:/{version.run_id}/", 1)[-1]
    local = _artifact_path(client, version.run_id, artifact)
    if local is not None:
        return local
    scratch = lab.settings.state_dir / "downloads"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(version.run_id, artifact, str(scratch)))
    except Exception as exc:
        raise PromotionError(f"the source of {version.name} v{version.version} ({version.source}) "
                             f"cannot be read: {exc}") from None


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def _validate(lab: Lab, name: str, version: Any, path: Path, curated_path: str) -> list[str]:
    from .contracts import DataView, contract_for

    problems = []
    contract = contract_for(lab, curated_path)
    if contract is not None:
        try:
            view = DataView(path, version.tags.get("format", "parquet"), contract)
            problems += [f"contract ({contract.source}): {p}" for p in contract.check(view)]
        except Exception as exc:
            problems.append(f"contract ({contract.source}): the file cannot be read: {exc}")
    for vetoes in lab.plugins.hook.validate_promotion(
            name=name, version=version.version, curated_path=curated_path, path=path, tags=dict(version.tags)):
        problems += [f"veto: {reason}" for reason in (vetoes or [])]
    return problems


def _lineage_entry(lab: Lab, name: str, version: Any, digest: str, size: int, action: str) -> dict[str, Any]:
    run = lab.store.client.get_run(version.run_id)
    inputs = [{"name": d.dataset.name, "source": d.dataset.source,
               "sha256": next((t.value for t in d.tags if t.key == "sha256"), d.dataset.digest)}
              for d in run.inputs.dataset_inputs]
    return {
        "promotion_id": f"{int(time.time() * 1000)}-{os.getpid()}",
        "action": action,
        "model": name,
        "version": str(version.version),
        "run_id": version.run_id,
        "experiment": run.data.tags.get("bedrot.experiment", ""),
        "params": run.data.params,
        "inputs": inputs,
        "sha256": digest,
        "bytes": size,
        "rows": version.tags.get("rows"),
        "promoted_by": lab.settings.user,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _file_state(target: Path, current: dict[str, Any] | None) -> str | None:
    """The sha256 of the curated file now; trusted from the lineage while size, mtime
    and inode are those recorded, so an unchanged file is not hashed again."""
    if not target.exists():
        return None
    stat = target.stat()
    if current and current.get("stat") == [stat.st_size, stat.st_mtime_ns, stat.st_ino]:
        return current["sha256"]
    return copy_and_hash(target, None)[0]


def _archive(lab: Lab, target: Path, curated_path: str, current: dict[str, Any] | None,
             on_disk: str | None) -> dict[str, Any]:
    """Keep the file about to be replaced under 5_archive/curated/<path>/<time>-v<version>.<ext>."""
    known = current is not None and current["sha256"] == on_disk
    label = f"v{current['version']}" if known else "unknown"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = lab.settings.zone("archive") / "curated" / curated_path
    folder.mkdir(parents=True, exist_ok=True)
    archived = folder / f"{stamp}-{label}{target.suffix}"
    try:
        os.link(target, archived)
    except OSError:  # another file system: a verified copy
        temporary = archived.with_name(f".{archived.name}.tmp")
        copied, _ = copy_and_hash(target, temporary)
        if copied != on_disk:
            temporary.unlink()
            raise PromotionError(f"archiving {target} failed: the copy does not match") from None
        os.replace(temporary, archived)
    fsync_folder(folder)
    return {"version": current["version"] if known else None, "sha256": on_disk,
            "archived_to": _in_lake(lab, archived)}


def _finish(lab: Lab, curated_path: str, target: Path, entry: dict[str, Any]) -> None:
    """After the rename: lineage, aliases and tags, then drop the journal."""
    stat = target.stat()
    entry["stat"] = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    _append_lineage(lab, curated_path, entry)
    client = lab.store.client
    client.set_registered_model_alias(entry["model"], CURATED, entry["version"])
    client.set_model_version_tag(entry["model"], entry["version"], "promoted_at", entry["promoted_at"])
    client.set_model_version_tag(entry["model"], entry["version"], "promoted_by", entry["promoted_by"])
    _describe_last_two(lab, curated_path)
    _journal(lab, curated_path).unlink(missing_ok=True)


def _recover(lab: Lab, curated_path: str) -> str:
    """Finish or forget a promotion of ``curated_path`` that was killed half way; says which, or ''."""
    journal = _journal(lab, curated_path)
    if not journal.is_file():
        return ""
    pending = json.loads(journal.read_text())
    entry = pending["entry"]
    target = curated_target(lab, curated_path)
    Path(pending["temporary"]).unlink(missing_ok=True)
    if target.exists() and copy_and_hash(target, None)[0] == entry["sha256"]:
        _finish(lab, curated_path, target, entry)
        return f"finished the interrupted promotion of {entry['model']} v{entry['version']}"
    journal.unlink()
    return f"discarded the interrupted promotion of {entry['model']} v{entry['version']} (the file was not replaced)"


def _journal(lab: Lab, curated_path: str) -> Path:
    return lab.settings.state_dir / "promotions" / f"{_slug(curated_path)}.pending.json"


def _write_journal(lab: Lab, curated_path: str, data: dict[str, Any]) -> None:
    path = _journal(lab, curated_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data).encode())


def _slug(curated_path: str) -> str:
    """A file name for ``curated_path`` that no other path shares."""
    from urllib.parse import quote

    return quote(curated_path, safe="")


@contextmanager
def _promotion_lock(lab: Lab, curated_path: str, wait: float) -> Iterator[None]:
    """One promotion of a curated file at a time; the others wait up to ``wait`` seconds."""
    path = lab.settings.state_dir / "locks" / f"promote-{_slug(curated_path)}.lock"
    try:
        with owned_lock(path, getpass.getuser(), wait):
            yield
    except LockBusy as busy:
        raise PromotionError(f"another promotion of {curated_path} is running ({busy.holder}); "
                             "try again when it ends") from None


def _checkpoint(step: str) -> None:
    """Crash here when ``BEDROT_LAB_CRASH_AT`` names this step: the fault-injection
    tests kill a promotion at each step to prove it never leaves a mixed result."""
    if os.environ.get("BEDROT_LAB_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


