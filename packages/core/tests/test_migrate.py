"""The schema: migrations apply once, the state table matches balsam.states."""

from __future__ import annotations

import os

import pytest
from psycopg import sql

from balsam import monitor
from balsam.db import connect
from balsam.errors import BalsamError
from balsam.migrate import migrate, migration_files, sync_states, upgrade
from balsam.queries import query
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


@pytest.fixture
def blank(pg_server):
    """A connection to an empty database (no migration applied)."""
    name = f"blank_{os.getpid()}"
    with connect(pg_server.dsn()) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(pg_server.dsn(name)) as conn:
            yield conn
    finally:
        with connect(pg_server.dsn()) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def migrate_until(conn, last: str) -> None:
    """Apply core's migrations up to ``last`` (a number) as an older balsam would have."""
    conn.execute(query("balsam", "create_migrations_table"))
    for name, text in migration_files("balsam"):
        if name[:4] <= last:
            conn.execute(sql.SQL(text))  # type: ignore[arg-type]
            conn.execute(query("balsam", "record_migration"), {"package": "balsam", "name": name})
    sync_states(conn)


def test_upgrading_a_project_with_tasks_keeps_and_recovers_them(blank):
    migrate_until(blank, "0007")
    app = blank.execute("INSERT INTO apps (name, executable, owner) VALUES ('sim', '/bin/sim', "
                        "'alice') RETURNING id").fetchone()["id"]
    retry, handled, ready = (blank.execute(
        "INSERT INTO tasks (app_id, owner, args, auto_timeout_retry, post_timeout_handler) "
        "VALUES (%s, 'alice', 'x', %s, %s) RETURNING id", [app, auto, handler]
    ).fetchone()["id"] for auto, handler in ((True, False), (True, True), (True, False)))
    for state in ("READY", "STAGED_IN", "PREPROCESSED", "RUNNING"):  # released while RUNNING
        blank.execute("UPDATE tasks SET state = %s WHERE id = ANY(%s)", [state, [retry, handled]])
    blank.execute("UPDATE tasks SET state = 'READY' WHERE id = %s", [ready])
    applied = upgrade(blank)
    assert applied[0] == "balsam/0008_pinned_search_path.sql"
    rows = blank.execute("SELECT id, state, state_message, changed_by, changed_at = created_at "
                         "AS since_created FROM tasks ORDER BY id").fetchall()
    assert [(r["state"], r["changed_by"], r["since_created"]) for r in rows] == [
        ("RESTART_READY", "alice", True), ("RUN_TIMEOUT", "alice", True),
        ("READY", "alice", True)]
    assert rows[0]["state_message"] == "released while RUNNING: recovered by migration 0011"
    assert blank.execute("SELECT changed_by FROM apps").fetchone() == {"changed_by": "alice"}
    events = blank.execute("SELECT count(*) AS n FROM task_events").fetchone()["n"]
    blank.execute("DELETE FROM tasks")
    assert blank.execute("SELECT count(*) AS n FROM task_events").fetchone()["n"] == events


def test_a_project_not_yet_migrated_says_what_to_run(blank):
    """New code over an older schema (balsam upgraded, the project not yet migrated): one line
    that says to migrate, not a bare 'column does not exist'; once migrated, it works."""
    migrate_until(blank, "0071")  # before launchers.stops_at
    with pytest.raises(BalsamError, match=r"column l\.stops_at does not exist \(the project's "
                       r"schema may be older than this balsam: its owner runs 'balsam server "
                       r"migrate'\)"):
        monitor.launchers(blank)
    upgrade(blank)
    assert monitor.launchers(blank) == []
