"""The Python API against a real database: apps, tasks, bulk insert, queries, changes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psycopg
import pytest
from psycopg import sql

from balsam import api, bulk
from balsam.db import connect
from balsam.errors import AlreadyExists, InvalidInput, InvalidTransition, NotFound, ServerDown
from balsam.models import Change
from balsam.states import State

pytestmark = pytest.mark.pg


COUNT = sql.SQL("SELECT count(*) AS n FROM {}")


def counts(db) -> dict[str, int]:
    """Rows in the tables a failed call must leave untouched."""
    return {t: db.execute(COUNT.format(sql.Identifier(t))).fetchone()["n"]
            for t in ("apps", "tasks", "task_parents", "task_events", "changes")}


#: From READY to JOB_FINISHED, as a launcher would move a task (the walk fixture).
FINISH = ("STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE", "POSTPROCESSED", "JOB_FINISHED")


@pytest.fixture
def sim(db):
    return api.add_app("sim", "/bin/echo", description="echoes", conn=db)


# --- apps ---------------------------------------------------------------------------------------


def test_app_round_trip(db):
    created = api.add_app("sim", "/bin/echo", preprocess="pre.sh", envscript="env.sh", conn=db)
    assert created.id is not None and created.owner == "postgres"
    assert api.get_app("sim", conn=db) == created
    assert api.get_app(created.id, conn=db) == created
    changed = api.modify_app("sim", "executable", "/bin/cat", conn=db)
    assert changed.executable == "/bin/cat"
    renamed = api.modify_app("sim", "name", "cat", conn=db)
    assert api.get_app("cat", conn=db).id == renamed.id == created.id


def test_duplicate_and_unknown_apps_change_nothing(db, sim):
    before = counts(db)
    with pytest.raises(AlreadyExists, match="app 'sim' already exists"):
        api.add_app("sim", "/bin/true", conn=db)
    with pytest.raises(NotFound, match="unknown app 'nope'"):
        api.get_app("nope", conn=db)
    with pytest.raises(InvalidInput, match="executable may not be empty"):
        api.add_app("other", " ", conn=db)
    api.add_app("other", "/bin/true", conn=db)
    with pytest.raises(AlreadyExists, match="app 'sim' already exists"):
        api.modify_app("other", "name", "sim", conn=db)
    with pytest.raises(InvalidInput, match="unknown app field 'colour'"):
        api.modify_app("other", "colour", "red", conn=db)
    assert counts(db) == {**before, "apps": before["apps"] + 1}


def test_remove_app_refused_while_used_unless_forced(db, sim):
    task = api.add_task("sim", name="a", conn=db)
    with pytest.raises(InvalidInput, match=rf"used by 1 task\(s\) \({task.id}\)"):
        api.remove_app("sim", conn=db)
    assert api.get_task(task.id, conn=db).app_name == "sim"
    assert api.remove_app("sim", force=True, conn=db) == [task.id]
    assert counts(db)["tasks"] == 0 and api.list_apps(conn=db) == []


def test_list_apps_counts_tasks(db, sim):
    api.add_app("idle", "/bin/true", conn=db)
    api.add_tasks([{"app": "sim"}] * 3, conn=db)
    assert [(a.name, n) for a, n in api.list_apps(conn=db)] == [("idle", 0), ("sim", 3)]


# --- creating tasks -----------------------------------------------------------------------------


def test_add_task_fields_and_workdir(db, sim):
    task = api.add_task(sim, name="run", workflow="wf", args="-n 3", num_nodes="4",
                        ranks_per_node=2, wall_time_minutes=30, data='{"x": [1, 2]}',
                        env=["OMP_NUM_THREADS=4", "MODE=fast"], post_error_handler="yes",
                        auto_timeout_retry=False, input_files="*.dat", conn=db)
    assert (task.state, task.num_nodes, task.ranks_per_node, task.app_name) == \
        (State.READY, 4, 2, "sim")
    assert task.data == {"x": [1, 2]}
    assert task.environ_vars == {"OMP_NUM_THREADS": "4", "MODE": "fast"}
    assert task.post_error_handler and not task.auto_timeout_retry
    assert task.workdir == f"data/wf/run_{task.id}"
    pinned = api.add_task("sim", name="x", workdir="/scratch/x", conn=db)
    assert pinned.workdir == "/scratch/x"


@pytest.mark.parametrize(("fields", "error"), [
    ({"num_nodes": -2}, "num_nodes must be between 1 and 100,000, got -2"),
    ({"ranks_per_node": 0}, "ranks_per_node must be between 1 and 10,000, got 0"),
    ({"wall_time_minutes": "soon"}, "wall_time_minutes must be an integer"),
    ({"data": "{oops"}, "data is not valid JSON"),
    ({"data": "[1, 2]"}, "data must be a JSON object"),
    ({"env": ["NOEQUALS"]}, "must look like NAME=VALUE"),
    ({"env": {"1BAD": "x"}}, "invalid environment variable name '1BAD'"),
    ({"workflow": "../escape"}, "may not contain '/'"),
    ({"colour": "red"}, "unknown task field 'colour'"),
    ({"post_error_handler": "maybe"}, "must be true or false"),
])
def test_bad_task_input_is_refused_and_writes_nothing(db, sim, fields, error):
    before = counts(db)
    with pytest.raises(InvalidInput, match=error):
        api.add_task("sim", name="bad", conn=db, **fields)
    assert counts(db) == before


def test_unknown_app_or_parent_writes_nothing(db, sim):
    before = counts(db)
    with pytest.raises(NotFound, match="unknown app 'ghost'"):
        api.add_task("ghost", conn=db)
    with pytest.raises(NotFound, match="no parent task 999"):
        api.add_task("sim", parents=[999], conn=db)
    with pytest.raises(InvalidInput, match="a task needs an app"):
        api.add_tasks([{"name": "x"}], conn=db)
    assert counts(db) == before


def test_add_tasks_bulk_keeps_order_parents_and_events(db, sim, walk):
    parent = api.add_task("sim", name="p", conn=db)
    specs = [{"app": "sim", "name": f"t{i}", "workflow": "bulk", "num_nodes": 1 + i % 3,
              "parents": [parent.id] if i % 2 else []} for i in range(500)]
    ids = api.add_tasks(specs, conn=db)
    assert len(ids) == 500 and ids == sorted(ids)
    tasks = {t.id: t for t in api.get_tasks(workflow="bulk", conn=db)}
    for i, task_id in enumerate(ids):
        task = tasks[task_id]
        assert (task.name, task.num_nodes) == (f"t{i}", 1 + i % 3)
        assert task.state == (State.AWAITING_PARENTS if i % 2 else State.READY)
    assert sorted(api.children(parent, conn=db)) == ids[1::2]
    assert counts(db)["task_events"] == 501
    walk(db, [parent.id], FINISH)
    assert api.count_by_state(workflow="bulk", conn=db) == {State.READY: 500}


def test_add_tasks_is_all_or_nothing(db, sim):
    before = counts(db)
    specs = [{"app": "sim", "name": f"t{i}"} for i in range(100)]
    specs[60]["num_nodes"] = 0
    with pytest.raises(InvalidInput, match="num_nodes must be between 1 and 100,000"):
        api.add_tasks(specs, conn=db)
    specs[60]["num_nodes"] = 1
    specs[70]["parents"] = [12345]
    with pytest.raises(NotFound, match="no parent task 12345"):
        api.add_tasks(specs, conn=db)
    assert counts(db) == before
    assert api.add_tasks([], conn=db) == []


def test_add_tasks_in_an_outer_transaction_twice(db, sim):
    with db.transaction():
        first = api.add_tasks([{"app": "sim"}] * 3, conn=db)
        second = api.add_tasks([{"app": "sim"}] * 3, conn=db)
    assert len(set(first + second)) == 6


def test_tasks_with_finished_parents_start_ready(db, sim, walk):
    parent = api.add_task("sim", conn=db)
    walk(db, [parent.id], FINISH)
    child = api.add_task("sim", parents=[parent], conn=db)
    assert child.state == State.READY
    assert [e.message for e in api.history(child, conn=db)] == ["", "all parents finished"]


# --- reading ------------------------------------------------------------------------------------


def test_filters_limit_and_counts(db, sim):
    api.add_app("other", "/bin/true", conn=db)
    api.add_tasks([{"app": "sim", "name": f"alpha{i}", "workflow": "a"} for i in range(5)]
                  + [{"app": "other", "name": f"beta{i}", "workflow": "b"} for i in range(3)],
                  conn=db)
    assert len(api.get_tasks(conn=db)) == 8
    assert [t.name for t in api.get_tasks(workflow="b", conn=db)] == ["beta0", "beta1", "beta2"]
    assert [t.name for t in api.get_tasks(name="ha3", conn=db)] == ["alpha3"]
    assert len(api.get_tasks(app="other", conn=db)) == 3
    assert len(api.get_tasks(limit=2, conn=db)) == 2
    first = api.get_tasks(limit=1, conn=db)[0]
    assert api.get_tasks(ids=[first.id], conn=db) == [first]
    api.kill([first], conn=db)
    assert api.count_by_state(conn=db) == {State.READY: 7, State.USER_KILLED: 1}
    assert api.count_by_state(state=["user_killed"], conn=db) == {State.USER_KILLED: 1}
    assert api.count_by_workflow(conn=db)["b"] == {State.READY: 3}
    with pytest.raises(InvalidInput, match="invalid state 'DONE'"):
        api.get_tasks(state="DONE", conn=db)
    with pytest.raises(NotFound, match="no task 424242"):
        api.get_task(424242, conn=db)


# --- changing tasks -----------------------------------------------------------------------------


def test_modify_task_fields_and_state(db, sim):
    task = api.add_task("sim", name="a", workflow="w", conn=db)
    assert api.modify_task(task.id, "num-nodes", "8", conn=db).num_nodes == 8
    assert api.modify_task(task.id, "data", '{"k": 1}', conn=db).data == {"k": 1}
    api.add_app("other", "/bin/true", conn=db)
    assert api.modify_task(task.id, "app", "other", conn=db).app_name == "other"
    killed = api.modify_task(task.id, "state", "user_killed", message="stop", conn=db)
    assert killed.state == State.USER_KILLED
    with pytest.raises(InvalidTransition, match="USER_KILLED -> RUNNING is not an allowed"):
        api.modify_task(task.id, "state", "RUNNING", conn=db)
    with pytest.raises(InvalidInput, match="invalid state 'gone'"):
        api.modify_task(task.id, "state", "gone", conn=db)
    with pytest.raises(InvalidInput, match="num_nodes must be between 1 and 100,000"):
        api.modify_task(task.id, "num_nodes", "-1", conn=db)
    with pytest.raises(NotFound, match="no task 999"):
        api.modify_task(999, "name", "x", conn=db)
    assert api.get_task(task.id, conn=db).num_nodes == 8


def test_renaming_a_started_task_keeps_its_directory(db, sim, walk):
    fresh = api.add_task("sim", name="a", workflow="w", conn=db)
    assert api.modify_task(fresh.id, "name", "b", conn=db).workdir == f"data/w/b_{fresh.id}"
    started = api.add_task("sim", name="a", workflow="w", conn=db)
    walk(db, [started.id], FINISH)
    renamed = api.modify_task(started.id, "workflow", "v", conn=db)
    assert (renamed.workflow, renamed.workdir) == ("v", f"data/w/a_{started.id}")


def test_a_claimed_task_cannot_be_modified(db, sim):
    task = api.add_task("sim", conn=db)
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [launcher, task.id])
    with pytest.raises(InvalidInput, match=f"held by launcher {launcher}"):
        api.modify_task(task.id, "num_nodes", 2, conn=db)


def test_set_state_is_all_or_nothing(db, sim, walk):
    a, b = api.add_tasks([{"app": "sim"}, {"app": "sim"}], conn=db)
    walk(db, [a], FINISH)
    with pytest.raises(InvalidTransition, match=f"task {a}: JOB_FINISHED -> STAGED_IN"):
        api.set_state([a, b], "STAGED_IN", conn=db)
    assert api.get_task(b, conn=db).state == State.READY
    with pytest.raises(NotFound, match="no task 777"):
        api.set_state([b, 777], "STAGED_IN", conn=db)
    assert api.set_state([b], "READY", conn=db) == []


def test_kill_notifies_launchers_and_skips_ended_tasks(db, db_dsn, sim, walk):
    running, done = api.add_tasks([{"app": "sim"}, {"app": "sim"}], conn=db)
    walk(db, [running], ("STAGED_IN", "PREPROCESSED", "RUNNING"))
    walk(db, [done], FINISH)
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN balsam_kill")
        assert api.kill([running, done], message="enough", conn=db) == [running]
        payloads = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads == [str(running)]
    last = api.history(running, conn=db)[-1]
    assert (last.from_state, last.to_state, last.message) == ("RUNNING", "USER_KILLED", "enough")


def test_history_records_user_and_fresh_messages(db, sim):
    task = api.add_task("sim", conn=db)
    api.set_state([task], "STAGED_IN", message="staged", conn=db)
    db.execute("UPDATE tasks SET state = 'PREPROCESSED' WHERE id = %s", [task.id])
    events = api.history(task, conn=db)
    assert [(e.from_state, e.to_state, e.message, e.db_user) for e in events] == [
        (None, "READY", "", "postgres"),
        ("READY", "STAGED_IN", "staged", "postgres"),
        ("STAGED_IN", "PREPROCESSED", "", "postgres"),  # not the stale "staged"
    ]
    assert events[0].at < events[1].at < events[2].at
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET state = 'RUNNING', launcher_id = %s, state_message = 'on h' "
               "WHERE id = %s", [launcher, task.id])
    last = api.history(task, conn=db)[-1]
    assert (last.to_state, last.launcher_id, last.message) == ("RUNNING", launcher, "on h")
    with pytest.raises(NotFound):
        api.history(31337, conn=db)


def test_history_merges_state_changes_and_changes_of_what_runs(db, sim):
    task = api.add_task("sim", args="-v", conn=db)
    assert (task.changed_by, task.changed_at) == ("postgres", task.created_at)
    api.modify_task(task, "args", "-q", conn=db)
    api.set_state([task], "USER_KILLED", conn=db)
    api.modify_task(task, "env", "A=1", conn=db)
    api.modify_task(task, "num_nodes", 2, conn=db)  # not what a launcher executes: not recorded
    api.modify_app("sim", "postprocess", "post.sh", conn=db)
    entries = api.history(task, conn=db)
    assert [getattr(e, "field", None) or e.to_state for e in entries] == [  # type: ignore[union-attr]
        "READY", "args", "USER_KILLED", "environ_vars"]
    assert [(c.old_value, c.new_value) for c in entries if isinstance(c, Change)] == [
        ("-v", "-q"), ("{}", '{"A": "1"}')]
    changed = api.get_task(task, conn=db)
    assert changed.changed_by == "postgres" and changed.changed_at > task.changed_at
    app = api.get_app("sim", conn=db)
    assert app.changed_at is not None and app.changed_at > app.created_at
    assert [(c.field, c.new_value) for c in api.app_history("sim", conn=db)] == [
        ("postprocess", "post.sh")]
    with pytest.raises(NotFound, match="unknown app 'ghost'"):
        api.app_history("ghost", conn=db)
    with pytest.raises(NotFound, match="unknown app 4242"):
        api.app_history(4242, conn=db)


def test_remove_tasks(db, sim):
    parent, other = api.add_tasks([{"app": "sim", "workflow": "w"}, {"app": "sim"}], conn=db)
    child = api.add_task("sim", parents=[parent], conn=db)
    with pytest.raises(InvalidInput, match="say which tasks"):
        api.remove_tasks(conn=db)
    with pytest.raises(InvalidInput, match=f"{child.id} waits for {parent}"):
        api.remove_tasks(workflow="w", conn=db)
    assert api.get_task(parent, conn=db).state == State.READY
    assert api.remove_tasks(ids=[parent], recursive=True, conn=db) == [parent, child.id]
    with pytest.raises(NotFound):
        api.remove_tasks(ids=[parent], conn=db)
    assert api.remove_tasks(all_tasks=True, conn=db) == [other]
    # Their history stays: three creations, three removals.
    assert counts(db) == {"apps": 1, "tasks": 0, "task_parents": 0, "task_events": 3,
                          "changes": 3}


# --- the active project, from scripts and from inside tasks -------------------------------------


def test_default_connection_is_the_active_project(project, monkeypatch):
    api.add_app("sim", "/bin/echo")
    parent = api.add_task("sim", name="parent", workflow="w")
    assert api.connection() is api.connection()
    monkeypatch.setenv("BALSAM_TASK_ID", str(parent.id))
    assert api.current_task() == parent
    child = api.spawn_child("sim", name="child")
    assert (child.workflow, child.state) == ("w", State.AWAITING_PARENTS)
    assert api.parents(child) == [parent.id]
    assert api.workdir(child) == project.root / f"data/w/child_{child.id}"
    monkeypatch.delenv("BALSAM_TASK_ID")
    with pytest.raises(InvalidInput, match="not inside a balsam task"):
        api.current_task()
    first = api.connection()
    api.disconnect()
    assert first.closed and api.connection() is not first
    assert [t.id for t in api.get_tasks()] == [parent.id, child.id]


def test_a_running_task_adds_tasks_from_its_own_process(project):
    api.add_app("sim", "/bin/echo")
    me = api.add_task("sim", name="me", workflow="w")
    script = ("from balsam import api\n"
              "kids = [api.spawn_child('sim', name=f'kid{i}').id for i in range(3)]\n"
              "print(kids)\n")
    env = {**os.environ, "BALSAM_TASK_ID": str(me.id)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    kids = [t.id for t in api.get_tasks(name="kid")]
    assert out.stdout.strip() == str(kids) and len(kids) == 3
    assert sorted(api.children(me)) == kids


def test_connection_recovers_after_a_server_restart(project, pg_server):
    api.add_app("sim", "/bin/echo")
    api.connection().execute("CHECKPOINT")  # the test cluster runs with synchronous_commit=off
    pg_server.restart()
    with pytest.raises(ServerDown, match="database connection lost"):
        api.get_app("sim")
    assert api.get_app("sim").name == "sim"


def test_concurrent_bulk_inserts_map_ids_to_their_rows(db_dsn, db, sim):
    results: dict[int, list[int]] = {}

    def writer(k: int) -> None:
        with connect(db_dsn) as conn:
            results[k] = api.add_tasks([{"app": "sim", "name": f"w{k}-{i}"} for i in range(300)],
                                       conn=conn)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = {t.id: t.name for t in api.get_tasks(conn=db)}
    assert len(names) == 900
    for k, ids in results.items():
        assert [names[i] for i in ids] == [f"w{k}-{i}" for i in range(300)]


def test_bulk_rows_validate_each_value_by_its_type(db, sim):
    """A value seen before is not re-validated, but True is not 1 for an integer field."""
    with pytest.raises(InvalidInput, match="task 2: num_nodes must be an integer, got True"):
        api.add_tasks([{"app": "sim", "num_nodes": 1}, {"app": "sim", "num_nodes": True}],
                      conn=db)
    ids = api.add_tasks(({"app": "sim", "workflow": "w", "num_nodes": 2} for _ in range(3)),
                        conn=db)
    assert [t.num_nodes for t in api.get_tasks(ids=ids, conn=db)] == [2, 2, 2]


def test_checking_tasks_is_adding_them_rolled_back(db, sim):
    """``balsam job --dry-run``: the same checks and errors as adding, and nothing added."""
    parent = api.add_task("sim", name="p", conn=db)
    before = counts(db)
    specs = [{"app": "sim", "name": f"t{i}", "parents": [parent.id]} for i in range(3)]
    assert bulk.check_tasks(db, specs) == 3
    assert bulk.check_tasks(db, specs[:1]) == 1
    assert counts(db) == before
    for bad, error in (({"app": "nope"}, "task 2: unknown app 'nope'"),
                       ({"app": "sim", "name": "a/b"}, "task 2: name 'a/b' may not contain"),
                       ({"app": "sim", "parents": [parent.id + 99]}, "no parent task")):
        with pytest.raises((InvalidInput, NotFound), match=error) as caught:
            bulk.check_tasks(db, [specs[0], bad])
        with pytest.raises(type(caught.value), match=error):
            api.add_tasks([specs[0], bad], conn=db)
    assert counts(db) == before


def test_blocks_are_bounded_in_characters(monkeypatch):
    """Rows with large values end a block sooner: memory holds a few blocks of bounded size."""

    class Rows:
        count = 0

        def row(self, spec):
            return spec

    monkeypatch.setattr(bulk, "BLOCK", 4)
    monkeypatch.setattr(bulk, "BLOCK_CHARS", 10)
    rows = ["ab", "c", "d", "e", "f", "x" * 12, "g", "h" * 9, "i"]
    assert [len(b) for b in bulk._blocks(Rows(), rows, None)] == [4, 2, 2, 1]
