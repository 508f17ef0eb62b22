"""The state machine as the database enforces it: every pair of states, and a Hypothesis model
of tasks, dependencies and state changes run against the real database."""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from balsam import api, dag
from balsam.errors import CycleError, InvalidInput, InvalidTransition
from balsam.states import FINAL, INITIAL, TRANSITIONS, State, allowed

pytestmark = pytest.mark.pg

S = State


def path_to(target: State) -> list[State]:
    """The shortest series of allowed moves from an initial state to ``target``."""
    if target in INITIAL:
        return [target]
    seen = {S.READY: [S.READY]}
    queue = deque([S.READY])
    while queue:
        state = queue.popleft()
        for nxt in sorted(TRANSITIONS[state]):
            if nxt not in seen:
                seen[nxt] = seen[state] + [nxt]
                queue.append(nxt)
    return seen[target]


def test_every_state_is_reachable_from_an_initial_one():
    for state in State:
        path = path_to(state)
        assert path[-1] == state and all(allowed(a, b) for a, b in pairwise(path))


def test_the_database_allows_exactly_the_table(db, stand_in):
    app = api.add_app("sim", "/bin/true", conn=db)
    refused = accepted = 0
    for src in State:
        first, *rest = path_to(src)
        # Claimed all along: the transitions are the state machine's to refuse, not the claim's.
        task = db.execute("INSERT INTO tasks (app_id, state, launcher_id) VALUES (%s, %s, %s) "
                          "RETURNING id", [app.id, first.value, stand_in]).fetchone()["id"]
        for step in rest:
            db.execute("UPDATE tasks SET state = %s WHERE id = %s", [step.value, task])
        for dst in State:
            if dst == src:
                continue
            events = len(api.history(task, conn=db))
            try:
                with db.transaction():
                    if dst == S.CREATED and src != S.RUNNING:  # a reset needs a free task
                        db.execute("UPDATE tasks SET launcher_id = NULL WHERE id = %s", [task])
                    api.set_state([task], dst, conn=db)
                    assert allowed(src, dst), f"{src} -> {dst} was accepted"
                    new = [(e.from_state, e.to_state) for e in api.history(task, conn=db)[events:]]
                    if dst == S.AWAITING_PARENTS:  # no parent to wait for: released at once
                        assert new == [(src, dst), (dst, S.READY)]
                    elif dst == S.CREATED:  # a reset: starts afresh at once
                        assert new == [(src, dst), (dst, S.READY)]
                    else:
                        assert new == [(src, dst)]
                    accepted += 1
                    raise psycopg.Rollback
            except InvalidTransition as exc:
                assert not allowed(src, dst), f"{src} -> {dst} was refused: {exc}"
                assert f"{src} -> {dst} is not an allowed transition" in str(exc)
                refused += 1
            assert api.get_task(task, conn=db).state == src
    assert accepted == sum(len(d) for d in TRANSITIONS.values())
    assert accepted + refused == len(State) * (len(State) - 1)


@pytest.mark.parametrize("state", sorted(set(State) - INITIAL))
def test_tasks_cannot_be_created_in_a_later_state(db, stand_in, state):
    app = api.add_app("sim", "/bin/true", conn=db)
    with pytest.raises(psycopg.Error, match=f"created in state {state}") as insert:
        db.execute("INSERT INTO tasks (app_id, state, launcher_id) VALUES (%s, %s, %s)",
                   [app.id, state.value, stand_in])
    with pytest.raises(psycopg.Error, match=f"created in state {state}") as copied:
        with db.cursor().copy("COPY tasks (app_id, state, launcher_id) FROM STDIN") as copy:
            copy.write_row((app.id, "READY", stand_in))
            copy.write_row((app.id, state.value, stand_in))
    assert insert.value.sqlstate == copied.value.sqlstate == "BA001"
    assert db.execute("SELECT count(*) AS n FROM tasks").fetchone()["n"] == 0


# --- the model ----------------------------------------------------------------------------------


