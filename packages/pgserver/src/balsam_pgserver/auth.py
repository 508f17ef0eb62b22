"""Authentication without trust: peer over the project's socket, scram-sha-256 over TLS with a
password generated on the user's first activation and kept in a file only they can read. The
owner's password is their everyday role's (a member), never the administrative role's."""

from __future__ import annotations

import secrets
import socket

import click
import psycopg
from psycopg import sql

from balsam.errors import PermissionDenied, ServerDown
from balsam.project import Project, read_password, write_password
from balsam.queries import query

#: libpq/server phrases meaning "this user may not use this database" (server messages are in
#: English: the cluster is initialised with the C.UTF-8 locale).
_UNAUTHORISED = ("Peer authentication failed", "permission denied for database",
                 "does not have CONNECT privilege")
_BAD_PASSWORD = ("password authentication failed", "no password supplied")


class NotAuthorised(PermissionDenied):
    """You are not authorised on this project."""


def not_authorised(project: Project, user: str) -> NotAuthorised:
    message = (f"you ({user}) are not authorised on this project; ask its owner {project.owner} "
               f"to run: balsam server --add-user {user}")
    return NotAuthorised(message)


def on_server_host(project: Project) -> bool:
    """Whether this host can use the project's socket (the server runs here)."""
    return project.info.host == socket.gethostname() and project.socket_path().exists()


def ensure_credentials(project: Project, user: str) -> bool:
    """Check that ``user`` may use the embedded server and can also reach it over TCP.

    On the server's host the check goes through the socket (peer authentication) and, when the
    user has no working password yet, one is generated, set and stored. Elsewhere the stored
    password is checked over TCP. Returns True if a password was (re)generated.
    """
    if not project.embedded:
        return False
    if not on_server_host(project):
        _check_tcp(project, user)
        return False
    try:
        conn = psycopg.connect(project.conninfo(transport="socket"), autocommit=True)
    except psycopg.OperationalError as exc:
        raise _connect_error(project, user, exc) from exc
    with conn:
        me = conn.execute(query("balsam_pgserver", "whoami")).fetchone()
        if user == project.owner and me and me[1]:
            click.echo(f"warning: your everyday database role {user} is a superuser (a project "
                       f"made before balsam-pgserver 0.2): run balsam server migrate", err=True)
        password = read_password(project)
        if password and _tcp_login(project, password) is not False:
            return False
        set_password(conn, project, user)
        return True


def set_password(conn: psycopg.Connection, project: Project, user: str) -> None:
    """Give the connected user a new random password and store it (0600).

    Only the SCRAM verifier reaches the server, so the password never appears in its logs. The
    file is written before the change commits: a second shell activating at once waits on the
    role's row until then, so the last writer of the file is also the last to set the password.
    """
    password = secrets.token_urlsafe(32)
    verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256")
    with conn.transaction():
        conn.execute(sql.SQL("ALTER ROLE CURRENT_USER PASSWORD {}").format(
            sql.Literal(verifier.decode())))
        write_password(project, password)


def _tcp_login(project: Project, password: str) -> bool | None:
    """Try the password over TCP on this host: True works, False refused, None unknown."""
    try:
        psycopg.connect(project.conninfo(transport="tcp", host="127.0.0.1",
                                         password=password)).close()
    except psycopg.OperationalError as exc:
        return False if any(p in str(exc) for p in _BAD_PASSWORD) else None
    return True


def _check_tcp(project: Project, user: str) -> None:
    host = project.info.host
    if read_password(project) is None:
        message = (f"you ({user}) have no database password for this project on this host yet: "
                   f"activate it once on {host}, its server's host, where balsam creates one")
        raise NotAuthorised(message)
    try:
        psycopg.connect(project.conninfo(transport="tcp")).close()
    except psycopg.OperationalError as exc:
        if any(p in str(exc) for p in _BAD_PASSWORD):
            message = (f"your ({user}) stored database password was refused: activate the "
                       f"project once on {host}, its server's host, to renew it (if the owner "
                       f"{project.owner} has not added you, ask them to run: "
                       f"balsam server --add-user {user})")
            raise NotAuthorised(message) from exc
        raise _connect_error(project, user, exc) from exc


def _connect_error(project: Project, user: str, exc: psycopg.OperationalError) -> Exception:
    text = str(exc)
    if f'role "{user}" does not exist' in text or any(p in text for p in _UNAUTHORISED):
        return not_authorised(project, user)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    message = f"cannot connect to the database of {project.root}: {lines[0] if lines else text}"
    return ServerDown(message)
