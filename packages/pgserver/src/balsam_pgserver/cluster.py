"""The project's embedded cluster: create, start, stop, inspect. Only the owner starts or stops.

Everything the server keeps is in ``balsamdb/`` (0700, the owner's): the cluster, ``server.log``,
the start/stop lock, the CA and server keys. The server keeps the port chosen at init (clients
find it in ``server-info``); a start whose port is taken fails and says how to pick another.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from psycopg import sql

from balsam.db import connect, wrap_db_errors
from balsam.errors import InvalidInput, PermissionDenied, ServerDown
from balsam.migrate import upgrade
from balsam.project import ADMIN_ROLE, Project, check_socket_path, current_user
from balsam.queries import query
from balsam.zones import CONTROL_DIR_MODE, republish
from balsam_pgserver import auth, roles, server, tls

LOG_FILE = "server.log"
LOCK_FILE = "server.lock"


#: Connections the server accepts unless server-info says otherwise (``max_connections``, set by
#: the owner: a launcher holds one or two).
MAX_CONNECTIONS = 300
#: Slots only the administrative role may take, once authenticated.
ADMIN_RESERVED = 3


def settings(major: int, max_connections: int = MAX_CONNECTIONS) -> tuple[str, ...]:
    """Server settings of an embedded cluster of PostgreSQL ``major`` (the port, listen
    addresses and socket directory are given per start).

    Authentication must finish within 5 s, so a connection that never finishes it (an
    attacker's) frees its slot soon; ``ADMIN_RESERVED`` slots stay for ``balsam_admin`` whatever
    members' sessions take, and from PostgreSQL 16 on a tenth more for the member role
    (``pg_use_reserved_connections``, granted by migration 0002). Neither holds against
    connections still authenticating: PostgreSQL gives them a slot first (docs/security.md).
    TCP is TLS only (pg_hba.conf); the certificate is named relative to the data directory, so a
    moved project still starts.
    """
    base: tuple[str, ...] = (f"max_connections={max_connections}",
                             f"superuser_reserved_connections={ADMIN_RESERVED}",
                             "authentication_timeout=5s", "unix_socket_permissions=0770",
                             "ssl=on", f"ssl_cert_file={tls.SERVER_CERT}",
                             f"ssl_key_file={tls.SERVER_KEY}", "ssl_min_protocol_version=TLSv1.2",
                             "password_encryption=scram-sha-256")
    if major >= 16:
        base += (f"reserved_connections={max_connections // 10}",)
    return base


def max_connections(project: Project) -> int:
    """The owner's choice in server-info (``max_connections``), else ``MAX_CONNECTIONS``."""
    value = project.info.max_connections
    if value is None:
        return MAX_CONNECTIONS
    if not 10 <= value <= 10000:
        message = (f"max_connections in {project.info_path} must be a whole number from 10 to "
                   f"10000 (got {value!r})")
        raise InvalidInput(message)
    return value


def require_owner(project: Project, action: str) -> None:
    """Refuse owner-only actions (start, stop, add users) to collaborators."""
    if not project.embedded:
        message = f"cannot {action}: the project uses an external server ({project.info.dsn})"
        raise PermissionDenied(message)
    user = current_user()
    if user != project.owner:
        message = f"only the project owner ({project.owner}) can {action}; you are {user}"
        raise PermissionDenied(message)


@contextmanager
def server_lock(project: Project) -> Iterator[None]:
    """Serialise start/stop of one project (two shells activating at once). The lock is in
    ``balsamdb/``, which only the owner can enter: nobody else can hold it."""
    project.guard().check(project.db_dir, private=True)
    fd = os.open(project.db_dir / LOCK_FILE,
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def logfile(project: Project) -> Path:
    return project.db_dir / LOG_FILE


def is_up(project: Project) -> bool:
    """Whether the embedded server answers, from the owner's or a collaborator's point of view."""
    if not project.info.port:
        return False
    if project.info.host == socket.gethostname():
        return server.accepts_connections(socket_path=project.socket_path())
    return server.accepts_connections(host=project.info.host, port=project.info.port)


def create(project: Project, packages: tuple[str, ...]) -> None:
    """initdb the cluster in ``balsamdb/`` (bootstrap superuser ``balsam_admin``), make the
    project CA, choose the port, create the database, apply migrations as ``balsam_admin`` and
    give the owner their everyday role (a member, like any collaborator).

    The server is left stopped: ``balsamactivate`` starts it.
    """
    if not project.embedded:
        migrate(project, packages)
        return
    check_socket_path(project.root)
    server.refuse_root(None)
    server.initdb(project.db_dir, superuser=ADMIN_ROLE)
    os.chmod(project.db_dir, 0o700)
    ensure_ca(project)
    project.info = replace(project.info, host=socket.gethostname(), port=server.free_port())
    project.save_info()
    start(project)
    try:
        with connect(project, admin=True, dbname="postgres") as conn, wrap_db_errors():
            dbname = sql.Identifier(project.info.dbname)
            conn.execute(sql.SQL("CREATE DATABASE {}").format(dbname))
        migrate(project, packages)
    finally:
        stop(project)


def migrate(project: Project, packages: tuple[str, ...]) -> list[str]:
    """Apply pending migrations of core and the given plugin packages (as ``balsam_admin``, who
    owns the schema), then make sure the owner has their everyday role."""
    with connect(project, admin=True) as conn, wrap_db_errors():
        applied = upgrade(conn, packages)
        if project.embedded:
            roles.ensure_owner_role(conn, project.owner)
    return applied


def ensure_ca(project: Project) -> None:
    """Make the project CA if there is none (a project from before TLS) and publish its
    certificate, and server-info, from the owner's private copies if need be."""
    if not (project.db_dir / tls.CA_KEY).exists():
        tls.create_ca(project.db_dir, project.info.uuid)
    republish(project.root, project.guard())


def start(project: Project, port: int | None = None) -> bool:
    """Start the server if it is down; True if this call started it. ``port`` moves the server
    to another port (recorded in server-info)."""
    require_owner(project, "start the server")
    check_socket_path(project.root)
    with server_lock(project):
        running_port = project.info.port
        if server.is_running(project.db_dir) and is_up(project):
            if port and port != running_port:
                message = (f"the server runs on port {running_port}: stop it first "
                           f"(balsam server stop) to move it to port {port}")
                raise InvalidInput(message)
            return False
        forget_copied_pid(project)
        server.clear_stale_pid(project.db_dir)
        prepare_socket_dir(project)
        port = port or running_port or server.free_port()
        if not server.port_free(port):
            raise server.PortTaken(port_taken(port))
        ensure_ca(project)
        tls.issue_server_cert(project.db_dir)
        server.write_auth_files(project.db_dir, project.owner)
        try:
            server.start(project.db_dir, port=port, socket_dir=project.socket_dir,
                         logfile=logfile(project),
                         settings=settings(server.major_version(project.db_dir),
                                           max_connections(project)))
        except server.PortTaken:
            raise server.PortTaken(port_taken(port)) from None
        if (port, socket.gethostname()) != (running_port, project.info.host):
            project.info = replace(project.info, host=socket.gethostname(), port=port)
            project.save_info()
        return True


def port_taken(port: int) -> str:
    return (f"port {port} on {socket.gethostname()} is taken by another program; the server "
            f"keeps its port so that clients find it: pick another with balsam server start "
            f"--port N")


def prepare_socket_dir(project: Project) -> None:
    """The socket directory: the owner's, 2750 (the group may connect, not plant a socket)."""
    try:
        project.socket_dir.mkdir()
    except FileExistsError:
        st = project.socket_dir.lstat()
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            raise project.guard().refuse(project.socket_dir, "not the owner's directory") from None
    os.chmod(project.socket_dir, CONTROL_DIR_MODE, follow_symlinks=False)


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
        return {"project": str(project.root), "server": "external", "dsn": info.dsn,
                "state": "unknown", "owner": project.owner}
    return {
        "project": str(project.root),
        "owner": project.owner,
        "host": info.host,
        "port": info.port,
        "socket": str(project.socket_dir),
        "tls": f"required over TCP, verified against {project.ca_path.name}",
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
    host = project.info.host
    if user == project.owner and host in (None, socket.gethostname()):
        if not start(project):
            ensure_ca(project)
    elif not is_up(project):
        # Activation elsewhere (a compute node) never starts the server: this host cannot see
        # the server host's processes, so a second server could start on the same files.
        where = f" on {host}" if host and host != socket.gethostname() else ""
        message = (f"the database server of {project.root} is not running{where}; only its owner "
                   f"({project.owner}) can start it, with: source balsamactivate {project.root}"
                   f"{where}")
        raise ServerDown(message)
    auth.ensure_credentials(project, user)
    return {}
