"""The DAG when something fails (migration 0025): a child of a FAILED or USER_KILLED parent fails
too unless it allows failed parents; resets (CREATED, READY) as legacy allowed them; and, over
random DAGs and random outcomes, no task waits for ever or starts before its parents ended."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from balsam import api, dag
from balsam.db import connect
from balsam.errors import InvalidTransition
from balsam.migrate import migrate, migration_files, sync_states
from balsam.models import Event
from balsam.states import FINAL, State
from balsam_testing.launchers import give_back, hold
from balsam_testing.pg import finished, start_blocked

pytestmark = pytest.mark.pg

S = State
RUN = ("STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE")
PROPERTY = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def finish(conn, *ids: int) -> None:
    hold(conn, ids)
    for state in (*RUN, "POSTPROCESSED", "JOB_FINISHED"):
        api.set_state(ids, state, conn=conn)
    give_back(conn, ids)


def fail(conn, *ids: int) -> None:
    hold(conn, ids)
    for state in RUN:
        api.set_state(ids, state, conn=conn)
    api.set_state(ids, "FAILED", message="exit 1", conn=conn)
    give_back(conn, ids)


def events(conn, task) -> list[Event]:
    return [e for e in api.history(task, conn=conn) if isinstance(e, Event)]


def state_of(conn, task) -> tuple[State, str]:
    found = api.get_task(task, conn=conn)
    return found.state, found.state_message


@pytest.fixture
def sim(db):
    return api.add_app("sim", "/bin/true", conn=db)


# --- pure ---------------------------------------------------------------------------------------


def test_which_parents_block_a_child():
    for state in State:
        assert dag.blocks(state) == (state != S.JOB_FINISHED)
        assert dag.blocks(state, True) == (state not in FINAL)


def test_settle_fails_below_a_failed_parent_and_releases_what_allows_it():
    edges = [(1, 2), (2, 3), (1, 4), (5, 4), (4, 6)]
    states = {1: S.FAILED, 2: S.AWAITING_PARENTS, 3: S.AWAITING_PARENTS,
              4: S.AWAITING_PARENTS, 5: S.RUNNING, 6: S.AWAITING_PARENTS}
    assert dag.settle(states, edges, {4: True}) == {
        1: S.FAILED, 2: S.FAILED, 3: S.FAILED, 4: S.AWAITING_PARENTS, 5: S.RUNNING,
        6: S.AWAITING_PARENTS}
    states[5] = S.JOB_FINISHED
    assert dag.settle(states, edges, {4: True})[4] == S.READY
    assert dag.settle({1: S.READY, 2: S.READY}, [(1, 2)], claimed=[2])[2] == S.READY
    assert dag.settle({1: S.READY, 2: S.READY}, [(1, 2)])[2] == S.AWAITING_PARENTS


# --- against the database -----------------------------------------------------------------------


def test_a_failed_parent_fails_the_waiting_tasks_below_it_naming_their_parent(db, sim):
    parent, other = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[parent, other], conn=db).id
    grandchild = api.add_task(sim, parents=[child], conn=db).id
    fail(db, parent)
    assert state_of(db, child) == (S.FAILED, f"parent {parent} is FAILED")
    assert state_of(db, grandchild) == (S.FAILED, f"parent {child} is FAILED")
    moves = [(e.from_state, e.to_state) for e in events(db, grandchild)]
    assert moves == [(None, "AWAITING_PARENTS"), ("AWAITING_PARENTS", "FAILED")]


def test_killing_a_parent_alone_fails_its_children(db, sim):
    parent = api.add_task(sim, conn=db).id
    child = api.add_task(sim, parents=[parent], conn=db).id
    api.kill([parent], conn=db)
    assert state_of(db, child) == (S.FAILED, f"parent {parent} is USER_KILLED")


def test_a_task_that_allows_failed_parents_runs_once_every_parent_ended(db, sim):
    bad, slow = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[bad, slow], allow_failed_parents=True, conn=db).id
    below = api.add_task(sim, parents=[child], conn=db).id
    fail(db, bad)
    assert state_of(db, child)[0] == S.AWAITING_PARENTS
    assert api.waiting_reasons([child], conn=db) == {child: f"waiting for parent {slow} (READY)"}
    finish(db, slow)
    assert state_of(db, child) == (S.READY, "all parents ended, not all finished")
    assert state_of(db, below)[0] == S.AWAITING_PARENTS
    finish(db, child)
    assert state_of(db, below) == (S.READY, "all parents finished")


def test_the_option_is_a_task_field_and_changing_it_settles_a_waiting_task(db, sim):
    bad, slow = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    fail(db, bad)
    allowed = api.add_task(sim, parents=[bad], allow_failed_parents="yes", conn=db)
    assert allowed.allow_failed_parents and allowed.state == S.READY
    assert allowed.state_message == "all parents ended, not all finished"
    waiting = api.add_task(sim, parents=[bad, slow], allow_failed_parents=True, conn=db).id
    api.modify_task(waiting, "allow_failed_parents", "false", conn=db)
    assert state_of(db, waiting) == (S.FAILED, f"parent {bad} is FAILED")
    api.modify_task(allowed, "allow-failed-parents", False, conn=db)
    assert state_of(db, allowed) == (S.FAILED, f"parent {bad} is FAILED")


def test_a_new_dependency_on_a_failed_parent(db, sim):
    bad = api.add_task(sim, conn=db).id
    fail(db, bad)
    doomed, tolerant = api.add_tasks([{"app": "sim"}, {"app": "sim",
                                                       "allow_failed_parents": True}], conn=db)
    assert api.add_dependency(bad, doomed, conn=db).state == S.FAILED
    assert api.add_dependency(bad, tolerant, conn=db).state == S.READY
    waiting = api.add_task(sim, parents=[api.add_task(sim, conn=db)], conn=db).id
    assert api.add_dependency(bad, waiting, conn=db).state == S.FAILED


def test_resetting_a_failed_parent_wakes_what_failed_because_of_it(db, sim):
    a, b = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[a], conn=db).id
    both = api.add_task(sim, parents=[a, b], conn=db).id
    below = api.add_task(sim, parents=[child], conn=db).id
    ran = api.add_task(sim, conn=db).id
    fail(db, a, b, ran)
    api.add_dependency(a, api.add_task(sim, conn=db), conn=db)
    api.set_state([a], "READY", message="fixed the input", conn=db)
    assert state_of(db, child) == (S.AWAITING_PARENTS, "a parent was reset")
    assert state_of(db, below) == (S.AWAITING_PARENTS, "a parent was reset")
    assert state_of(db, both) == (S.FAILED, f"parent {b} is FAILED")  # b still failed
    finish(db, a)
    assert state_of(db, child) == (S.READY, "all parents finished")
    assert state_of(db, ran)[0] == S.FAILED  # it ran and failed on its own


def test_reset_to_created_starts_afresh_and_is_refused_while_hold(db, sim):
    parent = api.add_task(sim, conn=db).id
    child = api.add_task(sim, parents=[parent], conn=db).id
    finish(db, parent)
    finish(db, child)
    db.execute("UPDATE tasks SET attempts = 3 WHERE id = %s", [child])
    api.set_state([child], "CREATED", message="new input", conn=db)
    found = api.get_task(child, conn=db)
    assert (found.state, found.attempts, found.state_message) == (
        S.READY, 0, "reset: runs again from the start")
    moves = [(e.from_state, e.to_state, e.message) for e in events(db, child)][-2:]
    assert moves == [("JOB_FINISHED", "CREATED", "new input"),
                     ("CREATED", "READY", "reset: runs again from the start")]
    api.set_state([parent], "CREATED", conn=db)  # its READY child waits for it again
    assert state_of(db, child) == (S.AWAITING_PARENTS, "a parent was reset")
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [launcher, parent])
    with pytest.raises(InvalidTransition, match=f"task {parent} is held by launcher {launcher}"):
        api.set_state([parent], "CREATED", conn=db)
    assert api.get_task(parent, conn=db).state == S.READY


def test_a_reset_finished_parent_leaves_claimed_children_alone(db, sim):
    parent = api.add_task(sim, conn=db).id
    free, claimed = api.add_tasks([{"app": "sim", "parents": [parent]}] * 2, conn=db)
    finish(db, parent)
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [launcher, claimed])
    api.set_state([parent], "READY", conn=db)
    assert state_of(db, free)[0] == S.AWAITING_PARENTS
    assert state_of(db, claimed)[0] == S.READY


def test_a_deep_chain_fails_and_wakes_in_one_walk(db, sim):
    """A chain of 1000 tasks, just inserted (stale statistics): failing its head fails the chain
    in one walk (not one nested trigger per level, which would exhaust the server's stack), and
    resetting the head wakes it again."""
    ids = [api.add_task(sim, conn=db).id]
    ids += api.add_tasks([{"app": "sim"}] * 999, conn=db)
    db.execute("INSERT INTO task_parents (parent_id, child_id) "
               "SELECT unnest(%s::bigint[]), unnest(%s::bigint[])", [ids[:-1], ids[1:]])
    assert api.count_by_state(ids=ids, conn=db) == {S.READY: 1, S.AWAITING_PARENTS: 999}
    hold(db, ids[:1])
    for state in RUN:
        api.set_state([ids[0]], state, conn=db)
    api.set_state([ids[0]], "FAILED", conn=db)
    give_back(db, ids[:1])
    assert api.count_by_state(ids=ids, conn=db) == {S.FAILED: 1000}
    assert api.get_task(ids[-1], conn=db).state_message == f"parent {ids[-2]} is FAILED"
    api.set_state([ids[0]], "READY", conn=db)
    assert api.count_by_state(ids=ids, conn=db) == {S.READY: 1, S.AWAITING_PARENTS: 999}


def test_an_allowing_child_released_when_two_parents_end_at_once(db_dsn, db, sim):
    """One parent fails while the other finishes, in two transactions: the second to commit
    sees the first (the child is locked first), so the child never waits for ever."""
    a, b = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[a, b], allow_failed_parents=True, conn=db).id
    strict = api.add_task(sim, parents=[a, b], conn=db).id
    hold(db, [a, b])
    for state in RUN:
        api.set_state([a, b], state, conn=db)
    api.set_state([b], "POSTPROCESSED", conn=db)
    with connect(db_dsn) as first, connect(db_dsn) as second:
        with first.transaction():
            api.set_state([a], "FAILED", conn=first)
            thread = start_blocked(lambda: api.set_state([b], "JOB_FINISHED", conn=second),
                                   second, first, db)  # it waits for our lock on the children
        finished(thread)
    assert state_of(db, child)[0] == S.READY
    assert state_of(db, strict) == (S.FAILED, f"parent {a} is FAILED")


def test_children_waiting_on_failed_parents_fail_when_the_migration_runs(pg_server):
    """A project upgraded from before 0025: its waiting children of failed parents fail."""
    name = f"legacy_upgrade_{id(pg_server)}"
    with connect(pg_server.dsn()) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(pg_server.dsn(name)) as conn:
            conn.execute("CREATE TABLE balsam_migrations (package text, name text, "
                         "applied_at timestamptz DEFAULT now(), PRIMARY KEY (package, name))")
            for file, text in migration_files("balsam"):
                if file >= "0025":
                    break
                conn.execute(sql.SQL(text))  # type: ignore[arg-type]
                conn.execute("INSERT INTO balsam_migrations (package, name) VALUES "
                             "('balsam', %s)", [file])
            sync_states(conn)
            conn.execute("DELETE FROM task_transitions WHERE from_state = 'AWAITING_PARENTS' "
                         "AND to_state = 'FAILED'")  # as before 0025
            app = conn.execute("INSERT INTO apps (name, executable) VALUES ('a', 'x') "
                               "RETURNING id").fetchone()["id"]
            parent, child = (conn.execute(
                "INSERT INTO tasks (app_id, state) VALUES (%s, 'READY') RETURNING id",
                [app]).fetchone()["id"] for _ in range(2))
            conn.execute("INSERT INTO task_parents VALUES (%s, %s)", [parent, child])
            hold(conn, [parent])
            for state in (*RUN, "FAILED"):
                conn.execute("UPDATE tasks SET state = %s WHERE id = %s", [state, parent])
            assert state_of(conn, child)[0] == S.AWAITING_PARENTS  # waiting for ever
            applied = migrate(conn, "balsam")
            assert applied[0].startswith("0025")
            assert state_of(conn, child) == (S.FAILED, f"parent {parent} is FAILED")
    finally:
        with connect(pg_server.dsn()) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the property -------------------------------------------------------------------------------

dags = st.integers(min_value=1, max_value=9).flatmap(lambda n: st.tuples(
    st.just(n),
    st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1])),
    st.lists(st.booleans(), min_size=n, max_size=n),
    st.lists(st.sampled_from(["finish", "fail", "kill"]), min_size=n, max_size=n),
    st.lists(st.integers(0, 8), max_size=30)))


@PROPERTY
@given(graph=dags)
def test_every_task_ends_and_none_starts_before_its_parents_ended(db, sim, graph):
    """Random DAGs, random allow_failed_parents, random outcomes (finish, fail, or killed before
    it runs), tasks started in random order as a launcher would: every task ends (none
    waits for ever); none starts while a parent may still finish, or while a parent failed
    unless it allows that; and the end states are the ones ``dag.settle`` predicts."""
    db.execute("TRUNCATE tasks, task_parents, task_events CASCADE")
    n, index_edges, allow, outcome, picks = graph
    ids = api.add_tasks([{"app": "sim", "allow_failed_parents": allow[i]} for i in range(n)],
                        conn=db)
    edges = sorted((ids[p], ids[c]) for p, c in index_edges)
    for p, c in edges:
        api.add_dependency(p, c, conn=db)
    index = {t: i for i, t in enumerate(ids)}
    parents = dag.parents_map(edges)
    expected = dag.settle({t: S.AWAITING_PARENTS if parents.get(t) else S.READY for t in ids},
                          edges)
    picks = iter(picks)
    while True:
        ready = api.task_ids(ids=ids, state="READY", conn=db)
        if not ready:
            break
        task = ready[next(picks, 0) % len(ready)]
        states = {t.id: t.state for t in api.get_tasks(ids=parents.get(task, ()), conn=db)}
        assert all(s in FINAL for s in states.values()), (task, states)
        assert allow[index[task]] or all(s == S.JOB_FINISHED for s in states.values())
        how = outcome[index[task]]
        if how == "kill":
            api.kill([task], conn=db)
        else:
            (finish if how == "finish" else fail)(db, task)
        expected[task] = {"finish": S.JOB_FINISHED, "fail": S.FAILED, "kill": S.USER_KILLED}[how]
        expected = dag.settle(expected, edges, dict(zip(ids, allow, strict=True)))
        got = {t.id: t.state for t in api.get_tasks(ids=ids, conn=db)}
        assert got == expected
    assert all(s in FINAL for s in expected.values())


def test_a_waiting_task_killed_alone_fails_nothing_that_allows_it(db, sim):
    parent = api.add_task(sim, conn=db).id
    waiting = api.add_task(sim, parents=[parent], conn=db).id
    tolerant = api.add_task(sim, parents=[waiting], allow_failed_parents=True, conn=db).id
    api.kill([waiting], conn=db)
    assert state_of(db, tolerant) == (S.READY, "all parents ended, not all finished")
