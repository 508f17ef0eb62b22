"""``balsam server``: start, stop, status, connections, migrate; users are added by the owner."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from balsam.migrate import plugin_packages
from balsam.plugins import plugin_manager
from balsam.project import Project
from balsam_pgserver import cluster


def _project() -> Project:
    return Project.from_env()


@click.group("server", invoke_without_command=True)
@click.pass_context
def server(ctx: click.Context) -> None:
    """Manage the project's database server (start and stop are for the owner only)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(status)


@server.command()
def start() -> None:
    """Start the server if it is down."""
    project = _project()
    started = cluster.start(project)
    state = "started" if started else "already running"
    click.echo(f"server {state} on {project.info['host']}:{project.info['port']}")


@server.command()
def stop() -> None:
    """Stop the server (open transactions are rolled back)."""
    stopped = cluster.stop(_project())
    click.echo("server stopped" if stopped else "server was not running")


@server.command()
def status() -> None:
    """Show where the server is and whether it answers."""
    for key, value in cluster.status(_project()).items():
        click.echo(f"{key:<8} {value}")


@server.command()
def connections() -> None:
    """List client sessions of the project database."""
    rows = cluster.connections(_project())
    table = Table("pid", "user", "client", "app", "state", "since")
    for r in rows:
        table.add_row(str(r["pid"]), r["user"] or "", r["client"] or "local", r["app"] or "",
                      r["state"] or "", r["backend_start"].strftime("%Y-%m-%d %H:%M:%S"))
    Console().print(table)


@server.command()
def migrate() -> None:
    """Apply pending schema migrations of core and installed plugins (owner)."""
    project = _project()
    cluster.require_owner(project, "migrate the schema")
    applied = cluster.migrate(project, plugin_packages(plugin_manager()))
    click.echo("\n".join(applied) if applied else "schema is up to date")
