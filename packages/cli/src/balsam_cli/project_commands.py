"""Project-level commands: init, activate, which, plugins."""

from __future__ import annotations

import shlex
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from balsam.lifecycle import activate as activate_project
from balsam.lifecycle import init_project
from balsam.plugins import installed_entry_points, plugin_manager
from balsam.project import Project, known_projects


@click.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dsn", help="Use this existing PostgreSQL server instead of an embedded cluster.")
@click.option("--group", help="UNIX group sharing the project (default: the directory's group).")
def init(path: Path, dsn: str | None, group: str | None) -> None:
    """Create a project directory with its own PostgreSQL cluster."""
    project = init_project(path, {"dsn": dsn, "group": group}, plugin_manager())
    click.echo(f"Created Balsam project {project.root}")
    click.echo(f"Activate it with: source balsamactivate {shlex.quote(str(path))}")


@click.command("activate")
@click.argument("project")
@click.option("--shell", "shell", is_flag=True, help="Print shell code for balsamactivate to eval.")
def activate(project: str, shell: bool) -> None:
    """Start (owner) or check (collaborators) the server and print the environment."""
    proj = Project.find(project)
    env = activate_project(proj, plugin_manager())
    if not shell:
        for key, value in env.items():
            click.echo(f"{key}={value}")
        return
    lines = ["[ -n \"${_BALSAM_EXPORTED:-}\" ] && . balsamdeactivate"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append(f"export _BALSAM_EXPORTED={shlex.quote(' '.join(env))}")
    lines.append('_BALSAM_OLD_PS1="${PS1:-}"')
    lines.append(f'PS1={shlex.quote(f"[{proj.name}] ")}"${{PS1:-}}"')
    lines.append('_BALSAM_OLD_UMASK=$(umask)')
    lines.append(f"umask {proj.umask:04o}")
    lines.append(f"echo {shlex.quote(f'Balsam project {proj.root} active')} >&2")
    click.echo("\n".join(lines))


@click.command("which")
@click.option("--list", "list_all", is_flag=True, help="List the projects you have used.")
@click.argument("project", required=False)
def which(list_all: bool, project: str | None) -> None:
    """Show the active project: path, server host and port, owner and state."""
    if list_all:
        for path in known_projects():
            click.echo(str(path))
        return
    proj = Project.find(project) if project else Project.from_env()
    results = plugin_manager().hook.describe_project(project=proj)
    info: dict[str, object] = {"project": str(proj.root), "owner": proj.owner}
    for extra in reversed(results):
        info.update(extra or {})
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


@click.command("plugins")
def plugins() -> None:
    """List installed plugins, their versions and the hooks they implement."""
    pm = plugin_manager()
    table = Table("name", "distribution", "version", "hooks")
    for ep in installed_entry_points():
        plugin = pm.get_plugin(ep.name)
        dist = ep.dist.name if ep.dist else "?"
        try:
            ver = version(dist)
        except PackageNotFoundError:
            ver = "?"
        if plugin is None:
            table.add_row(ep.name, dist, ver, "(blocked)")
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        table.add_row(ep.name, dist, ver, ", ".join(hooks))
    Console().print(table)
