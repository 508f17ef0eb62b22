"""The plugin's commands, imported only when one of them runs (registered by import path)."""

from __future__ import annotations

import click


@click.command("hello")
@click.argument("name", default="world")
def hello(name: str) -> None:
    """Say hello (a command contributed by a site plugin)."""
    click.echo(f"hello {name} from balsam-testplugin")
