"""The DAG: readiness and cycles as properties against the database, why tasks wait, and the
races between parents finishing and dependencies being added."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balsam import api, dag
from balsam.db import connect
from balsam.errors import CycleError, InvalidTransition
from balsam.states import State
from balsam_testing.pg import finished, start_blocked

pytestmark = pytest.mark.pg

S = State
RUN = ("STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE")
PROPERTY = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


FINISH = (*RUN, "POSTPROCESSED", "JOB_FINISHED")


@pytest.fixture
def sim(db):
    return api.add_app("sim", "/bin/true", conn=db)


def reset(db) -> None:
    db.execute("TRUNCATE tasks, task_parents, task_events CASCADE")


# --- pure helpers -------------------------------------------------------------------------------


def test_find_cycle_and_forest():
    edges = [(1, 2), (2, 3), (1, 4)]
    assert dag.find_cycle(edges, 3, 1) == [3, 1, 2, 3]
    assert dag.find_cycle(edges, 4, 4) == [4, 4]
    assert dag.find_cycle(edges, 4, 3) is None
    roots, children = dag.forest([1, 2, 3, 5], edges)
    assert roots == [1, 5] and children == {1: [2], 2: [3]}


def test_waiting_reason_puts_stuck_parents_first():
    assert dag.waiting_reason([(12, "FAILED")]) == "waiting for parent 12 (FAILED)"
    text = dag.waiting_reason([(3, "RUNNING"), (4, "READY"), (9, "USER_KILLED"), (10, "READY")])
    assert text == "waiting for 4 parents: 9 (USER_KILLED), 3 (RUNNING), 4 (READY) and 1 more"


# --- properties against the database ------------------------------------------------------------

dags = st.integers(min_value=1, max_value=8).flatmap(
    lambda n: st.tuples(st.just(n), st.sets(
        st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1]))))


@PROPERTY
@given(graph=dags, plan=st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=12))
def test_readiness_follows_the_parents(db, sim, walk, graph, plan):
    """Finish or fail READY tasks in any order: a task is READY exactly when it has not started
    and all its parents finished; a failed parent fails the tasks waiting below it."""
    reset(db)
    n, index_edges = graph
    ids: list[int] = []
    for i in range(n):
        parents = [ids[p] for p, c in index_edges if c == i]
        ids.append(api.add_task(sim, name=f"t{i}", parents=parents, conn=db).id)
    edges = [(ids[p], ids[c]) for p, c in index_edges]
    parents = dag.parents_map(edges)
    state = {i: S.AWAITING_PARENTS if parents.get(i) else S.READY for i in ids}
    for pick, succeed in plan:
        ready = sorted(i for i in ids if state[i] == S.READY)
        if not ready:
            break
        task = ready[pick % len(ready)]
        walk(db, [task], FINISH if succeed else RUN)
        if not succeed:
            api.set_state([task], "FAILED", message="exit 1", conn=db)
        state[task] = S.JOB_FINISHED if succeed else S.FAILED
        state = dag.settle(state, edges)
        got = {t.id: t.state for t in api.get_tasks(conn=db)}
        assert got == state
    waiting = [i for i in ids if state[i] == S.AWAITING_PARENTS]
    reasons = api.waiting_reasons(waiting, conn=db)
    for i in waiting:
        unfinished = sorted(p for p in parents[i] if state[p] != S.JOB_FINISHED)
        assert unfinished and not any(state[p] == S.FAILED for p in unfinished)
        assert reasons[i] == dag.waiting_reason([(p, state[p]) for p in unfinished])


@PROPERTY
@given(graph=dags, new=st.tuples(st.integers(0, 7), st.integers(0, 7)))
def test_a_dependency_is_refused_exactly_when_it_closes_a_cycle(db, sim, graph, new):
    reset(db)
    n, index_edges = graph
    ids = api.add_tasks([{"app": "sim"} for _ in range(n)], conn=db)
    edges = [(ids[p], ids[c]) for p, c in sorted(index_edges)]
    for p, c in edges:
        api.add_dependency(p, c, conn=db)
    parent, child = ids[new[0] % n], ids[new[1] % n]
    expected = dag.find_cycle(edges, parent, child)
    if expected is None:
        api.add_dependency(parent, child, conn=db)
        assert parent in api.parents(child, conn=db)
        return
    with pytest.raises(CycleError) as refused:
        api.add_dependency(parent, child, conn=db)
    assert parent not in api.parents(child, conn=db)
    if parent != child:
        path = [int(x) for x in str(refused.value).rsplit(": ", 1)[1].split(" -> ")]
        assert path[0] == path[-1] == parent and path[1] == child
        assert all(pair in edges for pair in pairwise(path[1:]))


# --- cycles -------------------------------------------------------------------------------------


def test_cycle_error_names_the_path(db, sim):
    a, b, c = api.add_tasks([{"app": "sim"}] * 3, conn=db)
    api.add_dependency(a, b, conn=db)
    api.add_dependency(b, c, conn=db)
    with pytest.raises(CycleError, match=f"dependency {c} -> {a} would create a cycle: "
                                         f"{c} -> {a} -> {b} -> {c}"):
        api.add_dependency(c, a, conn=db)
    with pytest.raises(CycleError, match=f"task {a} cannot depend on itself"):
        api.add_dependency(a, a, conn=db)
    assert api.parents(a, conn=db) == []


def test_cycle_check_on_a_deep_lattice_is_fast(db, sim):
    """40 levels of 2 tasks, each depending on both of the level above: 2**40 paths (a search
    that walked paths instead of tasks would never end: the statement timeout ends it)."""
    db.execute("SET statement_timeout = '10s'")
    levels = [api.add_tasks([{"app": "sim"}] * 2, conn=db)]
    for _ in range(39):
        below = api.add_tasks([{"app": "sim", "parents": levels[-1]}] * 2, conn=db)
        levels.append(below)
    with pytest.raises(CycleError, match=f"{levels[-1][0]} -> {levels[0][0]} -> "):
        api.add_dependency(levels[-1][0], levels[0][0], conn=db)
    extra = api.add_task(sim, conn=db)
    api.add_dependency(levels[-1][1], extra, conn=db)
    assert (levels[-1][1], extra.id) in api.edges([extra.id], conn=db)


def test_concurrent_halves_of_a_cycle_cannot_both_commit(db_dsn, db, sim):
    a, b = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    with connect(db_dsn) as first, connect(db_dsn) as second:
        errors: list[Exception] = []
        with first.transaction():
            api.add_dependency(a, b, conn=first)

            def other() -> None:
                try:
                    api.add_dependency(b, a, conn=second)
                except CycleError as exc:
                    errors.append(exc)

            thread = start_blocked(other, second, first, db)
        finished(thread)
    assert len(errors) == 1 and "would create a cycle" in str(errors[0])
    assert api.edges([a, b], conn=db) == [(a, b)]


# --- waiting and releasing ----------------------------------------------------------------------


def test_a_failed_parent_fails_its_child_which_says_why(db, sim, walk):
    good, bad = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[good, bad], conn=db)
    walk(db, [good], FINISH)
    walk(db, [bad], RUN)
    api.set_state([bad], "FAILED", message="exit 1", conn=db)
    failed = api.get_task(child, conn=db)
    assert failed.state == S.FAILED and failed.state_message == f"parent {bad} is FAILED"
    api.set_state([bad], "READY", message="retry", conn=db)
    assert api.get_task(child, conn=db).state == S.AWAITING_PARENTS
    assert api.waiting_reasons([child.id], conn=db) == {
        child.id: f"waiting for parent {bad} (READY)"}
    walk(db, [bad], FINISH)
    assert api.get_task(child, conn=db).state == S.READY


def test_new_parents_for_ready_started_and_claimed_children(db, sim):
    parent, ready, started, claimed = api.add_tasks([{"app": "sim"}] * 4, conn=db)
    assert api.add_dependency(parent, ready, conn=db).state == S.AWAITING_PARENTS
    api.set_state([started], "STAGED_IN", conn=db)
    with pytest.raises(InvalidTransition, match=f"task {started} has already started "
                                                r"\(STAGED_IN\)"):
        api.add_dependency(parent, started, conn=db)
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [launcher, claimed])
    with pytest.raises(InvalidTransition, match=f"claimed by launcher {launcher}"):
        api.add_dependency(parent, claimed, conn=db)
    assert api.parents(started, conn=db) == api.parents(claimed, conn=db) == []


def test_a_killed_waiting_task_reset_to_ready_waits_again(db, sim):
    parent = api.add_task(sim, conn=db)
    child = api.add_task(sim, parents=[parent], conn=db)
    api.kill([child], conn=db)
    api.set_state([child], "READY", conn=db)
    assert api.get_task(child, conn=db).state == S.AWAITING_PARENTS
    moves = [(e.from_state, e.to_state) for e in api.history(child, conn=db)]
    assert moves[-2:] == [("USER_KILLED", "READY"), ("READY", "AWAITING_PARENTS")]


def test_removing_a_dependency_or_a_parent_releases_the_child(db, sim, walk):
    done, running, other = api.add_tasks([{"app": "sim"}] * 3, conn=db)
    walk(db, [done], FINISH)
    child = api.add_task(sim, parents=[done, running], conn=db)
    assert child.state == S.AWAITING_PARENTS
    assert api.remove_dependency(running, child, conn=db).state == S.READY
    orphan = api.add_task(sim, parents=[other, done], conn=db)
    db.execute("DELETE FROM tasks WHERE id = %s", [other])  # as psql would
    assert api.get_task(orphan, conn=db).state == S.READY
    assert api.history(orphan, conn=db)[-1].message == "no unfinished parents left"


def test_bulk_release_of_many_children(db, sim, walk):
    parent = api.add_task(sim, conn=db)
    kids = api.add_tasks([{"app": "sim", "parents": [parent]}] * 2000, conn=db)
    walk(db, [parent.id], FINISH)
    assert api.count_by_state(ids=kids, conn=db) == {S.READY: 2000}


# --- races --------------------------------------------------------------------------------------


def test_two_parents_finishing_at_once_release_the_child(db_dsn, db, sim, walk):
    a, b = api.add_tasks([{"app": "sim"}] * 2, conn=db)
    child = api.add_task(sim, parents=[a, b], conn=db)
    walk(db, [a, b], (*RUN, "POSTPROCESSED"))
    with connect(db_dsn) as first, connect(db_dsn) as second:
        with first.transaction():
            api.set_state([a], "JOB_FINISHED", conn=first)
            thread = start_blocked(lambda: api.set_state([b], "JOB_FINISHED", conn=second),
                                   second, first, db)
        finished(thread)
    assert api.get_task(child, conn=db).state == S.READY


def test_a_parent_finishing_while_a_child_is_added(db_dsn, db, sim, walk):
    parent = api.add_task(sim, conn=db)
    walk(db, [parent.id], (*RUN, "POSTPROCESSED"))
    kids: list = []
    with connect(db_dsn) as first, connect(db_dsn) as second:
        with first.transaction():
            api.set_state([parent], "JOB_FINISHED", conn=first)
            thread = start_blocked(
                lambda: kids.append(api.add_task(sim, parents=[parent], conn=second)),
                second, first, db)
        finished(thread)
    assert api.get_task(kids[0], conn=db).state == S.READY


def test_a_child_added_while_its_parent_finishes(db_dsn, db, sim, walk):
    parent = api.add_task(sim, conn=db)
    walk(db, [parent.id], (*RUN, "POSTPROCESSED"))
    with connect(db_dsn) as first, connect(db_dsn) as second:
        with first.transaction():
            child = api.add_task(sim, parents=[parent], conn=first)
            thread = start_blocked(
                lambda: api.set_state([parent], "JOB_FINISHED", conn=second), second, first, db)
        finished(thread)
    assert api.get_task(child, conn=db).state == S.READY
