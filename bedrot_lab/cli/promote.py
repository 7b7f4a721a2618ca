"""``bedrot-lab register / promote / rollback / promotions``: run outputs into the curated zone."""

from __future__ import annotations

import shutil
import textwrap

import click

from . import CliError
from .output import echo_json, echo_table


def _promotion_errors():
    from ..promotion import PromotionError

    return PromotionError


@click.command()
@click.argument("run_id")
@click.argument("output")
@click.option("--as", "curated_path", required=True, metavar="CURATED_PATH",
              help="Where it goes, relative to 4_curated/ (e.g. dk_bank_details.csv).")
@click.option("--name", help="Registered model name (default: curated.<path>).")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@click.pass_obj
def register(state, run_id: str, output: str, curated_path: str, name: str | None, as_json: bool) -> None:
    """Register OUTPUT of run RUN_ID as a model version for CURATED_PATH.

    RUN_ID may be any unique prefix of a run id, of 6 characters or more. The version's
    tags record the curated path, format, schema, rows and sha256; the alias `candidate`
    moves to it. Only FINISHED runs can be registered.
    """
    from ..promotion import lake_path
    from ..promotion import register as register_output
    from .runs import find_run

    run_id = find_run(state.lab.store.client, run_id, state.lab.settings.tracking_uri_shown).info.run_id
    try:
        version = register_output(state.lab, run_id, output, curated_path, name)
    except _promotion_errors() as exc:
        raise CliError(str(exc)) from None
    if as_json:
        echo_json(version)
        return
    click.echo(f"registered {version['name']} v{version['version']} ({version['rows']} rows, "
               f"sha256 {version['sha256'][:12]}...) for {lake_path(state.lab, version['curated_path'])}; "
               f"alias candidate -> v{version['version']}")
    click.echo(f"next:  bedrot-lab promote {version['name']} --dry-run")


@click.command()
@click.argument("name")
@click.option("--version", "version", help="Version number to promote.")
@click.option("--alias", help="Alias of the version to promote (default: candidate).")
@click.option("--dry-run", is_flag=True, help="Check everything, change nothing.")
@click.option("--force", is_flag=True, help="Archive a curated file changed outside bedrot-lab, then go on.")
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for another promotion of the same file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def promote(state, name: str, version: str | None, alias: str | None, dry_run: bool, force: bool,
            wait: float, as_json: bool) -> None:
    """Promote a registered version of NAME into the curated zone.

    Validated against its contract and every plugin's veto, digest-checked,
    written atomically; the replaced file is archived under 5_archive/curated/,
    the lineage under 4_curated/_lineage/ records it, alias `curated` moves.
    Exit 1 with every reason when anything is wrong; nothing changes then.
    """
    from ..promotion import promote as promote_version

    if version and alias:
        raise CliError("give --version or --alias, not both", exit_code=2)
    _report(state.lab, lambda: promote_version(state.lab, name, version=version, alias=alias, dry_run=dry_run,
                                               force=force, wait=wait), as_json)


