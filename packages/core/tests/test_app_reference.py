"""tasks.app_id names an app (migration 0071: statement-level checks in place of the foreign
key): raw SQL, bulk COPY and the races between adding tasks and removing their app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from balsam import api
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import BalsamError, InvalidInput, NotFound

pytestmark = pytest.mark.pg


def fails(conn: Connection, statement: str, *params: object) -> BalsamError:
    with pytest.raises(BalsamError) as caught, wrap_db_errors():
        conn.execute(statement, params or None)
    return caught.value


def tasks(db: Connection) -> int:
    return int(db.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"])


def test_a_task_names_an_app_that_exists(db):
    sim = api.add_app("sim", "/bin/echo", conn=db).id
    other = api.add_app("other", "/bin/true", conn=db).id
    error = fails(db, "INSERT INTO tasks (app_id) VALUES (%s)", sim + 100)
    assert isinstance(error, NotFound) and str(error).startswith(f"no app {sim + 100}:")
    # A bad app at the end of a block of good rows refuses the whole COPY.
    with pytest.raises(NotFound), wrap_db_errors(), db.transaction(), \
            db.cursor().copy("COPY tasks (app_id, state) FROM STDIN") as copy:
        copy.write(f"{sim}\tREADY\n" * 999 + f"{sim + 100}\tREADY\n")
    assert tasks(db) == 0
    task = api.add_task("sim", conn=db).id
    assert isinstance(fails(db, "UPDATE tasks SET app_id = %s WHERE id = %s", sim + 100, task),
                      NotFound)
    db.execute("UPDATE tasks SET app_id = %s WHERE id = %s", [other, task])
    assert api.get_task(task, conn=db).app_name == "other"


def test_an_app_in_use_stays(db):
    sim = api.add_app("sim", "/bin/echo", conn=db).id
    spare = api.add_app("spare", "/bin/true", conn=db).id
    task = api.add_task("sim", conn=db).id
    error = fails(db, "DELETE FROM apps WHERE id = %s", sim)
    assert isinstance(error, NotFound)
    assert str(error) == (f"app {sim} is used by task {task} (and maybe others): remove those "
                          f"tasks first")
    assert isinstance(fails(db, "UPDATE apps SET id = DEFAULT WHERE id = %s", sim), NotFound)
    assert isinstance(fails(db, "TRUNCATE apps CASCADE"), NotFound)
    with pytest.raises(InvalidInput, match="is used by 1 task"):
        api.remove_app("sim", conn=db)
    # Where a foreign key's check would see rows committed after the snapshot, a trigger's
    # cannot: removing an app is refused outside READ COMMITTED.
    with pytest.raises(NotFound, match="READ COMMITTED"), wrap_db_errors(), db.transaction():
        db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        db.execute("DELETE FROM apps WHERE id = %s", [spare])
    assert api.get_task(task, conn=db).app_name == "sim"
    db.execute("UPDATE apps SET id = DEFAULT WHERE id = %s", [spare])  # unused: renumbered
    api.remove_app("spare", conn=db)
    db.execute("TRUNCATE tasks, apps CASCADE")  # together: nothing left to name a lost app


def waiting(db: Connection, thread: threading.Thread) -> bool:
    """Whether another session of this database waits for a lock (``thread`` still alive)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and thread.is_alive():
        row = db.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE datname = "
                         "current_database() AND wait_event_type = 'Lock'").fetchone()
        if row["n"]:
            return True
        time.sleep(0.02)
    return False


def race(first: Callable[[Connection], None], second: Callable[[Connection], None],
         dsn: str, db: Connection) -> list[BaseException | None]:
    """``first`` in an open transaction, then ``second`` in another session, which must wait
    for the first to commit; the outcome of each."""
    outcome: list[BaseException | None] = [None, None]

    def run_second() -> None:
        with connect(dsn) as conn:
            try:
                with wrap_db_errors(), conn.transaction():
                    second(conn)
            except BalsamError as exc:
                outcome[1] = exc

    with connect(dsn) as conn:
        try:
            with wrap_db_errors(), conn.transaction():
                first(conn)
                thread = threading.Thread(target=run_second)
                thread.start()
                assert waiting(db, thread), "the second session did not wait for the first"
        except BalsamError as exc:
            outcome[0] = exc
    thread.join(30)
    return outcome


def test_adding_tasks_while_their_app_is_removed(db, db_dsn):
    """Either order, one of the two fails and no task is left naming a lost app."""
    sim = api.add_app("sim", "/bin/echo", conn=db).id

    def add(conn: Connection) -> None:
        api.add_tasks([{"app": sim}] * 3, conn=conn)

    def remove(conn: Connection) -> None:
        conn.execute("DELETE FROM apps WHERE id = %s", [sim])

    first, second = race(add, remove, db_dsn, db)  # the removal waits, then sees the tasks
    assert first is None and isinstance(second, NotFound) and "is used by task" in str(second)
    assert tasks(db) == 3
    db.execute("TRUNCATE tasks CASCADE")
    first, second = race(remove, add, db_dsn, db)  # the tasks wait, then find no app
    assert first is None and isinstance(second, NotFound) and f"no app {sim}" in str(second)
    assert tasks(db) == 0
    assert db.execute("SELECT count(*) AS n FROM apps").fetchone()["n"] == 0
