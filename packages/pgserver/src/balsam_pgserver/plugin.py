"""balsam-pgserver hook implementations: thin calls into cluster and commands, imported when a
hook runs (``balsam --version`` and other plugins' commands do not pay for them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from balsam import hookimpl

if TYPE_CHECKING:
    from balsam.contracts import InitOptions
    from balsam.project import Project


@hookimpl
def migration_packages() -> list[str]:
    return ["balsam_pgserver"]


@hookimpl(tryfirst=True)
def on_init(project: Project, options: InitOptions) -> None:
    from balsam_pgserver import cluster

    cluster.create(project, options.migrations)


@hookimpl(tryfirst=True)
def on_add_user(project: Project, username: str, role: str) -> None:
    from balsam_pgserver import roles

    roles.add_project_user(project, username, role)


@hookimpl(tryfirst=True)
def on_drop_user(project: Project, username: str) -> None:
    import click

    from balsam_pgserver import roles

    ended = roles.drop_project_user(project, username)
    if ended:
        click.echo(f"{ended} session(s) of {username} ended")


@hookimpl(tryfirst=True)
def on_activate(project: Project, user: str) -> dict[str, str]:
    from balsam_pgserver import cluster

    return cluster.activate(project, user)


@hookimpl
def describe_project(project: Project) -> dict[str, Any]:
    from balsam_pgserver import cluster

    return cluster.status(project)


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("server", "balsam_pgserver.commands:server",
             help="Manage the project's database server and who may use it.")
