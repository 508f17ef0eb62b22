"""The launcher's ledger without a database: one test per rule, then a hypothesis state machine
that drives random orders of events (write failures and lost acknowledgements, lost claims,
user kills and forged kill hints, stops while starting, exits before RUNNING is written, apps
changed by an untrusted user, trust withdrawn and granted) against a model of the database,
checking that no task starts twice per claim, nothing untrusted is started or worked on, every
claim ends given back or finished, a failed write is sent again, a RUNNING task is never given
back without its outcome, and every move follows ``balsam.states.TRANSITIONS``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from balsam.claim import untrusted
from balsam.models import App, Task
from balsam.states import FINAL, RUNNABLE, State, allowed
from balsam_launcher.ledger import (
    Batch,
    Free,
    Known,
    Ledger,
    Note,
    Phase,
    Read,
    Recover,
    Start,
    Step,
    Stop,
    Work,
)

S, P = State, Phase
PLAIN = App(name="plain", executable="true", id=1)
SCRIPTS = App(name="scripts", executable="true", preprocess="pre", postprocess="post", id=2)


def task(tid: int, state: State = S.READY, **fields) -> Task:
    return Task(id=tid, name=f"t{tid}", state=state, app_id=1, **fields)


def kinds(intents) -> list[str]:
    return [type(i).__name__ for i in intents if not isinstance(i, Note)]


def commit_all(ledger: Ledger, batch: Batch, released=None) -> list:
    reached = {tid: [m.state for m in chain.moves] for tid, chain in batch.chains.items()}
    return ledger.committed(batch, reached, batch.release if released is None else released)


# --- one rule at a time --------------------------------------------------------------------------


def test_a_plain_task_starts_at_once_and_its_steps_are_written_after_the_start():
    ledger = Ledger()
    assert ledger.claimed(task(1), PLAIN, [], has_nodes=True) == [Start(1)]
    assert ledger.next_batch() is None  # nothing is written before the start
    assert ledger.started(1, 100.0, "pid 7 on h") == []
    batch = ledger.next_batch()
    chain = batch.chains[1]
    assert [m.state for m in chain.moves] == [S.STAGED_IN, S.PREPROCESSED, S.RUNNING]
    assert chain.times == (100.0, 100.0, 100.0)  # dated by the start
    assert ledger.next_batch() is None  # one batch in flight
    assert commit_all(ledger, batch) == []
    assert ledger.tasks[1].phase is P.RUNNING and ledger.tasks[1].task.attempts == 1
    assert kinds(ledger.exited(1, 103.5, 0, signalled=False)) == ["Free"]
    batch = ledger.next_batch()
    assert [m.state for m in batch.chains[1].moves] == [S.RUN_DONE, S.POSTPROCESSED,
                                                        S.JOB_FINISHED]
    assert batch.chains[1].moves[0].message == "exit 0 after 3.5s"
    assert batch.chains[1].times == (103.5,) * 3 and batch.release == {1}
    commit_all(ledger, batch)
    assert 1 not in ledger and ledger.settled()


def test_groups_write_each_chain_in_order_one_statement_per_move():
    ledger = Ledger()
    for tid in (1, 2):
        ledger.claimed(task(tid), PLAIN, [], has_nodes=True)
        ledger.started(tid, 1.0, "pid")
    groups = ledger.next_batch().groups()
    assert [(g.from_state, g.to_state, sorted(g.messages)) for g in groups] == [
        (S.READY, S.STAGED_IN, [1, 2]), (S.STAGED_IN, S.PREPROCESSED, [1, 2]),
        (S.PREPROCESSED, S.RUNNING, [1, 2])]


def test_an_exit_before_running_is_written_waits_for_it_or_joins_it():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    ledger.exited(1, 2.0, 0, signalled=False)  # not sent yet: written together
    assert [m.state for m in ledger.next_batch().chains[1].moves][-4:] == [
        S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED]
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    batch = ledger.next_batch()
    ledger.exited(1, 2.0, 3, signalled=False, last_line="oops")
    assert ledger.tasks[1].phase is P.ENDED_WRITING and ledger.next_batch() is None
    commit_all(ledger, batch)
    batch = ledger.next_batch()
    assert [m.message for m in batch.chains[1].moves] == [
        "exit 3: oops", "exit 3: oops; no error handler, no retries left"]
    assert batch.chains[1].times == (2.0, 2.0)


def test_a_failed_write_is_sent_again_whole():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    first = ledger.next_batch()
    ledger.exited(1, 2.0, 0, signalled=False)
    assert ledger.write_failed(first) == []
    again = ledger.next_batch()
    assert [m.state for m in again.chains[1].moves] == [
        S.STAGED_IN, S.PREPROCESSED, S.RUNNING, S.RUN_DONE]  # the outcome waits for RUNNING
    assert again.chains[1].times == (1.0, 1.0, 1.0, 2.0)


def test_a_write_whose_answer_was_lost_resumes_after_what_landed():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    batch = ledger.next_batch()
    # resent after the first attempt committed: the first moves no longer match
    assert ledger.committed(batch, {1: [S.PREPROCESSED, S.RUNNING]}, set()) == [Read((1,))]
    assert ledger.tasks[1].phase is P.RUN_VERIFYING
    ledger.states_read([1], {1: Known(S.RUNNING, "pid", 1)})
    assert ledger.tasks[1].phase is P.RUNNING  # the process kept running throughout


def test_a_write_that_did_not_land_because_of_a_kill_stops_the_run_and_gives_the_task_back():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    ledger.committed(ledger.next_batch(), {}, set())
    assert kinds(ledger.states_read([1], {1: Known(S.USER_KILLED, "killed", 0)})) == ["Stop"]
    assert ledger.tasks[1].phase is P.STOPPING
    assert kinds(ledger.exited(1, 2.0, -15, signalled=True)) == ["Free"]
    batch = ledger.next_batch()
    assert batch.chains[1].moves == () and batch.release == {1}


def test_kill_hints_are_checked_with_the_database():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    commit_all(ledger, ledger.next_batch())
    assert ledger.kill_hint([1, 99]) == [Read((1,))]  # 99 is not ours: ignored
    # a forged hint: the database says the task runs, so it keeps running
    assert ledger.states_read([1], {1: Known(S.RUNNING, "pid", 1)}) == []
    assert ledger.tasks[1].phase is P.RUNNING
    assert kinds(ledger.states_read([1], {1: Known(S.USER_KILLED, "k", 1)})) == ["Stop"]


def test_a_lost_task_is_stopped_and_forgotten_not_given_back():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    commit_all(ledger, ledger.next_batch())
    assert kinds(ledger.reconciled({})) == ["Stop"]
    assert kinds(ledger.exited(1, 2.0, -15, signalled=True)) == ["Free"]
    assert 1 not in ledger and ledger.next_batch() is None


def test_unknown_claims_are_recovered():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    assert ledger.reconciled({1: S.READY, 5: S.RUNNING, 4: S.READY}) == [Recover((4, 5))]


def test_stop_stops_runs_and_parks_the_rest():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.claimed(task(2), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    assert ledger.stop("time limit reached") == [Stop(1)]
    assert ledger.started(2, 1.5, "pid") == [Stop(2)]  # stopped while starting
    ledger.exited(1, 4.0, -15, signalled=True)
    batch = ledger.next_batch()
    assert batch.chains[1].moves[-1] == Step(S.RUN_TIMEOUT,
                                             "stopped after 3.0s: time limit reached")
    assert not batch.release  # a stopping launcher gives everything back when it ends
    commit_all(ledger, batch)
    assert ledger.tasks[1].phase is P.PARKED


def test_scripts_run_after_the_moves_before_them_are_written_and_their_result_is_read_back():
    ledger = Ledger()
    ledger.claimed(task(1), SCRIPTS, [], has_nodes=True)
    assert ledger.tasks[1].phase is P.QUEUED  # STAGED_IN first, then the preprocess script
    assert commit_all(ledger, ledger.next_batch()) == [Work(1, "preprocess")]
    assert ledger.work_done(1, "preprocess", True, "preprocess done") == [Start(1)]
    ledger.started(1, 1.0, "pid")
    commit_all(ledger, ledger.next_batch())
    ledger.exited(1, 2.0, 0, signalled=False)
    assert commit_all(ledger, ledger.next_batch()) == [Work(1, "postprocess")]
    assert ledger.work_done(1, "postprocess", True, "postprocess done") == [Read((1,))]
    # the script left RUN_DONE alone: the default move; had it set a state, that one
    ledger.states_read([1], {1: Known(S.RUN_DONE, "exit 0", 1)})
    assert [m.state for m in ledger.next_batch().chains[1].moves] == [
        S.POSTPROCESSED, S.JOB_FINISHED]


def test_stage_in_and_out_run_in_the_pool_and_a_failed_transfer_fails_the_task():
    ledger = Ledger()
    urls = {"stage_in_url": "/in", "stage_out_url": "/out"}
    assert ledger.claimed(task(1, **urls), PLAIN, [], has_nodes=True) == [Work(1, "stage_in")]
    assert ledger.work_done(1, "stage_in", True, "1 item(s) staged in") == [Start(1)]
    ledger.started(1, 1.0, "pid")
    commit_all(ledger, ledger.next_batch())
    ledger.exited(1, 2.0, 0, signalled=False)
    assert commit_all(ledger, ledger.next_batch()) == [Work(1, "stage_out")]  # POSTPROCESSED
    ledger.work_done(1, "stage_out", True, "2 item(s) staged out")
    assert ledger.next_batch().chains[1].moves == (Step(S.JOB_FINISHED, "2 item(s) staged out"),)
    ledger = Ledger()
    ledger.claimed(task(2, S.POSTPROCESSED, **urls), PLAIN, [], has_nodes=False)
    ledger.work_done(2, "stage_out", False, "stage-out to /out failed: why; the outputs stay")
    batch = ledger.next_batch()
    assert batch.chains[2].moves == (Step(S.FAILED, "stage-out to /out failed: why; the "
                                                    "outputs stay"),) and 2 in batch.release


def test_failures_say_why_and_retries_start_on_another_claim():
    ledger = Ledger(max_retries=1)
    ledger.claimed(task(1, S.RESTART_READY), PLAIN, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    commit_all(ledger, ledger.next_batch())
    ledger.exited(1, 2.0, -9, signalled=False)
    batch = ledger.next_batch()
    assert batch.chains[1].moves == (Step(S.RUN_ERROR, "killed by SIGKILL"),
                                     Step(S.RESTART_READY, "killed by SIGKILL; retry 1 of 1"))
    assert batch.release == {1}  # no nodes any more: another claim starts it
    ledger = Ledger()
    ledger.claimed(task(2), PLAIN, [], has_nodes=True)
    assert kinds(ledger.start_failed(2, 1.0, "starting on h", "No such file or directory: x")) \
        == ["Free"]
    moves = ledger.next_batch().chains[2].moves
    assert moves[-1] == Step(S.FAILED, "cannot start: No such file or directory: x; "
                                       "no error handler, no retries left")


def test_a_run_that_cannot_be_set_up_fails_without_a_run():
    ledger = Ledger(max_retries=3)
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    reason = "cannot create its working directory: No space left on device: /p/data/_/t1_1"
    assert kinds(ledger.not_started(1, reason)) == ["Free"]
    batch = ledger.next_batch()
    assert [m.state for m in batch.chains[1].moves] == [S.STAGED_IN, S.PREPROCESSED, S.FAILED]
    assert batch.chains[1].moves[-1].message == reason and batch.release == {1}


def test_a_refused_task_is_failed_with_the_reason():
    ledger = Ledger()
    intents = ledger.claimed(task(1), PLAIN, [], has_nodes=True, refusal="outside the project")
    assert kinds(intents) == ["Free"]
    batch = ledger.next_batch()
    assert batch.chains[1].moves == (Step(S.FAILED, "outside the project"),)
    assert batch.release == {1}


def test_what_the_launcher_does_not_trust_is_given_back_not_run():
    """An app changed by bob between the claim and its reading: alice's launcher does not start
    the task, says why, and gives it back (with its nodes) for a launcher that trusts bob."""
    ledger = Ledger(trusted={"alice", "balsam_admin"})
    mine = task(1, owner="alice", changed_by="alice")
    intents = ledger.claimed(mine, replace(PLAIN, changed_by="bob"), [], has_nodes=True)
    assert kinds(intents) == ["Free"]
    [note] = [i for i in intents if isinstance(i, Note)]
    assert note == Note("warning", "task 1 not run and given back: its app plain was changed "
                                   "by bob, whom this launcher does not trust")
    batch = ledger.next_batch()
    assert batch.chains[1].moves == () and batch.release == {1}
    commit_all(ledger, batch)
    assert 1 not in ledger
    assert kinds(ledger.claimed(mine, replace(PLAIN, changed_by="alice"), [],
                                has_nodes=True)) == ["Start"]


def test_a_trust_withdrawn_while_a_task_is_held_stops_its_next_step():
    ledger = Ledger(trusted={"alice", "bob"})
    theirs = task(1, owner="bob", changed_by="bob", input_files="*.dat")
    assert ledger.claimed(theirs, replace(SCRIPTS, changed_by="bob"), [1],
                          has_nodes=True) == [Work(1, "stage_in")]
    ledger.trusted = frozenset({"alice"})  # alice ran: balsam trust rm bob
    assert ledger.work_done(1, "stage_in", True, "staged") == []  # STAGED_IN is written...
    batch = ledger.next_batch()
    assert batch.chains[1].moves == (Step(S.STAGED_IN, "staged"),) and not batch.release
    intents = commit_all(ledger, batch)  # ... and then preprocessing is refused
    assert kinds(intents) == ["Free"] and "owned by bob" in intents[0].text
    assert ledger.next_batch().release == {1}


def test_presumed_dead_kills_everything_and_writes_nothing():
    ledger = Ledger()
    ledger.claimed(task(1), PLAIN, [], has_nodes=True)
    ledger.claimed(task(2), SCRIPTS, [], has_nodes=True)
    ledger.started(1, 1.0, "pid")
    assert kinds(ledger.presumed_dead()) == ["Stop", "Free"]
    assert ledger.next_batch() is None
    ledger.exited(1, 2.0, -9, signalled=True)
    assert len(ledger) == 0 and ledger.active() == 0


# --- random orders against a model of the database -----------------------------------------------

ME, OTHER = 1, 2


@dataclass
class Row:
    state: State
    launcher: int | None = ME
    attempts: int = 0
    message: str = ""


@dataclass
class Proc:
    signalled: bool = False


@dataclass
class World:
    """The database and the processes, as the ledger's loop sees them."""

    rows: dict[int, Row] = field(default_factory=dict)
    requests: list[tuple] = field(default_factory=list)  # FIFO, as the session serves them
    results: list[tuple] = field(default_factory=list)  # FIFO, as the loop reads them
    starting: list[int] = field(default_factory=list)
    procs: dict[int, Proc] = field(default_factory=dict)
    scripts: dict[int, str] = field(default_factory=dict)
    nodes: set[int] = field(default_factory=set)
    claim_no: dict[int, int] = field(default_factory=dict)
    starts: Counter = field(default_factory=Counter)
    troubled: set[int] = field(default_factory=set)  # killed, lost or changed by others

    def apply(self, batch: Batch) -> tuple[dict[int, list[State]], set[int]]:
        """What the claim-checked SQL does (see claim.sql)."""
        reached: dict[int, list[State]] = {}
        for g in batch.groups():
            assert allowed(g.from_state, g.to_state), (g.from_state, g.to_state)
            for tid, message in g.messages.items():
                row = self.rows[tid]
                if row.launcher == ME and row.state in (g.from_state, g.to_state):
                    if g.to_state is S.RUNNING and row.state is not S.RUNNING:
                        row.attempts += 1
                    row.state, row.message = g.to_state, message
                    reached.setdefault(tid, []).append(g.to_state)
        released = set()
        for tid in batch.release:
            row = self.rows[tid]
            if row.launcher == ME:
                # the ledger never gives back a RUNNING task (the SQL refuses it too)
                assert row.state is not S.RUNNING, tid
                row.launcher = None
                released.add(tid)
        return reached, released

    def known(self, ids) -> dict[int, Known]:
        return {t: Known(self.rows[t].state, self.rows[t].message, self.rows[t].attempts)
                for t in ids if self.rows[t].launcher == ME}


