"""Running failed work again: which tasks ``balsam retry`` may reset, and the reset itself."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from balsam.db import Connection, wrap_db_errors
from balsam.queries import q
from balsam.states import State

#: States ``balsam retry`` resets.
ERROR_STATES = (State.FAILED, State.RUN_ERROR, State.RUN_TIMEOUT)


def retryable(conn: Connection, *, ids: Sequence[int] | None = None,
              states: Iterable[str] = ERROR_STATES,
              cause: str | None = None) -> list[int]:
    """Ids of unclaimed tasks in ``states`` (failed, errored or timed out by default), among
    ``ids`` if given, whose cause (as ``balsam ls`` shows it) contains ``cause`` if given."""
    if ids is not None and not ids:
        return []
    params = {"ids": None if ids is None else sorted(set(ids)),
              "states": sorted({str(s) for s in states}), "cause": cause or None}
    with wrap_db_errors():
        rows = conn.execute(q("retryable_tasks"), params).fetchall()
    return [r["id"] for r in rows]


def retry(conn: Connection, ids: Sequence[int], *, message: str = "retried by user") -> list[int]:
    """Move the given tasks back to READY, all in one transaction; tasks that a launcher took
    or that left the error states meanwhile are skipped. Returns the ids that moved."""
    params = {"ids": sorted(set(ids)), "message": message, "state": State.READY.value}
    with wrap_db_errors(), conn.transaction():
        rows = conn.execute(q("retry_tasks"), params).fetchall()
    return sorted(r["id"] for r in rows)
