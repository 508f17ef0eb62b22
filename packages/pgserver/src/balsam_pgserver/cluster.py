"""The project's embedded cluster: create, start, stop, inspect. Only the owner starts or stops."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from psycopg import sql

from balsam.db import connect, wrap_db_errors
from balsam.errors import PermissionDenied, ServerDown
from balsam.migrate import upgrade
from balsam.project import Project, check_socket_path, current_user
from balsam.queries import query
from balsam_pgserver import auth, server

#: Server settings of an embedded cluster (the port and socket directory are chosen per start).
SETTINGS = ("max_connections=300", "unix_socket_permissions=0770")


def require_owner(project: Project, action: str) -> None:
    """Refuse owner-only actions (start, stop, add users) to collaborators."""
    if not project.embedded:
        message = f"cannot {action}: the project uses an external server ({project.info['dsn']})"
        raise PermissionDenied(message)
    user = current_user()
    if user != project.owner:
        message = f"only the project owner ({project.owner}) can {action}; you are {user}"
        raise PermissionDenied(message)


@contextmanager
def server_lock(project: Project) -> Iterator[None]:
    """Serialise start/stop of one project (two shells activating at once)."""
    path = project.root / ".server-lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def logfile(project: Project) -> Any:
    return project.log_dir / "postgresql.log"


def is_up(project: Project) -> bool:
    """Whether the embedded server answers, from the owner's or a collaborator's point of view."""
    if not project.info.get("port"):
        return False
    if project.info.get("host") == socket.gethostname():
        return server.accepts_connections(socket_path=project.socket_path())
    return server.accepts_connections(host=project.info.get("host"), port=project.info["port"])


def create(project: Project, packages: tuple[str, ...]) -> None:
    """initdb the cluster in ``balsamdb/``, create the database and apply migrations.

    The server is left stopped: ``balsamactivate`` starts it.
    """
    if not project.embedded:
        migrate(project, packages)
        return
    check_socket_path(project.root)
    server.refuse_root(None)
    server.initdb(project.db_dir, superuser=project.owner)
    os.chmod(project.db_dir, 0o700)
    start(project)
    try:
        with connect(project.conninfo(dbname="postgres")) as conn, wrap_db_errors():
            dbname = sql.Identifier(project.info["dbname"])
            conn.execute(sql.SQL("CREATE DATABASE {}").format(dbname))
        migrate(project, packages)
    finally:
        stop(project)


def migrate(project: Project, packages: tuple[str, ...]) -> list[str]:
    """Apply pending migrations of core and the given plugin packages."""
    with connect(project) as conn, wrap_db_errors():
        return upgrade(conn, packages)


def start(project: Project) -> bool:
    """Start the server if it is down; True if this call started it."""
    require_owner(project, "start the server")
    check_socket_path(project.root)
    with server_lock(project):
        if server.is_running(project.db_dir) and is_up(project):
            return False
        forget_copied_pid(project)
        server.clear_stale_pid(project.db_dir)
        project.socket_dir.mkdir(exist_ok=True)
        os.chmod(project.socket_dir, 0o2750)
        port = server.free_port()
        server.start(project.db_dir, port=port, socket_dir=project.socket_dir,
                     logfile=logfile(project), settings=SETTINGS)
        project.info.update(host=socket.gethostname(), port=port)
        project.save_info()
        return True


def pidfile_origin(project: Project) -> str | None:
    """Whose ``postmaster.pid`` the data directory holds: None (none), ``"here"``, ``"copy"`` (it
    came along with a copy and names another directory's server) or ``"moved"`` (this directory's
    server, still running from the path it had before a move)."""
    try:
        lines = (project.db_dir / "postmaster.pid").read_text().splitlines()
        pid, recorded = int(lines[0]), Path(lines[1])
    except (OSError, ValueError, IndexError):
        return None
    if recorded.resolve() == project.db_dir.resolve():
        return "here"
    try:
        if Path(f"/proc/{pid}/cwd").resolve() == project.db_dir.resolve():
            return "moved"
    except OSError:
        pass
    return "copy"


def forget_copied_pid(project: Project) -> None:
    """Remove a copied ``postmaster.pid``; refuse to start a second server on a moved one."""
    origin = pidfile_origin(project)
    if origin == "copy":
        (project.db_dir / "postmaster.pid").unlink(missing_ok=True)
        click.echo(f"warning: {project.root} was copied while its server was running: the last "
                   f"changes may be missing (stop the server before copying)", err=True)
    elif origin == "moved":
        message = (f"the project was moved while its server was running: stop it first "
                   f"(balsam server stop), then activate {project.root} again")
        raise ServerDown(message)


def stop(project: Project) -> bool:
    """Stop the server if it runs; True if this call stopped it."""
    require_owner(project, "stop the server")
    with server_lock(project):
        if pidfile_origin(project) == "copy":
            # Never signal the server of the directory this one was copied from.
            (project.db_dir / "postmaster.pid").unlink(missing_ok=True)
        if not server.is_running(project.db_dir):
            return False
        server.stop(project.db_dir)
        return True


def status(project: Project) -> dict[str, Any]:
    """Where the server is and whether it answers."""
    info = project.info
    if not project.embedded:
        return {"project": str(project.root), "server": "external", "dsn": info["dsn"],
                "state": "unknown", "owner": project.owner}
    return {
        "project": str(project.root),
        "owner": project.owner,
        "host": info.get("host"),
        "port": info.get("port"),
        "socket": str(project.socket_dir),
        "state": "running" if is_up(project) else "stopped",
    }


def connections(project: Project) -> list[dict[str, Any]]:
    """Current client sessions of the project database."""
    if project.embedded and not is_up(project):
        message = f"the server of {project.root} is not running (owner: {project.owner})"
        raise ServerDown(message)
    with connect(project) as conn, wrap_db_errors():
        return conn.execute(query("balsam_pgserver", "connections")).fetchall()


def activate(project: Project, user: str) -> dict[str, str]:
    """The owner starts the server if it is down; a collaborator only checks that it answers."""
    if not project.embedded:
        with connect(project):
            pass
        return {}
    if user == project.owner:
        start(project)
    elif not is_up(project):
        message = (f"the database server of {project.root} is not running; only its owner "
                   f"({project.owner}) can start it, with: source balsamactivate {project.root}")
        raise ServerDown(message)
    auth.ensure_credentials(project, user)
    return {}
