"""``balsam server``: start, stop, status, connections, migrate; ``--add-user``, ``--drop-user``
and ``--list-users`` for the owner."""

from __future__ import annotations

import click
import pluggy

from balsam import users
from balsam.migrate import plugin_packages
from balsam.models import validate_user_name
from balsam.output import Column, Listing, Output
from balsam.plugins import pass_plugin_manager
from balsam.project import ADMIN_ROLE, Project
from balsam.users import ROLES, require_manager
from balsam_pgserver import cluster, roles


def _project() -> Project:
    return Project.from_env()


@click.group("server", invoke_without_command=True)
@click.option("--add-user", "add_users", multiple=True, metavar="NAME",
              help="Authorise a collaborator (owner only; repeatable).")
@click.option("--role", type=click.Choice(ROLES),
              help="Role for --add-user: member (read and write; default) or viewer (read only).")
@click.option("--drop-user", "drop_users", multiple=True, metavar="NAME",
              help="Withdraw a collaborator's access and end their sessions (owner only).")
@click.option("--list-users", is_flag=True, help="List who may use the project (owner only).")
@click.option("--connect", "legacy", flag_value="start", hidden=True)
@click.option("--disconnect", "legacy", flag_value="stop", hidden=True)
@click.option("--list-active-connections", "legacy", flag_value="connections", hidden=True)
@click.option("--reset", "legacy", flag_value="reset", hidden=True)
@click.pass_context
@pass_plugin_manager
def server(pm: pluggy.PluginManager, ctx: click.Context, add_users: tuple[str, ...],
           role: str | None, drop_users: tuple[str, ...], list_users: bool,
           legacy: str | None) -> None:
    """Manage the project's database server and who may use it.

    Only the owner starts and stops the server and manages users. Without a subcommand or an
    option, show the server's status. Legacy's --connect, --disconnect and
    --list-active-connections are start, stop and connections.
    """
    if legacy == "reset":
        message = ("--reset is not needed here: 'balsam server start' recovers a server that "
                   "stopped uncleanly ('balsam server stop' first if it hangs)")
        raise click.UsageError(message)
    if legacy is not None:
        if ctx.invoked_subcommand is not None or add_users or drop_users or list_users:
            message = f"legacy --{legacy} takes no other option or subcommand"
            raise click.UsageError(message)
        ctx.invoke({"start": start, "stop": stop, "connections": connections}[legacy])
        return
    managing = bool(add_users or drop_users or list_users)
    both = sorted(set(add_users) & set(drop_users))
    if both:
        message = f"{both[0]} is both added and dropped: choose one"
        raise click.UsageError(message)
    if role and not add_users:
        message = "--role goes with --add-user"
        raise click.UsageError(message)
    if managing and ctx.invoked_subcommand is not None:
        message = "--add-user, --drop-user and --list-users take no subcommand"
        raise click.UsageError(message)
    if ctx.invoked_subcommand is None:
        if managing:
            _manage_users(pm, add_users, role or "member", drop_users, list_users)
        else:
            ctx.invoke(status)


def _manage_users(pm: pluggy.PluginManager, add_users: tuple[str, ...], role: str,
                  drop_users: tuple[str, ...], list_users: bool) -> None:
    for name in add_users + drop_users:
        validate_user_name(name)
    project = _project()
    require_manager(project)
    for name in add_users:
        users.add_user(project, name, role, pm)
        click.echo(f"{name} may now use the project as {role}; they activate it with: "
                   f". balsamactivate {project.root}")
        if role == "member":
            click.echo(f"A launcher runs a task only if its user trusts the task's owner and "
                       f"whoever last changed the task or its app: for yours to run what {name} "
                       f"owns or changes, run 'balsam trust add {name}' (or start them with "
                       f"--trust {name}); for {name}'s to run yours, or their tasks of your "
                       f"apps, {name} runs 'balsam trust add {project.owner}'. Undo with "
                       f"'balsam trust rm'.")
    for name in drop_users:
        users.drop_user(project, name, pm)
        click.echo(f"{name} may no longer use the project")
    if list_users:
        Output.resolve().write(USERS, [(r["name"], r["role"], r["sessions"])
                                       for r in roles.project_users(project)])


USERS = Listing((Column("user"), Column("role", "state"), Column("sessions", "number")))
CONNECTIONS = Listing((Column("pid", "id"), Column("user"), Column("client"), Column("app"),
                       Column("state", "state"), Column("since", "time")))


@server.command()
@click.option("--port", type=click.IntRange(1, 65535),
              help="Move the server to this TCP port (recorded in server-info; owner).")
def start(port: int | None) -> None:
    """Start the server if it is down, on the port chosen at init."""
    project = _project()
    started = cluster.start(project, port=port)
    state = "started" if started else "already running"
    click.echo(f"server {state} on {project.info.host}:{project.info.port}")


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
    Output.resolve().write(CONNECTIONS, [(r["pid"], r["user"], r["client"] or "local", r["app"],
                                          r["state"], r["backend_start"]) for r in rows])


@server.command()
@pass_plugin_manager
def migrate(pm: pluggy.PluginManager) -> None:
    """Apply pending schema migrations of core and installed plugins (owner).

    A project made before balsam-pgserver 0.2, whose owner was the cluster's superuser, gets the
    administrative role balsam_admin and an everyday role for its owner.
    """
    project = _project()
    cluster.require_owner(project, "migrate the schema")
    if roles.split_admin(project):
        click.echo(f"{ADMIN_ROLE} is now the administrative role (over the project's socket, "
                   f"from your account); {project.owner} is an everyday member role")
    applied = cluster.migrate(project, plugin_packages(pm))
    click.echo("\n".join(applied) if applied else "schema is up to date")
