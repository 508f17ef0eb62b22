"""Connections and the mapping of driver errors to balsam errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pgerr
from psycopg.rows import dict_row

from balsam.errors import (
    AlreadyExists,
    BalsamError,
    Busy,
    CycleError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ServerDown,
)

if TYPE_CHECKING:
    from balsam.project import Project

Connection = psycopg.Connection[dict[str, Any]]


def connect(target: Project | str, *, autocommit: bool = True, admin: bool = False,
            dbname: str | None = None, **kwargs: Any) -> Connection:
    """Open a connection (rows as dicts) to a project's database or to a conninfo string.

    Autocommit by default: callers group statements with ``with conn.transaction():``.
    ``admin``: as the embedded cluster's administrative role (the owner, over the project's
    socket), for migrations and user management; an external DSN's user does everything.
    """
    from balsam.project import Project

    if isinstance(target, Project):
        extra = {"dbname": dbname} if dbname else {}
        conninfo = target.conninfo(admin=admin, **extra)
    else:
        conninfo = target
        kwargs.update({"dbname": dbname} if dbname else {})
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **kwargs)
    except psycopg.OperationalError as exc:
        raise _connect_error(target, exc, admin=admin) from exc


def _connect_error(target: Project | str, exc: psycopg.OperationalError, *,
                   admin: bool = False) -> BalsamError:
    """Say why a connection failed, and what to do, in one line."""
    from balsam.project import ADMIN_ROLE, Project, current_user

    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not isinstance(target, Project):
        return ServerDown(f"cannot connect to the database: {first}")
    if target.embedded and admin and "Peer authentication failed" in text:
        return PermissionDenied(
            f"only the project owner ({target.owner}) can run administrative commands: "
            f"{ADMIN_ROLE} is reachable only from their account, over the project's socket")
    if target.embedded and ("certificate verify failed" in text or "does not match host" in text):
        return ServerDown(
            f"refusing the server at {target.tcp_host()}:{target.info.port}: it did "
            f"not prove it is the project's ({first}); no password was sent")
    if target.embedded and "role" in text and "does not exist" in text:
        user = current_user()
        return PermissionDenied(
            f"you ({user}) are not authorised on the project {target.root}; ask its owner "
            f"({target.owner}) to run: balsam server --add-user {user}")
    if target.embedded and ("no password supplied" in text
                            or "password authentication failed" in text):
        # Over TCP (a compute node) with no password file, or a stale one.
        return PermissionDenied(
            f"you ({current_user()}) have no working database password for {target.root} on "
            f"this host: activate the project once on {target.info.host}, its server's "
            f"host, where balsam sets one up")
    message = f"cannot connect to the database of {target.root}: {first}"
    if target.embedded:
        message += f" (is the server up? its owner {target.owner} starts it with balsamactivate)"
    return ServerDown(message)


_MAP: list[tuple[type[Exception], type[BalsamError]]] = [
    (pgerr.UniqueViolation, AlreadyExists),
    (pgerr.ForeignKeyViolation, NotFound),
    (pgerr.CheckViolation, InvalidInput),
    (pgerr.NotNullViolation, InvalidInput),
    (pgerr.InvalidTextRepresentation, InvalidInput),
    (pgerr.InvalidParameterValue, InvalidInput),
    (pgerr.NumericValueOutOfRange, InvalidInput),
    (pgerr.InsufficientPrivilege, PermissionDenied),
]


def translate(exc: psycopg.Error) -> BalsamError:
    """The balsam error for a driver error: one line, no SQL noise."""
    diag = getattr(exc, "diag", None)
    primary = (diag.message_primary if diag else None) or str(exc).strip().splitlines()[0]
    if exc.sqlstate == "BA001":
        return InvalidTransition(primary)
    if exc.sqlstate == "BA002":
        return CycleError(primary)
    if isinstance(exc, pgerr.InsufficientPrivilege):
        if primary.startswith("permission denied for "):  # the server's own: a role's grants
            return PermissionDenied(f"{primary} (your role in this project may not do this: a "
                                    "viewer only reads; the project's owner grants more with "
                                    "'balsam server --add-user NAME')")
        said = primary.startswith("permission denied")
        return PermissionDenied(primary if said else f"permission denied: {primary}")
    if isinstance(exc, pgerr.LockNotAvailable):
        return Busy(primary)
    if isinstance(exc, pgerr.CheckViolation):
        return InvalidInput(primary)  # its detail is the whole row
    if isinstance(exc, psycopg.OperationalError):
        return ServerDown(f"database connection lost: {primary}")
    if isinstance(exc, pgerr.UndefinedColumn | pgerr.UndefinedTable):
        return BalsamError(f"database error: {primary} (the project's schema may be older than "
                           "this balsam: its owner runs 'balsam server migrate')")
    if isinstance(exc, pgerr.NumericValueOutOfRange):
        return InvalidInput(f"a number is too large ({primary}): counts and sizes go up to "
                            f"2147483647, ids up to 9223372036854775807")
    for driver, ours in _MAP:
        if isinstance(exc, driver):
            detail = diag.message_detail if diag and diag.message_detail else ""
            return ours(f"{primary}{': ' + detail if detail else ''}")
    return BalsamError(f"database error: {primary}")


@contextlib.contextmanager
def wrap_db_errors() -> Iterator[None]:
    """Re-raise psycopg errors as balsam errors (``from`` the original)."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
