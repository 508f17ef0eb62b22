"""balsam-pgserver hook implementations: thin calls into cluster and commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from balsam import hookimpl
from balsam.project import Project
from balsam_pgserver import cluster, commands, roles


@hookimpl
def migration_packages() -> list[str]:
    return ["balsam_pgserver"]


@hookimpl(tryfirst=True)
def on_init(project: Project, options: dict[str, Any]) -> None:
    cluster.create(project, tuple(options.get("migrations", ())))


@hookimpl(tryfirst=True)
def on_add_user(project: Project, username: str, role: str) -> None:
    roles.add_project_user(project, username, role)


@hookimpl(tryfirst=True)
def on_activate(project: Project, user: str) -> dict[str, str]:
    return cluster.activate(project, user)


@hookimpl
def describe_project(project: Project) -> dict[str, Any]:
    return cluster.status(project)


@hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    register(commands.server)
