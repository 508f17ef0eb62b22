"""A third-party site plugin, installed from its own package like a site's would be.

It adds ``balsam hello`` and a ``select_tasks`` policy (smallest tasks first). The policy is
active only when ``BALSAM_TESTPLUGIN_POLICY=smallest-first``, so installing this package does not
change the default behaviour the other tests rely on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from balsam import hookimpl


@click.command("hello")
@click.argument("name", default="world")
def hello(name: str) -> None:
    """Say hello (a command contributed by a site plugin)."""
    click.echo(f"hello {name} from balsam-testplugin")


@hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    register(hello)


@hookimpl
def select_tasks(candidates: Sequence[Any], resources: Any, launcher: Any) -> list[Any] | None:
    if os.environ.get("BALSAM_TESTPLUGIN_POLICY") != "smallest-first":
        return None
    return sorted(candidates, key=lambda t: (t.num_nodes, t.wall_time_minutes, t.id))