class LedgerMachine(RuleBasedStateMachine):
    @initialize(retries=st.integers(0, 1))
    def setup(self, retries):
        self.ledger = Ledger(max_retries=retries, trusted={"alice"})
        self.w = World()
        self.next_id = 1

    def carry(self, intents) -> None:
        w = self.w
        for intent in intents:
            if isinstance(intent, Start | Work):  # only what the launcher trusts now
                e = self.ledger.tasks[intent.task_id]
                assert untrusted(e.task, e.app, self.ledger.trusted) is None, intent
            if isinstance(intent, Start):
                tid = intent.task_id
                w.starts[tid, w.claim_no[tid]] += 1
                assert w.starts[tid, w.claim_no[tid]] == 1, "started twice on one claim"
                assert tid in w.nodes
                w.starting.append(tid)
            elif isinstance(intent, Stop):
                row = w.rows[intent.task_id]
                # a process is stopped only by the launcher stopping, or on the database's word
                assert self.ledger.stopping is not None or row.launcher != ME \
                    or row.state is S.USER_KILLED, (intent, row)
                if intent.task_id in w.procs:
                    w.procs[intent.task_id].signalled = True
            elif isinstance(intent, Work):
                w.scripts[intent.task_id] = intent.kind
            elif isinstance(intent, Read):
                w.requests.append(("read", intent.ids))
            elif isinstance(intent, Recover):  # on the claims' connection, at once
                for tid in intent.ids:
                    row = w.rows[tid]
                    if tid not in self.ledger and row.launcher == ME:
                        # only tasks the ledger lost track of: never one it knew RUNNING
                        assert row.state is not S.RUNNING, tid
                        row.launcher = None
            elif isinstance(intent, Free):
                w.nodes.remove(intent.task_id)
        batch = self.ledger.next_batch()
        if batch is not None:
            w.requests.append(("write", batch))

    # --- claims and processes --------------------------------------------------------------------

    @precondition(lambda self: self.ledger.stopping is None)
    @rule(state=st.sampled_from([S.READY, S.READY, S.RESTART_READY, S.RUN_DONE, S.RUN_ERROR,
                                 S.RUN_TIMEOUT, S.POSTPROCESSED]),
          scripts=st.booleans(), handler=st.booleans(), retry=st.booleans(),
          app_by=st.sampled_from(["alice", "alice", "bob"]), staging=st.booleans())
    def claim(self, state, scripts, handler, retry, app_by, staging):
        """The loop claims on its own connection, at once (a reconcile in flight may have been
        read before: it carries what the ledger knew when it was sent). Claims take alice's
        tasks; their app may have been changed by bob before it was read."""
        tid, self.next_id = self.next_id, self.next_id + 1
        self.w.rows[tid] = Row(state, ME, message="claimed")
        urls = {"stage_in_url": "/in", "stage_out_url": "/out"} if staging else {}
        t = task(tid, state, post_error_handler=handler, post_timeout_handler=handler,
                 auto_timeout_retry=retry, state_message="claimed", owner="alice",
                 changed_by="alice", **urls)
        app = replace(SCRIPTS if scripts else PLAIN, changed_by=app_by)
        run = state in (S.READY, S.RESTART_READY)
        self.w.claim_no[tid] = self.w.claim_no.get(tid, 0) + 1
        if run:
            self.w.nodes.add(tid)
        self.carry(self.ledger.claimed(t, app, [], has_nodes=run))

    @rule(who=st.sampled_from([(), ("bob",)]))
    def trust_changes(self, who):
        """alice trusts bob, or no longer does (the loop reads it each poll)."""
        self.ledger.trusted = frozenset({"alice", *who})

    @precondition(lambda self: self.w.starting)
    @rule(data=st.data(), how=st.sampled_from(["started", "started", "failed", "no place"]))
    def start_result(self, data, how):
        tid = data.draw(st.sampled_from(self.w.starting))
        self.w.starting.remove(tid)
        if how == "started":
            self.w.procs[tid] = Proc()
            self.carry(self.ledger.started(tid, 10.0, "pid"))
        elif how == "failed":
            self.carry(self.ledger.start_failed(tid, 10.0, "starting", "no such file"))
        else:
            self.carry(self.ledger.not_started(tid, "cannot create its working directory"))

    @precondition(lambda self: self.w.procs)
    @rule(data=st.data(), rc=st.sampled_from([0, 0, 1, -15]))
    def process_exits(self, data, rc):
        tid = data.draw(st.sampled_from(sorted(self.w.procs)))
        proc = self.w.procs.pop(tid)
        self.carry(self.ledger.exited(tid, 20.0, rc, signalled=proc.signalled,
                                      last_line="last"))

    @precondition(lambda self: self.w.scripts)
    @rule(data=st.data(), ok=st.booleans(), sets_state=st.booleans())
    def script_ends(self, data, ok, sets_state):
        tid = data.draw(st.sampled_from(sorted(self.w.scripts)))
        kind = self.w.scripts.pop(tid)
        row = self.w.rows[tid]
        if ok and sets_state and kind not in ("stage_in", "preprocess", "stage_out") \
                and row.launcher == ME \
                and allowed(row.state, S.POSTPROCESSED):
            row.state, row.message = S.POSTPROCESSED, "set by the script"
        outcome = None if self.ledger.stopping is not None and not ok else ok
        self.carry(self.ledger.work_done(tid, kind, outcome, "detail"))

    # --- the database ----------------------------------------------------------------------------

    @precondition(lambda self: self.w.requests)
    @rule(fault=st.sampled_from(["none", "none", "none", "rollback", "lost_answer"]))
    def serve(self, fault):
        w = self.w
        kind, arg = w.requests.pop(0)
        if kind == "write":
            if fault == "rollback":
                w.results.append(("write_failed", arg))
            elif fault == "lost_answer":
                w.apply(arg)
                w.results.append(("write_failed", arg))
            else:
                w.results.append(("committed", arg, *w.apply(arg)))
        elif kind == "read":
            if fault == "rollback":
                w.results.append(("read_failed", arg))
            else:
                w.results.append(("read", arg, w.known(arg)))
        elif kind == "owned":
            w.results.append(("owned", {t: r.state for t, r in w.rows.items()
                                        if r.launcher == ME}, arg))

    @precondition(lambda self: self.w.results)
    @rule()
    def deliver(self):
        kind, *args = self.w.results.pop(0)
        ledger = self.ledger
        if kind == "committed":
            self.carry(ledger.committed(*args))
        elif kind == "write_failed":
            self.carry(ledger.write_failed(*args))
        elif kind == "read":
            self.carry(ledger.states_read(*args))
        elif kind == "read_failed":
            self.carry(ledger.read_failed(*args))
        elif kind == "owned":
            self.carry(ledger.reconciled(*args))

    @precondition(lambda self: self.w.requests)
    @rule(fault=st.sampled_from(["none", "none", "rollback", "lost_answer"]))
    def round_trip(self, fault):
        """A shortcut to deep sequences: one request served, then every answer read."""
        self.serve(fault)
        while self.w.results:
            self.deliver()

    @rule()
    def reconcile(self):
        self.w.requests.append(("owned", frozenset(self.ledger.tasks)))

    @precondition(lambda self: any(r.launcher == ME and r.state not in FINAL
                                   for r in self.w.rows.values()))
    @rule(data=st.data(), hint=st.booleans())
    def user_kills(self, data, hint):
        ids = sorted(t for t, r in self.w.rows.items() if r.launcher == ME
                     and r.state not in FINAL)
        tid = data.draw(st.sampled_from(ids))
        self.w.rows[tid].state = S.USER_KILLED
        self.w.troubled.add(tid)
        if hint:
            self.carry(self.ledger.kill_hint([tid]))

    @precondition(lambda self: self.ledger.tasks)
    @rule(data=st.data())
    def forged_kill_hint(self, data):
        self.carry(self.ledger.kill_hint([data.draw(st.sampled_from(sorted(self.ledger.tasks)))]))

    @precondition(lambda self: any(r.launcher == ME for r in self.w.rows.values()))
    @rule(data=st.data())
    def claim_lost(self, data):
        tid = data.draw(st.sampled_from(sorted(t for t, r in self.w.rows.items()
                                               if r.launcher == ME)))
        self.w.rows[tid].launcher = OTHER
        self.w.troubled.add(tid)

    # Rules that end the game act one time in eight, so that games get deep first.

    @rule(now=st.integers(0, 7))
    def stop(self, now=0):
        if now == 0:
            self.carry(self.ledger.stop("stopped"))

    @precondition(lambda self: not self.ledger.dead)
    @rule(now=st.integers(0, 7))
    def presumed_dead(self, now=0):
        if now:
            return
        for row in self.w.rows.values():  # the reaper takes everything
            if row.launcher == ME:
                row.launcher = None
                if row.state is S.RUNNING:
                    row.state = S.RESTART_READY
        self.w.troubled |= set(self.w.rows)
        self.carry(self.ledger.presumed_dead())

    # --- invariants ------------------------------------------------------------------------------

    @invariant()
    def consistent(self):
        self.ledger.check()
        w = self.w
        in_process = {t for t, e in self.ledger.tasks.items()
                      if e.phase in (P.RUN_QUEUED, P.RUN_WRITING, P.RUN_VERIFYING, P.RUNNING,
                                     P.STOPPING) and t not in w.starting}
        assert in_process == set(w.procs), "a process outlived its task, or the reverse"
        assert {t for t, e in self.ledger.tasks.items() if e.phase is P.WORKING} \
            == set(w.scripts)
        assert {t for t, e in self.ledger.tasks.items() if e.has_nodes} == w.nodes
        if self.ledger.stopping is not None:  # a stopping launcher stops every process
            assert all(p.signalled for p in w.procs.values())

    def teardown(self):
        """Let everything finish without faults: every claim must end given back (or parked
        by a stopping launcher, with no RUNNING task left), and every task whose run went
        undisturbed must have its outcome recorded."""
        if not hasattr(self, "ledger"):
            return
        w, ledger = self.w, self.ledger
        reconciled = False
        for _ in range(1000):
            if w.results:
                self.deliver()
            elif w.requests:
                self.serve("none")
            elif w.starting:
                tid = w.starting.pop(0)
                w.procs[tid] = Proc()
                self.carry(ledger.started(tid, 10.0, "pid"))
            elif w.procs:
                tid = min(w.procs)
                self.carry(ledger.exited(tid, 20.0, 0, signalled=w.procs.pop(tid).signalled))
            elif w.scripts:
                tid = min(w.scripts)
                self.carry(ledger.work_done(tid, w.scripts.pop(tid), True, "done"))
            elif not reconciled:
                reconciled = True
                self.reconcile()
            else:
                break
            self.consistent()
        assert not (w.results or w.requests or w.procs or w.scripts or w.starting)
        ours = {t: r for t, r in w.rows.items() if r.launcher == ME}
        if ledger.dead:
            assert not ledger.tasks
        elif ledger.stopping is not None:
            assert ledger.settled()
            assert set(ours) == set(ledger.tasks)
            assert all(r.state is not S.RUNNING for r in ours.values())
        else:
            assert not ledger.tasks and not ours, (ledger.tasks, ours)
            for tid, row in w.rows.items():
                if tid not in w.troubled:
                    assert row.state in FINAL or row.state in RUNNABLE, (tid, row)
                    assert row.state is not S.RUNNING


def test_random_orders_of_events():
    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=500, stateful_step_count=80, deadline=None))
