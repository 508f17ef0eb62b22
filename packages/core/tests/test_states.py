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

from balsam import api
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
                    api.set_state([task], dst, conn=db)
                    assert allowed(src, dst), f"{src} -> {dst} was accepted"
                    new = [(e.from_state, e.to_state) for e in api.history(task, conn=db)[events:]]
                    if dst == S.AWAITING_PARENTS:  # no parent to wait for: released at once
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

#: States in which a task can have no unfinished parent (it waited for them, or never had any).
CLEAR = frozenset(State) - {S.CREATED, S.AWAITING_PARENTS, S.USER_KILLED}


class Model:
    """Tasks, edges and the rules of migration 0002, in plain Python."""

    def __init__(self) -> None:
        self.state: dict[int, State] = {}
        self.edges: set[tuple[int, int]] = set()

    def parents(self, task: int) -> set[int]:
        return {p for p, c in self.edges if c == task}

    def unfinished(self, task: int) -> bool:
        return any(self.state[p] != S.JOB_FINISHED for p in self.parents(task))

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

    def settle(self, task: int) -> None:
        """What the triggers do after ``task`` entered its state."""
        state = self.state[task]
        if state == S.READY and self.unfinished(task):
            self.state[task] = S.AWAITING_PARENTS
        elif state == S.AWAITING_PARENTS and not self.unfinished(task):
            self.state[task] = S.READY
        elif state == S.JOB_FINISHED:
            for p, c in sorted(self.edges):
                if p == task and self.state[c] == S.AWAITING_PARENTS and not self.unfinished(c):
                    self.state[c] = S.READY

    def add_edge(self, parent: int, child: int) -> None:
        self.edges.add((parent, child))
        if self.state[child] in (S.CREATED, S.READY) and self.state[parent] != S.JOB_FINISHED:
            self.state[child] = S.AWAITING_PARENTS
        if self.state[child] in (S.CREATED, S.AWAITING_PARENTS) and not self.unfinished(child):
            self.state[child] = S.READY


@pytest.mark.slow
def test_state_machine_against_the_database(db):
    app = api.add_app("sim", "/bin/true", conn=db)

    class Tasks(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            db.execute("TRUNCATE tasks, task_parents, task_events CASCADE")
            self.model = Model()

        def ids(self) -> list[int]:
            return sorted(self.model.state)

        @rule(data=st.data())
        def add_task(self, data: st.DataObject) -> None:
            parents = data.draw(st.lists(st.sampled_from(self.ids()), max_size=3, unique=True)
                                if self.model.state else st.just([]))
            task = api.add_task(app, parents=parents, conn=db)
            self.model.state[task.id] = S.AWAITING_PARENTS if parents else S.READY
            for p in parents:
                self.model.edges.add((p, task.id))
            self.model.settle(task.id)
            assert task.state == self.model.state[task.id]

        @rule()
        def add_created_task(self) -> None:
            row = db.execute("INSERT INTO tasks (app_id, state) VALUES (%s, 'CREATED') "
                             "RETURNING id", [app.id]).fetchone()
            self.model.state[row["id"]] = S.CREATED

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
                self.model.state[task] = dst
                self.model.settle(task)

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
                m.add_edge(parent, child)

        @precondition(lambda self: self.model.edges)
        @rule(data=st.data())
        def remove_dependency(self, data: st.DataObject) -> None:
            parent, child = data.draw(st.sampled_from(sorted(self.model.edges)))
            api.remove_dependency(parent, child, conn=db)
            self.model.edges.discard((parent, child))
            if self.model.state[child] == S.AWAITING_PARENTS:
                self.model.settle(child)

        @precondition(lambda self: self.model.state)
        @rule(data=st.data())
        def kill(self, data: st.DataObject) -> None:
            task = data.draw(st.sampled_from(self.ids()))
            killed = api.kill([task], conn=db)
            assert killed == ([] if self.model.state[task] in FINAL else [task])
            if killed:
                self.model.state[task] = S.USER_KILLED

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
        def waiting_means_an_unfinished_parent(self) -> None:
            for task, state in self.model.state.items():
                if state == S.AWAITING_PARENTS:
                    assert self.model.unfinished(task)
                if state in CLEAR:
                    assert not self.model.unfinished(task), (task, state)

    run_state_machine_as_test(Tasks, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
