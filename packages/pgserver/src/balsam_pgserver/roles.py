"""Who may use a project's database: collaborators' login roles in its member or viewer role."""

from __future__ import annotations

from typing import Any

from psycopg import errors as pgerr
from psycopg import sql

from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import BalsamError, InvalidInput, NotFound
from balsam.models import validate_user_name
from balsam.project import ADMIN_ROLE, Project
from balsam.queries import query
from balsam.users import ROLES, check_collaborator, check_role, require_manager

#: Refuse anything but a plain lower-case SQL identifier, before any SQL is run (the rule is
#: core's: trust names the same users).
validate_username = validate_user_name


def project_roles(conn: Connection) -> dict[str, str]:
    """``{"member": name, "viewer": name}`` of this database's roles."""
    rows = conn.execute(query("balsam_pgserver", "project_roles")).fetchall()
    roles = {r["kind"]: r["rolname"] for r in rows}
    if set(roles) != set(ROLES):
        message = ("this project's database has no member and viewer roles (its server user could "
                   "not create roles when the project was initialised): grant access on that "
                   "server by hand")
        raise BalsamError(message)
    return roles


def memberships(conn: Connection, username: str) -> list[str]:
    """The project roles (``member``, ``viewer``) ``username`` belongs to."""
    rows = conn.execute(query("balsam_pgserver", "role_memberships"), {"name": username})
    return [r["kind"] for r in rows]


def add_user(conn: Connection, username: str, role: str = "member") -> str:
    """Give ``username`` exactly ``role`` on this database, creating its login role if needed.

    Returns ``"created"``, ``"changed"`` or ``"unchanged"``. Idempotent.
    """
    validate_username(username)
    check_role(role)
    with wrap_db_errors(), conn.transaction():
        roles = project_roles(conn)
        info = conn.execute(query("balsam_pgserver", "role_info"), {"name": username}).fetchone()
        user = sql.Identifier(username)
        if info is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                user, sql.Identifier(roles[role])))
            return "created"
        if info["rolsuper"]:
            message = f"{username} is a superuser of this server and needs no role"
            raise InvalidInput(message)
        if not info["rolcanlogin"]:
            message = f"{username} is a group role of this server, not a user"
            raise InvalidInput(message)
        current = memberships(conn, username)
        if current == [role]:
            return "unchanged"
        for kind in current:
            if kind != role:
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(
                    sql.Identifier(roles[kind]), user))
        if role not in current:
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(roles[role]), user))
        return "changed"


def drop_user(conn: Connection, username: str, *, drop_role: bool) -> int:
    """Withdraw ``username``'s project roles; with ``drop_role`` (the embedded cluster, where
    the login role serves this project only) drop the role and end its sessions.

    Returns the number of sessions ended.
    """
    validate_username(username)
    with wrap_db_errors():
        with conn.transaction():
            roles = project_roles(conn)
            current = memberships(conn, username)
            if not current:
                message = f"{username} is not a user of this project"
                raise NotFound(message)
            for kind in current:
                conn.execute(sql.SQL("REVOKE {} FROM {}").format(
                    sql.Identifier(roles[kind]), sql.Identifier(username)))
        if not drop_role:
            return 0
        row = conn.execute(query("balsam_pgserver", "terminate_sessions"),
                           {"name": username}).fetchone()
        try:
            with conn.transaction():
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(username)))
        except pgerr.DependentObjectsStillExist:
            pass  # it owns something elsewhere: revoked above, which is what matters
        return int(row["ended"]) if row else 0


def list_users(conn: Connection) -> list[dict[str, Any]]:
    """``name``, ``role`` (``superuser``, ``member`` or ``viewer``) and open ``sessions``."""
    with wrap_db_errors():
        project_roles(conn)
        return conn.execute(query("balsam_pgserver", "project_users")).fetchall()


def ensure_owner_role(conn: Connection, owner: str) -> None:
    """The owner's everyday role: a login in the member role and nothing more (created if
    missing; the owner's OS name, which :func:`validate_username` may not accept, is quoted)."""
    with wrap_db_errors(), conn.transaction():
        member = project_roles(conn)["member"]
        info = conn.execute(query("balsam_pgserver", "role_info"), {"name": owner}).fetchone()
        if info is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
                sql.Identifier(owner), sql.Identifier(member)))
        elif "member" not in memberships(conn, owner):
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member),
                                                          sql.Identifier(owner)))


def split_admin(project: Project) -> bool:
    """Convert a project whose owner is still the cluster's superuser (made before the admin
    split) to ``balsam_admin`` + an everyday role; True if it did. Run by the owner."""
    try:
        conn = connect(project.conninfo(transport="socket"))
    except BalsamError as exc:
        if "does not exist" in str(exc.__cause__):
            return False  # a new cluster: the owner's role comes after the migrations
        raise
    with conn, wrap_db_errors():
        me = conn.execute(query("balsam_pgserver", "whoami")).fetchone()
        if not me or not me["rolsuper"]:
            return False
        with conn.transaction():
            member = project_roles(conn)["member"]
            row = conn.execute(query("balsam_pgserver", "own_verifier")).fetchone()
            conn.execute(sql.SQL(query("balsam_pgserver", "split_admin")).format(
                owner=sql.Identifier(project.owner), admin=sql.Identifier(ADMIN_ROLE),
                member=sql.Identifier(member),
                verifier=sql.Literal(row["rolpassword"] if row else None)))
        conn.execute(query("balsam_pgserver", "end_other_sessions"))
    return True


# --- project-level entry points (owner only) ------------------------------------------------


def add_project_user(project: Project, username: str, role: str) -> str:
    check_role(role)
    check_collaborator(project, username)
    with connect(project, admin=True) as conn:
        return add_user(conn, username, role)


def drop_project_user(project: Project, username: str) -> int:
    check_collaborator(project, username, dropping=True)
    with connect(project, admin=True) as conn:
        return drop_user(conn, username, drop_role=project.embedded)


def project_users(project: Project) -> list[dict[str, Any]]:
    require_manager(project)
    with connect(project, admin=True) as conn:
        rows = list_users(conn)
    for row in rows:
        if row["name"] == project.owner:
            row["role"] = "owner"
        elif row["role"] == "superuser" and row["name"] == ADMIN_ROLE and project.embedded:
            row["role"] = "admin"
    return rows
