"""``bedrot-lab init``: lay out a lake or adopt an existing one, optionally with synthetic sample data."""

from __future__ import annotations

from pathlib import Path

import click

from .output import echo_json


@click.command()
@click.argument("path", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--sample", is_flag=True, help="Write a synthetic lake in the shapes of BEDROT's real data sets "
              "(refused, exit code 2, where the lake has files of its own in their place).")
@click.option("--seed", default=7, show_default=True, help="Seed of the synthetic data (same seed, same bytes).")
@click.option("--scale", type=click.IntRange(min=1), metavar="ROWS",
              help="Size the files the ETL experiments read, for benchmarks (implies --sample): the DistroKid "
              "statement, 4_curated/ and 3_staging/dk_bank_details.csv, gets ROWS rows; "
              "3_staging/metaads/metaads_staging_latest.csv one copy of the Meta Ads ad sets per 4,000 ROWS "
              "(about ROWS/130 ads). The daily streams keep their 365 days.")
@click.option("--json", "as_json", is_flag=True, help="Print what was found, created and already there as JSON.")
def init(path: Path, sample: bool, seed: int, scale: int | None, as_json: bool) -> None:
    """Create a lake at PATH, or adopt the existing lake there.

    A lake is its zones (1_landing ... 5_archive, sandbox), sandbox/users/,
    plugins/, experiments/ (with the specs that come with bedrot-lab),
    bedrot-lab.toml and the MLflow store. In an existing lake without a
    bedrot-lab.toml, the zone folders already there (also where LANDING_ZONE ...
    SANDBOX_ZONE point) are written into a new bedrot-lab.toml. Only what is
    missing is created: nothing is moved or overwritten, and what was already
    there is listed.
    """
    from ..lakeinit import create_lake

    progress = None if as_json else (lambda message: click.echo(f"  {message}", err=True))
    report = create_lake(path, sample=sample or scale is not None, seed=seed, scale=scale, progress=progress)
    if as_json:
        echo_json(report.to_dict())
        return
    root = report.root
    for zone, (folder, by) in report.found.items():
        click.echo(f"found    {_relative(folder, root)}  (zone {zone}" + (f", from {by})" if by != "folder" else ")"))
    for item in report.created:
        if item not in report.specs:
            click.echo(f"created  {_relative(item, root)}")
        elif item == report.specs[0]:
            click.echo(f"created  {_relative(item.parent, root)}/*.toml  "
                       f"({len(report.specs)} specs that come with bedrot-lab)")
    if report.existing:
        click.echo(f"left as it was ({len(report.existing)}): " + ", ".join(_relative(p, root) for p in report.existing))
    click.echo(f"\nlake ready at {root}\nnext:  cd {root} && bedrot-lab experiments list")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