class Model:
    """Tasks, edges and the rules of migrations 0002 and 0025, in plain Python (``dag.settle``
    holds the fixpoint the triggers reach)."""

    def __init__(self) -> None:
        self.state: dict[int, State] = {}
        self.allow: dict[int, bool] = {}
        self.edges: set[tuple[int, int]] = set()
        self.doomed: set[int] = set()  # FAILED tasks whose last move was AWAITING_PARENTS -> FAILED

    def parents(self, task: int) -> set[int]:
        return {p for p, c in self.edges if c == task}

    def blocked(self, task: int) -> bool:
        return any(dag.blocks(self.state[p], self.allow[task]) for p in self.parents(task))

    def reaches(self, start: int, goal: int) -> bool:
        todo, seen = [start], {start}
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            for p, c in self.edges:
                if p == node and c not in seen:
                    seen.add(c)
                    todo.append(c)
        return False

    def settle(self) -> None:
        """What the triggers do after a change: waiting tasks fail or are released, unclaimed
        READY tasks with a blocking parent wait."""
        before = dict(self.state)
        self.state = dag.settle(self.state, self.edges, self.allow)
        for task, state in self.state.items():
            if state != before[task] and state == S.FAILED:
                self.doomed.add(task)

    def move(self, task: int, dst: State) -> None:
        """A user moves ``task`` to ``dst`` (an allowed transition)."""
        src = self.state[task]
        self.doomed.discard(task)
        if dst == S.FAILED and src == S.AWAITING_PARENTS:
            self.doomed.add(task)
        self.state[task] = S.READY if dst == S.CREATED else dst  # a reset starts afresh
        if src in dag.DEAD and dst not in FINAL:
            self.wake(task)
        self.settle()

    def wake(self, task: int) -> None:
        """The tasks below ``task`` that failed only because of it wait again."""
        todo = [task]
        while todo:
            node = todo.pop()
            for p, c in sorted(self.edges):
                if p == node and c in self.doomed and self.state[c] == S.FAILED:
                    self.doomed.discard(c)
                    self.state[c] = S.AWAITING_PARENTS
                    todo.append(c)


