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


def connect(target: Project | str, *, autocommit: bool = True, **kwargs: Any) -> Connection:
    """Open a connection (rows as dicts) to a project's database or to a conninfo string.

    Autocommit by default: callers group statements with ``with conn.transaction():``.
    """
    from balsam.project import Project

    conninfo = target.conninfo() if isinstance(target, Project) else target
    try:
        return psycopg.connect(conninfo, autocommit=autocommit, row_factory=dict_row, **kwargs)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(target, Project):
            message = f"cannot connect to the database of {target.root}: {first}"
            if target.embedded:
                message += f" (is the server up? its owner {target.owner} starts it with balsamactivate)"
            raise ServerDown(message) from exc
        message = f"cannot connect to the database: {first}"
        raise ServerDown(message) from exc


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
        return PermissionDenied(f"permission denied: {primary}")
    if isinstance(exc, psycopg.OperationalError):
        return ServerDown(f"database connection lost: {primary}")
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
