"""A third-party site plugin, installed from its own package like a site's would be.

It adds ``balsam hello`` (registered by import path: its module is imported only when it runs),
``balsam goodbye`` (registered the older way, as a click command) and a ``select_tasks`` policy
(smallest tasks first). The policy is
active only when ``BALSAM_TESTPLUGIN_POLICY=smallest-first``, so installing this package does not
change the default behaviour the other tests rely on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import click

from balsam import hookimpl


@click.command("goodbye")
def goodbye() -> None:
    """Say goodbye (registered as a click command, as plugins before balsam-core 0.1.2 did)."""
    click.echo("goodbye from balsam-testplugin")


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("hello", "balsam_testplugin.commands:hello", help="Say hello (a site plugin).")
    register(goodbye)


@hookimpl
def select_tasks(candidates: Sequence[Any], resources: Any, launcher: Any) -> list[Any] | None:
    if os.environ.get("BALSAM_TESTPLUGIN_POLICY") != "smallest-first":
        return None
    return sorted(candidates, key=lambda t: (t.num_nodes, t.wall_time_minutes, t.id))
