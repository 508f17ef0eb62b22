"""Fixtures of core's database tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pytest

from balsam import api
from balsam_testing.launchers import give_back, hold

Walk = Callable[..., None]


@pytest.fixture
def stand_in(db) -> int:
    """A launcher row holding tasks while a test moves them as a launcher would: a RUNNING task
    is always held by a launcher (migration 0011)."""
    return db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                      "VALUES ('stand-in', 1, 'mpi', 1) RETURNING id").fetchone()["id"]


@pytest.fixture
def walk() -> Walk:
    """``walk(conn, ids, states)``: move tasks through ``states`` (one transaction each), held
    by a stand-in launcher (:func:`balsam_testing.launchers.hold`) and given back at the end
    unless they are left RUNNING."""

    def walk(conn, ids: Iterable[int], states: Sequence[str], message: str = "") -> None:
        ids = list(ids)
        hold(conn, ids)
        for state in states:
            api.set_state(ids, state, message=message, conn=conn)
        if states[-1] != "RUNNING":
            give_back(conn, ids)

    return walk