@pytest.mark.slow
def test_state_machine_against_the_database(db, stand_in):
    app = api.add_app("sim", "/bin/true", conn=db)

    class Tasks(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            db.execute("TRUNCATE tasks, task_parents, task_events CASCADE")
            self.model = Model()

        def ids(self) -> list[int]:
            return sorted(self.model.state)

        @rule(data=st.data(), allow=st.booleans())
        def add_task(self, data: st.DataObject, allow: bool) -> None:
            parents = data.draw(st.lists(st.sampled_from(self.ids()), max_size=3, unique=True)
                                if self.model.state else st.just([]))
            task = api.add_task(app, parents=parents, allow_failed_parents=allow, conn=db)
            self.model.state[task.id] = S.AWAITING_PARENTS if parents else S.READY
            self.model.allow[task.id] = allow
            for p in parents:
                self.model.edges.add((p, task.id))
            self.model.settle()
            assert task.state == self.model.state[task.id]

        @rule()
        def add_created_task(self) -> None:
            row = db.execute("INSERT INTO tasks (app_id, state) VALUES (%s, 'CREATED') "
                             "RETURNING id", [app.id]).fetchone()
            self.model.state[row["id"]] = S.CREATED
            self.model.allow[row["id"]] = False

        @precondition(lambda self: self.model.state)
        @rule(data=st.data())
        def toggle_allow_failed_parents(self, data: st.DataObject) -> None:
            task = data.draw(st.sampled_from(self.ids()))
            self.model.allow[task] = not self.model.allow[task]
            api.modify_task(task, "allow_failed_parents", self.model.allow[task], conn=db)
            self.model.settle()

        @precondition(lambda self: self.model.state)
        @rule(data=st.data(), dst=st.sampled_from(sorted(State)))
        def change_state(self, data: st.DataObject, dst: State) -> None:
            task = data.draw(st.sampled_from(self.ids()))
            current = self.model.state[task]
            if dst != current and not allowed(current, dst):
                with pytest.raises(InvalidTransition):
                    api.set_state([task], dst, conn=db)
                return
            if dst != current and dst == S.RUNNING:  # only a launcher holding the task may
                with pytest.raises(InvalidInput, match="tasks_running_claimed"):
                    api.set_state([task], dst, conn=db)
                return
            changed = api.set_state([task], dst, conn=db)
            assert changed == ([] if dst == current else [task])
            if dst != current:
                self.model.move(task, dst)

        @precondition(lambda self: self.model.state)
        @rule(data=st.data(), succeed=st.booleans())
        def run_or_reset(self, data: st.DataObject, succeed: bool) -> None:
            """The common moves, more often than random ones: a READY task runs to its end,
            an ended task is reset (READY or CREATED)."""
            task = data.draw(st.sampled_from(self.ids()))
            current = self.model.state[task]
            if current == S.READY:
                path = (S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE, S.POSTPROCESSED,
                        S.JOB_FINISHED) if succeed else (S.FAILED,)
            elif current in FINAL:
                path = (S.READY,) if succeed else (S.CREATED,)
            else:
                return
            hold = S.RUNNING in path  # a RUNNING task is always held by a launcher
            if hold:
                db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [stand_in, task])
            for dst in path:
                api.set_state([task], dst, conn=db)
                self.model.move(task, dst)
            if hold:
                db.execute("UPDATE tasks SET launcher_id = NULL WHERE id = %s", [task])

        @precondition(lambda self: self.model.state)
        @rule(data=st.data())
        def add_dependency(self, data: st.DataObject) -> None:
            parent = data.draw(st.sampled_from(self.ids()))
            child = data.draw(st.sampled_from(self.ids()))
            m = self.model
            if (parent, child) in m.edges:
                api.add_dependency(parent, child, conn=db)
            elif parent == child or m.reaches(child, parent):
                with pytest.raises(CycleError):
                    api.add_dependency(parent, child, conn=db)
            elif m.state[child] not in INITIAL:
                with pytest.raises(InvalidTransition, match="has already started"):
                    api.add_dependency(parent, child, conn=db)
            else:
                api.add_dependency(parent, child, conn=db)
                m.edges.add((parent, child))
                if m.state[child] == S.CREATED and m.blocked(child):
                    m.state[child] = S.AWAITING_PARENTS
                elif m.state[child] == S.CREATED:
                    m.state[child] = S.READY
                m.settle()

        @precondition(lambda self: self.model.edges)
        @rule(data=st.data())
        def remove_dependency(self, data: st.DataObject) -> None:
            parent, child = data.draw(st.sampled_from(sorted(self.model.edges)))
            api.remove_dependency(parent, child, conn=db)
            self.model.edges.discard((parent, child))
            self.model.settle()

        @precondition(lambda self: self.model.state)
        @rule(data=st.data())
        def kill(self, data: st.DataObject) -> None:
            task = data.draw(st.sampled_from(self.ids()))
            killed = api.kill([task], conn=db)
            assert killed == ([] if self.model.state[task] in FINAL else [task])
            if killed:
                self.model.move(task, S.USER_KILLED)

        @invariant()
        def database_matches_model(self) -> None:
            rows = db.execute("SELECT id, state FROM tasks").fetchall()
            assert {r["id"]: r["state"] for r in rows} == self.model.state
            edges = db.execute("SELECT parent_id, child_id FROM task_parents").fetchall()
            assert {(r["parent_id"], r["child_id"]) for r in edges} == self.model.edges

        @invariant()
        def history_is_a_chain_ending_in_the_state(self) -> None:
            events = db.execute("SELECT task_id, from_state, to_state FROM task_events "
                                "ORDER BY id").fetchall()
            last: dict[int, str | None] = {}
            for e in events:
                assert e["from_state"] == last.get(e["task_id"]), e
                assert e["from_state"] is None or allowed(S(e["from_state"]), S(e["to_state"]))
                last[e["task_id"]] = e["to_state"]
            assert last == self.model.state

        @invariant()
        def waiting_means_a_parent_that_may_still_finish(self) -> None:
            m = self.model
            for task, state in m.state.items():
                if state == S.AWAITING_PARENTS:
                    assert m.blocked(task)
                    assert m.allow[task] or not any(m.state[p] in dag.DEAD
                                                    for p in m.parents(task))
                if state == S.READY:  # nothing here is claimed: READY may start now
                    assert not m.blocked(task), task

    run_state_machine_as_test(Tasks, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
