"""The schema: migrations apply once, the state table matches balsam.states."""

from __future__ import annotations

import pytest

from balsam.migrate import migrate, upgrade
from balsam.states import TRANSITIONS, State

pytestmark = pytest.mark.pg


def test_migrations_are_recorded_and_not_reapplied(db):
    assert upgrade(db) == []
    names = [r["name"] for r in db.execute(
        "SELECT name FROM balsam_migrations WHERE package = 'balsam' ORDER BY name")]
    assert names[0] == "0001_initial.sql"
    assert migrate(db, "balsam") == []


def test_database_transitions_equal_python_table(db):
    rows = db.execute("SELECT from_state, to_state FROM task_transitions").fetchall()
    in_db = {(r["from_state"], r["to_state"]) for r in rows}
    in_py = {(a.value, b.value) for a, bs in TRANSITIONS.items() for b in bs}
    assert in_db == in_py
    states = {r["state"] for r in db.execute("SELECT state FROM task_states")}
    assert states == {s.value for s in State}
