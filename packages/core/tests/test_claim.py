"""Claiming (balsam.claim) on a real PostgreSQL: exactly-once claims under concurrency, claim-
checked updates, heartbeats, and reaping dead launchers without ever losing a claim."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from balsam import claim
from balsam.db import connect
from balsam.errors import ClaimLost
from balsam.resources import Resources
from balsam.states import RUNNABLE, State
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg
S = State


def largest_first(candidates, resources):
    """A policy like the launcher's default: most nodes first (core places what fits)."""
    return sorted(candidates, key=lambda t: (-t.num_nodes, -t.wall_time_minutes, t.id))


def nodes(count: int, mode: str = "mpi") -> Resources:
    return Resources.on_hosts([f"n{i}" for i in range(count)], mode)


def register(conn, timeout: float = 60.0) -> int:
    return claim.register_launcher(conn, job_mode="mpi", num_nodes=1,
                                   heartbeat_timeout=timeout)["id"]


def make_stale(conn, launcher: int) -> None:
    conn.execute("UPDATE launchers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
                 [launcher])


@pytest.fixture
def app(db) -> int:
    return lt.add_app(db, "app", "/bin/true")


def test_claim_indexes_cover_exactly_the_runnable_states(db):
    """The claim queries and their partial indexes list states literally: they must split
    balsam.states.RUNNABLE into the states that need nodes and those that do not."""
    assert claim.RUN_STATES | claim.POST_STATES == RUNNABLE
    defs = {r["indexname"]: r["indexdef"] for r in db.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tasks'")}
    for index, states in (("tasks_claim_order", claim.RUN_STATES),
                          ("tasks_post_claimable", claim.POST_STATES)):
        listed = {s for s in State if f"'{s.value}'" in defs[index]}
        assert listed == states, index


def test_claim_marks_exactly_what_the_policy_chose(db, app):
    ids = lt.add_tasks(db, app, [{"name": f"t{i}"} for i in range(6)])
    me = register(db)

    def every_other(candidates, resources):
        return [t for t in candidates if t.id % 2 == 0]

    placed = claim.claim_for_run(db, me, nodes(10), every_other)
    assert sorted(c.task.id for c in placed) == [i for i in ids if i % 2 == 0]
    owned = claim.owned(db, me)
    assert set(owned) == {c.task.id for c in placed}
    other = register(db)
    rest = claim.claim_for_run(db, other, nodes(10), largest_first)
    assert sorted(c.task.id for c in rest) == [i for i in ids if i % 2]


def test_a_policy_cannot_claim_more_than_fits_or_invent_tasks(db, app):
    lt.add_tasks(db, app, [{"name": f"t{i}", "num_nodes": 2} for i in range(4)])
    me = register(db)
    bogus = lt.add_tasks(db, app, [{"name": "elsewhere", "state": "AWAITING_PARENTS"}])

    def greedy(candidates, resources):
        from balsam.models import Task
        return [*candidates, *candidates, Task(id=bogus[0], num_nodes=1)]

    placed = claim.claim_for_run(db, me, nodes(5), greedy)
    assert len(placed) == 2  # 2 + 2 nodes of 5; duplicates and a non-candidate ignored
    assert [n.index for n in placed[1].nodes] == [2, 3]
    assert bogus[0] not in claim.owned(db, me)


def test_filters_by_workflow_size_mode_and_time(db, app):
    lt.add_tasks(db, app, [
        {"name": "a", "workflow": "alpha"}, {"name": "b", "workflow": "alphabet"},
        {"name": "c", "workflow": "beta", "num_nodes": 3},
        {"name": "d", "workflow": "beta", "ranks_per_node": 4},
        {"name": "e", "workflow": "beta", "wall_time_minutes": 90},
    ])
    names = {r["id"]: r["name"] for r in db.execute("SELECT id, name FROM tasks")}

    def claimed(resources, **kwargs):
        me = register(db)
        got = claim.claim_for_run(db, me, resources, largest_first, **kwargs)
        claim.end_launcher(db, me, "test")
        return sorted(names[c.task.id] for c in got)

    assert claimed(nodes(9), wf_filter=claim.WorkflowFilter("alpha")) == ["a"]
    assert claimed(nodes(9), wf_filter=claim.WorkflowFilter("alpha", substring=True)) == [
        "a", "b"]
    assert claimed(nodes(2), wf_filter=claim.WorkflowFilter("beta")) == ["d", "e"]
    assert claimed(nodes(2, "serial"), wf_filter=claim.WorkflowFilter("beta")) == ["e"]
    assert claimed(nodes(9), wf_filter=claim.WorkflowFilter("beta"),
                   max_wall_minutes=60) == ["c", "d"]


def test_concurrent_claimers_never_share_a_task(db_dsn, db, app):
    ids = lt.add_tasks(db, app, [{"name": f"t{i}"} for i in range(400)])
    got: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def claimer(k: int) -> None:
        try:
            with connect(db_dsn) as conn:
                me = register(conn)
                mine = got.setdefault(k, [])
                while placed := claim.claim_for_run(conn, me, nodes(3), largest_first):
                    mine += [c.task.id for c in placed]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    everything = [i for mine in got.values() for i in mine]
    assert sorted(everything) == ids  # each task claimed once, none left
    assert sum(1 for mine in got.values() if mine) > 1


def test_claim_checked_moves(db, app):
    ids = lt.add_tasks(db, app, [{"name": f"t{i}"} for i in range(3)])
    me, other = register(db), register(db)
    claim.claim_for_run(db, me, nodes(2), largest_first)
    mine = sorted(claim.owned(db, me))
    done = claim.move(db, me, S.READY, S.STAGED_IN, {i: "staged" for i in ids})
    assert done == set(mine)  # the unclaimed task is not touched
    with pytest.raises(ClaimLost, match=f"no longer holds task\\(s\\) {ids[2]}"):
        claim.require(done, ids, me)
    assert claim.move(db, other, S.STAGED_IN, S.PREPROCESSED, {mine[0]: "x"}) == set()
    # a retried move (the connection dropped after commit) is harmless
    assert claim.move(db, me, S.READY, S.STAGED_IN, {mine[0]: "again"}) == {mine[0]}
    states = lt.states(db)
    assert states[mine[0]]["state"] == "STAGED_IN" and states[ids[2]]["state"] == "READY"


def test_mark_running_counts_one_attempt_even_when_retried(db, app):
    [tid] = lt.add_tasks(db, app, [{"name": "t", "state": "READY"}])
    me = register(db)
    claim.claim_for_run(db, me, nodes(1), largest_first)
    claim.move(db, me, S.READY, S.STAGED_IN, {tid: ""})
    claim.move(db, me, S.STAGED_IN, S.PREPROCESSED, {tid: ""})
    assert claim.mark_running(db, me, {tid: "pid 1"}) == {tid}
    assert claim.mark_running(db, me, {tid: "pid 1"}) == {tid}
    assert lt.states(db)[tid]["attempts"] == 1
    events = [e["to_state"] for e in lt.events(db) if e["task_id"] == tid]
    assert events == ["READY", "STAGED_IN", "PREPROCESSED", "RUNNING"]
    assert all(e["launcher_id"] == me for e in lt.events(db)[1:])


def test_a_move_is_dated_when_it_happened_but_never_out_of_order_or_in_the_future(db, app):
    [tid] = lt.add_tasks(db, app, [{"name": "t", "state": "READY"}])
    me = register(db)
    claim.claim_for_run(db, me, nodes(1), largest_first)
    created_at = db.execute("SELECT state_changed_at AS at FROM tasks WHERE id = %s",
                            [tid]).fetchone()["at"]
    created = created_at.timestamp()
    claim.move(db, me, S.READY, S.STAGED_IN, {tid: ""}, at={tid: created - 3600})
    time.sleep(0.2)
    past = time.time() - 0.1  # after the task's last change
    claim.move(db, me, S.STAGED_IN, S.PREPROCESSED, {tid: ""}, at={tid: past})
    claim.mark_running(db, me, {tid: ""}, at={tid: time.time() + 3600})
    claim.move(db, me, S.RUNNING, S.RUN_DONE, {tid: ""})  # no time given: the database's clock
    after = time.time()
    stamps = [e["at"] for e in lt.events(db) if e["task_id"] == tid]
    assert stamps[1] == created_at + timedelta(microseconds=1)  # not before the previous change
    at = [t.timestamp() for t in stamps]
    assert at[2] == pytest.approx(past, abs=1e-6)
    assert past < at[3] <= after  # not in the future
    assert at[3] <= at[4] <= after


def _running_on(db, app, launcher, **fields):
    [tid] = lt.add_tasks(db, app, [{"name": "t", "state": "READY", **fields}])
    assert claim.claim_for_run(db, launcher, nodes(1), largest_first)
    claim.move(db, launcher, S.READY, S.STAGED_IN, {tid: ""})
    claim.move(db, launcher, S.STAGED_IN, S.PREPROCESSED, {tid: ""})
    claim.mark_running(db, launcher, {tid: ""})
    return tid


def test_reaping_a_dead_launcher_recovers_its_tasks(db, app):
    dead, alive = register(db, timeout=1), register(db, timeout=1)
    retry = _running_on(db, app, dead)
    handler = _running_on(db, app, dead, post_timeout_handler=True)
    [waiting] = lt.add_tasks(db, app, [{"name": "w"}])
    claim.claim_for_run(db, dead, nodes(1), largest_first)
    make_stale(db, dead)
    reaped = claim.reap_dead(db)
    assert reaped["launchers"] == [dead]
    states = lt.states(db)
    assert states[retry]["state"] == "RESTART_READY"
    assert states[handler]["state"] == "RUN_TIMEOUT"
    assert states[waiting]["state"] == "READY"
    assert all(states[t]["launcher_id"] is None for t in (retry, handler, waiting))
    assert f"launcher {dead} presumed dead" in states[retry]["state_message"]
    row = db.execute("SELECT ended_at, end_reason FROM launchers WHERE id = %s",
                     [dead]).fetchone()
    assert row["ended_at"] is not None and row["end_reason"].startswith("presumed dead")
    assert claim.reap_dead(db)["launchers"] == []  # once only
    claim.heartbeat(db, alive)  # the living one is untouched


def _in_batch_job(db, launcher: int) -> int:
    job = db.execute("INSERT INTO batch_jobs (scheduler, scheduler_id, num_nodes, "
                     "wall_time_minutes, state) VALUES ('slurm', '77', 1, 10, 'running') "
                     "RETURNING id").fetchone()["id"]
    db.execute("UPDATE launchers SET batch_job_id = %s WHERE id = %s", [job, launcher])
    return job


def _batch_ends(db, job: int, state: str, message: str = "", confirmed: bool = True) -> None:
    db.execute("UPDATE batch_jobs SET state = %s, state_message = %s, "
               "ended_at = CASE WHEN %s THEN now() END WHERE id = %s",
               [state, message, confirmed, job])


def test_a_launcher_whose_batch_job_ended_is_reaped_at_once(db, app):
    """Its heartbeat is fresh (a minute left of its timeout), but the scheduler reports its
    batch job over: its processes are gone, its tasks are recovered now."""
    lost = register(db)
    job = _in_batch_job(db, lost)
    retry = _running_on(db, app, lost)
    _batch_ends(db, job, "cancelled", "cancelled by alice", confirmed=False)
    assert claim.reap_dead(db)["launchers"] == []  # still stopping its tasks (graceful cancel)
    _batch_ends(db, job, "cancelled", "cancelled by alice")  # the scheduler confirms the end
    assert claim.reap_dead(db)["launchers"] == [lost]
    row = lt.states(db)[retry]
    assert (row["state"], row["launcher_id"]) == ("RESTART_READY", None)
    assert row["state_message"] == f"launcher {lost} presumed dead: its batch job is cancelled"
    with pytest.raises(ClaimLost):
        claim.heartbeat(db, lost)  # its late writes are refused


def test_after_a_node_failure_the_heartbeat_timeout_decides(db, app):
    """A batch job ended by a node failure may leave processes on the node, cut off, until
    their lease lapses: its launcher is reaped at its heartbeat timeout, not before."""
    lost = register(db, timeout=1)
    job = _in_batch_job(db, lost)
    retry = _running_on(db, app, lost)
    _batch_ends(db, job, "failed", "NODE_FAIL")
    assert claim.reap_dead(db)["launchers"] == []
    make_stale(db, lost)
    assert claim.reap_dead(db)["launchers"] == [lost]
    assert lt.states(db)[retry]["state"] == "RESTART_READY"


def test_a_consume_all_launcher_waits_for_the_tasks_of_a_suspect_launcher(db, app):
    me, other = register(db), register(db, timeout=8)  # other heartbeats every 2 s
    wf = claim.WorkflowFilter("w")
    tid = _running_on(db, app, other, workflow="w")
    assert not claim.work_remaining(db, me, nodes(1), wf_filter=wf)  # other is healthy
    # ... as proved by a heartbeat since this launcher ran out of work, not before
    assert claim.work_remaining(db, me, nodes(1), wf_filter=wf, idle_for=0)
    db.execute("UPDATE launchers SET heartbeat_at = now() - interval '5 s' WHERE id = %s",
               [other])  # missed two heartbeats
    assert claim.work_remaining(db, me, nodes(1), wf_filter=wf)
    assert not claim.work_remaining(db, me, nodes(1), wf_filter=claim.WorkflowFilter("x"))
    db.execute("UPDATE tasks SET num_nodes = 2 WHERE id = %s", [tid])
    assert not claim.work_remaining(db, me, nodes(1), wf_filter=wf)  # could never run here
    assert claim.work_remaining(db, me, nodes(2), wf_filter=wf)
    claim.heartbeat(db, other)  # it was only late
    assert not claim.work_remaining(db, me, nodes(2), wf_filter=wf)


def test_a_launcher_presumed_dead_cannot_overwrite_a_task_claimed_since(db, app):
    dead, successor = register(db, timeout=1), register(db)
    tid = _running_on(db, app, dead)
    make_stale(db, dead)
    claim.reap_dead(db)
    placed = claim.claim_for_run(db, successor, nodes(1), largest_first)
    assert [c.task.id for c in placed] == [tid]
    # the dead launcher wakes up and reports its run as done: nothing changes
    assert claim.move(db, dead, S.RUNNING, S.RUN_DONE, {tid: "exit 0"}) == set()
    assert claim.mark_running(db, dead, {tid: ""}) == set()
    assert claim.release(db, dead, [tid]) == set()
    with pytest.raises(ClaimLost, match="presumed dead"):
        claim.heartbeat(db, dead)
    with pytest.raises(ClaimLost, match="cannot claim"):
        claim.claim_for_run(db, dead, nodes(1), largest_first)
    row = lt.states(db)[tid]
    assert (row["state"], row["launcher_id"]) == ("RESTART_READY", successor)


def test_reaping_never_strands_a_claim_in_flight(db_dsn, db, app):
    """A claim committing while its launcher is reaped: the reaper skips the launcher until the
    claim commits, then recovers everything, including what was just claimed."""
    lt.add_tasks(db, app, [{"name": f"t{i}"} for i in range(4)])
    slow = register(db, timeout=1)
    make_stale(db, slow)
    entered, release = threading.Event(), threading.Event()

    def slow_policy(candidates, resources):
        entered.set()
        release.wait(10)
        return candidates

    result: list = []
    with connect(db_dsn) as conn:
        t = threading.Thread(target=lambda: result.append(
            claim.claim_for_run(conn, slow, nodes(4), slow_policy)))
        t.start()
        assert entered.wait(10)
        assert claim.reap_dead(db)["launchers"] == []  # locked by the claim: skipped
        release.set()
        t.join()
    assert len(result[0]) == 4
    assert claim.reap_dead(db)["launchers"] == [slow]
    assert all(r["launcher_id"] is None for r in lt.states(db).values())


def test_end_launcher_releases_and_times_out_what_ran(db, app):
    me = register(db)
    tid = _running_on(db, app, me)
    [other] = lt.add_tasks(db, app, [{"name": "o"}])
    claim.claim_for_run(db, me, nodes(1), largest_first)
    released = claim.end_launcher(db, me, "done")
    assert {r["id"] for r in released} == {tid, other}
    states = lt.states(db)
    assert states[tid]["state"] == "RUN_TIMEOUT" and states[other]["state"] == "READY"
    with pytest.raises(ClaimLost):
        claim.heartbeat(db, me)


def test_a_running_task_is_never_released_without_its_outcome(db, app):
    me = register(db)
    running = _running_on(db, app, me)
    [ready] = lt.add_tasks(db, app, [{"name": "r"}])
    claim.claim_for_run(db, me, nodes(1), largest_first)
    assert claim.release(db, me, [running, ready]) == {ready}
    row = lt.states(db)[running]
    assert (row["state"], row["launcher_id"]) == ("RUNNING", me)
    assert claim.apply(db, me, [], [running])[1] == set()
    assert claim.held_states(db, me, [running, ready]) == {running: (S.RUNNING, "", 1)}
    # it leaves with its outcome, or by the recovery rule
    assert [r["state"] for r in claim.recover_unknown(db, me, [running])] == ["RESTART_READY"]


def test_claims_a_launcher_forgot_are_recovered_like_a_dead_launchers(db, app):
    me = register(db)
    running = _running_on(db, app, me)
    [ready] = lt.add_tasks(db, app, [{"name": "r"}])
    claim.claim_for_run(db, me, nodes(1), largest_first)
    rows = claim.recover_unknown(db, me, [running, ready])
    assert {r["id"]: r["state"] for r in rows} == {running: "RESTART_READY", ready: "READY"}
    assert claim.owned(db, me) == {}
    assert "lost track of the run" in lt.states(db)[running]["state_message"]


def test_work_remaining(db, app):
    me = register(db)
    wf = claim.WorkflowFilter("w")
    assert not claim.work_remaining(db, me, nodes(1), wf_filter=wf)
    [parent] = lt.add_tasks(db, app, [{"name": "p", "workflow": "other"}])
    [child] = lt.add_tasks(db, app, [{"name": "c", "workflow": "w",
                                      "state": "AWAITING_PARENTS"}])
    lt.add_edges(db, [(parent, child)])
    # the child waits for a live parent in another workflow: more work may come
    assert claim.work_remaining(db, me, nodes(1), wf_filter=wf)
    db.execute("UPDATE tasks SET state = 'FAILED' WHERE id = %s", [parent])
    assert not claim.work_remaining(db, me, nodes(1), wf_filter=wf)
    lt.add_tasks(db, app, [{"name": "big", "workflow": "w", "num_nodes": 4}])
    assert not claim.work_remaining(db, me, nodes(2), wf_filter=wf)  # can never fit here
    assert claim.work_remaining(db, me, nodes(4), wf_filter=wf)


def test_unclaimed_work_counts_runnable_unclaimed_tasks_by_size(db, app):
    lt.add_tasks(db, app, [{"name": "a", "workflow": "w"}, {"name": "b", "workflow": "w"},
                           {"name": "big", "workflow": "w", "num_nodes": 4},
                           {"name": "packed", "workflow": "x", "node_packing_count": 8},
                           {"name": "waits", "workflow": "w", "state": "AWAITING_PARENTS"}])
    me = register(db)
    [held] = lt.add_tasks(db, app, [{"name": "held", "workflow": "w"}])
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [me, held])
    assert sorted(claim.unclaimed_work(db, "w")) == [claim.Work(1, 1, 2), claim.Work(4, 1, 1)]
    assert sorted(claim.unclaimed_work(db)) == [claim.Work(1, 1, 2), claim.Work(1, 8, 1),
                                                claim.Work(4, 1, 1)]