@click.command()
@click.argument("name")
@click.option("--to-version", help="Version to restore (default: the one before the current).")
@click.option("--force", is_flag=True, help="Archive a curated file changed outside bedrot-lab, then go on.")
@click.option("--wait", default=60.0, show_default=True, help="Seconds to wait for another promotion of the same file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rollback(state, name: str, to_version: str | None, force: bool, wait: float, as_json: bool) -> None:
    """Restore an earlier promoted version of NAME.

    The version is validated and written like a promotion."""
    from ..promotion import rollback as rollback_version

    _report(state.lab, lambda: rollback_version(state.lab, name, to_version, force=force, wait=wait), as_json)


def _report(lab, action, as_json: bool) -> None:
    from ..promotion import lake_path

    try:
        result = action()
    except _promotion_errors() as exc:
        if as_json:
            echo_json({"status": "refused", "error": str(exc).splitlines()[0], "problems": exc.problems})
            raise SystemExit(1) from None
        raise CliError(str(exc)) from None
    if as_json:
        echo_json(result.to_dict())
        return
    if result.recovered:
        click.echo(result.recovered)
    where = lake_path(lab, result.curated_path)
    messages = {
        "already current": f"{result.name} v{result.version} is already current in {where}; nothing to do",
        "dry run": f"dry run: {result.name} v{result.version} would be promoted to {where} (all checks pass)",
    }
    verb = "rolled back to" if result.status == "rollback" else "promoted"
    line = messages.get(result.status, f"{verb} {result.name} v{result.version} -> {where}")
    click.echo(line)
    if result.replaced:
        click.echo(f"  replaced file archived as {result.replaced['archived_to']}")


@click.group()
def promotions() -> None:
    """What is in the curated zone, from which run, since when."""


@promotions.command("list")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def promotions_list(state, name: str | None, as_json: bool) -> None:
    """List curated files with their current version (or the promotions of NAME)."""
    from ..promotion import current_promotions, lake_path

    rows = current_promotions(state.lab, name)
    if as_json:
        echo_json(rows)
        return
    shown = [{"file": lake_path(state.lab, row["curated_path"]), "model": row["model"], "version": row["version"],
              "action": row["action"], "run": (row.get("run_id") or "")[:12],
              "when": str(row.get("promoted_at") or "")[:16].replace("T", " "), "by": row.get("promoted_by")}
             for row in rows]
    echo_table(shown, ["file", "model", "version", "action", "run", "when", "by"], empty="nothing promoted yet",
               shrink=["model", "file", "by"])


@promotions.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def promotions_show(state, name: str, as_json: bool) -> None:
    """Show the history of NAME's curated file: every promotion and rollback, newest first.

    Paths start with their zone's folder (4_curated/, 5_archive/); lines wrap to the terminal.
    """
    from ..promotion import history_of, lake_path

    try:
        curated_path, history = history_of(state.lab, name)
    except _promotion_errors() as exc:
        raise CliError(str(exc), exit_code=2) from None
    if as_json:
        echo_json({"curated_path": curated_path, "history": history})
        return
    width = shutil.get_terminal_size((100, 24)).columns  # 100 when piped, as other listings
    click.echo(_wrap(f"{name} -> {lake_path(state.lab, curated_path)}", width))
    if not history:
        click.echo(_wrap(f"not promoted yet; check it with: bedrot-lab promote {name} --dry-run", width, "  "))
    for entry in reversed(history):
        click.echo(_wrap(f"{entry['promoted_at']}  {entry['action']} v{entry['version']} by {entry['promoted_by']}",
                         width, "  "))
        rows = f"{entry['rows']} rows, " if entry.get("rows") else ""
        experiment = f" ({entry['experiment']})" if entry.get("experiment") else ""
        click.echo(_wrap(f"run {entry['run_id']}{experiment}, {rows}sha256 {entry['sha256'][:12]}", width, "    "))
        replaced = entry.get("replaced")
        if replaced:
            what = f"v{replaced['version']}" if replaced.get("version") else "a file changed outside bedrot-lab"
            click.echo(_wrap(f"replaced {what}, archived as {replaced['archived_to']}", width, "    "))


class _PathWrapper(textwrap.TextWrapper):
    """A text wrapper that cuts a word too long for a line after a slash where it can."""

    def _handle_long_word(self, reversed_chunks, cur_line, cur_len, width):
        chunk = reversed_chunks[-1]
        room = max(width - cur_len, 1)
        cut = chunk.rfind("/", 0, room) + 1
        if cut == 0 and cur_line:
            return  # no slash fits here: the next line starts with it
        cur_line.append(chunk[:cut or room])
        reversed_chunks[-1] = chunk[cut or room:]


def _wrap(text: str, width: int, indent: str = "") -> str:
    """``text`` in lines of at most ``width`` columns (40 at least), continued under
    ``indent`` and two more spaces."""
    wrapper = _PathWrapper(max(width, 40), initial_indent=indent, subsequent_indent=indent + "  ",
                           break_on_hyphens=False)
    return "\n".join(wrapper.wrap(text))
