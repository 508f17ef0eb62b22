"""Project-level commands: init, activate, which, plugins."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pluggy

from balsam.contracts import InitOptions
from balsam.errors import InvalidInput
from balsam.lifecycle import activate as activate_project
from balsam.lifecycle import init_project
from balsam.output import Output, options
from balsam.plugins import installed_entry_points, pass_plugin_manager
from balsam.project import Project, known_projects
from balsam_cli import listings


@click.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--dsn", help="Use this existing PostgreSQL server instead of an embedded cluster.")
@click.option("--group", help="UNIX group sharing the project (default: the directory's group).")
@pass_plugin_manager
def init(pm: pluggy.PluginManager, path: Path, dsn: str | None, group: str | None) -> None:
    """Create a project directory with its own PostgreSQL cluster."""
    for option, value in (("--dsn", dsn), ("--group", group)):
        if value is not None and not value.strip():
            message = f"{option} is empty: give a value, or leave {option} out for the default"
            raise click.UsageError(message)
    if dsn is not None:
        check_dsn(dsn)
    project = init_project(path, InitOptions(dsn=dsn, group=group), pm)
    click.echo(f"Created Balsam project {project.root}")
    click.echo(f"Activate it with: source balsamactivate {shlex.quote(str(path))}")


def check_dsn(dsn: str) -> None:
    """Refuse a connection string that cannot be parsed, before anything is created."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        first = str(exc).strip().splitlines()[0]
        message = (f"--dsn {dsn!r} is not a PostgreSQL connection string ({first}); use "
                   "postgresql://USER@HOST:PORT/DBNAME or 'host=H dbname=D user=U'")
        raise InvalidInput(message) from None


@click.command("activate")
@click.argument("project")
@click.option("--shell", "shell", is_flag=True, help="Print shell code for balsamactivate to eval.")
@pass_plugin_manager
def activate(pm: pluggy.PluginManager, project: str, shell: bool) -> None:
    """Start (owner) or check (collaborators) the server and print the environment."""
    proj = Project.find(project)
    env = activate_project(proj, pm)
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
@click.option("--name", help="The project you have used whose path contains this (legacy).")
@click.argument("project", required=False)
@pass_plugin_manager
def which(pm: pluggy.PluginManager, list_all: bool, name: str | None,
          project: str | None) -> None:
    """Show the active project: path, server host and port, owner and state."""
    if list_all:
        for path in known_projects():
            click.echo(str(path))
        return
    if name is not None:
        project = str(_known_by_name(name))
    proj = Project.find(project) if project else Project.from_env()
    results = pm.hook.describe_project(project=proj)
    info: dict[str, object] = {"project": str(proj.root), "owner": proj.owner}
    for extra in reversed(results):
        info.update(extra or {})
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


def _known_by_name(name: str) -> Path:
    """The one project you have used whose path contains ``name``."""
    found = [p for p in known_projects() if name in str(p)]
    if len(found) != 1:
        shown = ", ".join(map(str, found[:5])) if found else "none"
        message = (f"--name {name!r} matches {len(found)} of the projects you have used "
                   f"({shown}): 'balsam which --list' lists them")
        raise InvalidInput(message)
    return found[0]


@click.command("plugins")
@options
@pass_plugin_manager
def plugins(pm: pluggy.PluginManager, out: Output) -> None:
    """List installed plugins, their versions and the hooks they implement."""
    from balsam_cli.main import versions

    rows = []
    for (name, dist, ver), ep in zip(versions(), installed_entry_points(), strict=True):
        plugin = pm.get_plugin(ep.name)
        hooks = "(blocked)" if plugin is None else \
            ", ".join(sorted(h.name for h in pm.get_hookcallers(plugin) or []))
        rows.append((name, dist, ver, hooks))
    out.write(listings.PLUGINS, rows)