# --- a stateful model: several launchers, reaping, users killing tasks ---------------------------


class ClaimMachine(RuleBasedStateMachine):
    """Launchers claim, start and finish tasks; some die and are reaped; users kill tasks. The
    database must always agree with the model, and no task may ever have two owners or be
    finished twice."""

    dsn = ""

    @initialize()
    def setup(self):
        self.db = connect(self.dsn)
        self.db.execute("TRUNCATE tasks, task_events, launchers, apps RESTART IDENTITY CASCADE")
        self.app = lt.add_app(self.db, "m", "/bin/true")
        self.conns = [connect(self.dsn) for _ in range(3)]
        self.launchers = [register(c, timeout=1) for c in self.conns]
        self.alive = set(self.launchers)
        self.held: dict[int, set[int]] = {lid: set() for lid in self.launchers}
        self.finished: set[int] = set()

    def teardown(self):
        for conn in [getattr(self, "db", None), *getattr(self, "conns", [])]:
            if conn is not None:
                conn.close()

    @rule(count=st.integers(1, 5))
    def add_tasks(self, count):
        lt.add_tasks(self.db, self.app, [{"name": "t"} for _ in range(count)])

    @rule(k=st.integers(0, 2), capacity=st.integers(1, 4))
    def claim(self, k, capacity):
        lid, conn = self.launchers[k], self.conns[k]
        if lid not in self.alive:
            with pytest.raises(ClaimLost):
                claim.claim_for_run(conn, lid, nodes(capacity), largest_first)
            return
        placed = claim.claim_for_run(conn, lid, nodes(capacity), largest_first)
        for task in (c.task for c in placed):  # never a task a living launcher holds
            assert not any(task.id in self.held[other] for other in self.alive)
            self.held[lid].add(task.id)

    @rule(k=st.integers(0, 2))
    def start_and_finish(self, k):
        lid, conn = self.launchers[k], self.conns[k]
        mine = {i: "" for i in self.held[lid]}
        steps = [(S.READY, S.STAGED_IN), (S.STAGED_IN, S.PREPROCESSED)]
        for src, dst in steps:
            claim.move(conn, lid, src, dst, mine)
        started = claim.mark_running(conn, lid, mine)
        done = claim.move(conn, lid, S.RUNNING, S.RUN_DONE, mine)
        claim.move(conn, lid, S.RUN_DONE, S.POSTPROCESSED, mine)
        finished = claim.move(conn, lid, S.POSTPROCESSED, S.JOB_FINISHED, mine)
        if lid in self.alive:
            assert started == done == finished == set(mine) - self.killed()
            assert not finished & self.finished
            self.finished |= finished
            claim.release(conn, lid, mine)
            self.held[lid].clear()
        else:
            assert started == done == finished == set()

    @rule(k=st.integers(0, 2))
    def start_only(self, k):
        lid, conn = self.launchers[k], self.conns[k]
        mine = {i: "" for i in self.held[lid]}
        claim.move(conn, lid, S.READY, S.STAGED_IN, mine)
        claim.move(conn, lid, S.STAGED_IN, S.PREPROCESSED, mine)
        claim.mark_running(conn, lid, mine)

    @rule(k=st.integers(0, 2))
    def die_and_be_reaped(self, k):
        lid = self.launchers[k]
        if lid not in self.alive:
            return
        make_stale(self.db, lid)
        reaped = claim.reap_dead(self.db)
        assert reaped["launchers"] == [lid]
        self.alive.discard(lid)
        # the dead launcher still believes it holds its tasks: later updates must not land

    @rule(data=st.data())
    def user_kills(self, data):
        ids = [r["id"] for r in self.db.execute(
            "SELECT id FROM tasks WHERE state NOT IN ('JOB_FINISHED', 'USER_KILLED')")]
        if ids:
            tid = data.draw(st.sampled_from(ids))
            self.db.execute("UPDATE tasks SET state = 'USER_KILLED' WHERE id = %s", [tid])

    def killed(self):
        return {r["id"] for r in self.db.execute(
            "SELECT id FROM tasks WHERE state = 'USER_KILLED'")}

    @invariant()
    def database_agrees_with_model(self):
        if not hasattr(self, "db"):
            return
        for lid in self.launchers:
            owned = set(claim.owned(self.db, lid))
            if lid in self.alive:
                assert owned == self.held[lid]
            else:
                assert owned == set()
        finished = {r["task_id"] for r in self.db.execute(
            "SELECT task_id FROM task_events WHERE to_state = 'JOB_FINISHED'")}
        assert finished == self.finished
        events = self.db.execute("SELECT task_id, count(*) AS n FROM task_events "
                                 "WHERE to_state = 'RUN_DONE' GROUP BY task_id").fetchall()
        assert all(e["n"] == 1 for e in events)  # no run is ever reported done twice
        stranded = self.db.execute("SELECT count(*) AS n FROM tasks WHERE state = 'RUNNING' "
                                   "AND launcher_id IS NULL").fetchone()["n"]
        assert stranded == 0


def test_claim_state_machine(db_dsn):
    ClaimMachine.dsn = db_dsn
    run_state_machine_as_test(ClaimMachine, settings=settings(
        max_examples=25, stateful_step_count=25, deadline=None))
