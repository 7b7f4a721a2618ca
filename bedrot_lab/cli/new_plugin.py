"""``bedrot-lab new-plugin``: a new plugin, as an installable package or a file of the lake's plugins/ folder."""

from __future__ import annotations

import click


@click.command("new-plugin")
@click.argument("name")
def new_plugin(name: str) -> None:
    """Create a new plugin NAME with one example experiment (work in progress)."""
    raise click.ClickException("new-plugin is not ready yet")
