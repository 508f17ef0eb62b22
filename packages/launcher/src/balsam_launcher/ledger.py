"""The launcher's ledger: every task this launcher holds, where each one is in its life, and
what to do next, as pure decisions.

A held task is in exactly one :class:`Phase`. The loop feeds events in (tasks claimed, a run
started or ended, a batch of writes committed or failed, a script's result, states read back,
the tasks the database says we hold, a kill hint, a stop) and carries out the intents each event
returns (start a run, stop a process, run a script, re-read states, recover claims, free nodes,
log a line). Writes are not intents: each task's moves wait in the ledger and
:meth:`Ledger.next_batch` hands them out, one batch in flight at a time, so a task's moves are
written in order and a batch that fails is sent again whole.

The database decides, the ledger follows: a write that does not land as sent, a kill hint and
a script's end are all answered by re-reading the task (claim-checked) and acting on what the
database says. A task whose database state is RUNNING is never given back without its outcome:
the only releases the ledger asks for are of tasks it knows to be in another state, and a task
it loses track of is recovered by the database's recovery rule (``recover_claims``), never
simply released.

No I/O, no clock (times come in with the events), no database: ``tests/test_ledger.py``.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from balsam.claim import untrusted
from balsam.models import App, Task
from balsam.states import State
from balsam_launcher.transitions import after_script, move_times, next_step

S = State

#: The longest chain of moves decided at once (a guard against a cycle in the rules).
MAX_CHAIN = 8


class Phase(Enum):
    """Where a held task is. Phases marked (p) have a process (or one being started)."""

    QUEUED = "its moves (and perhaps the release) wait for the next batch"
    WRITING = "its moves are in the batch in flight"
    VERIFYING = "its moves did not land as sent: re-reading its state"
    WORKING = "stage-in, stage-out or a pre- or post-processing script runs"
    RECHECKING = "a post-processing script ended: re-reading the state it may have set"
    PARKED = "nothing more before the launcher ends (it is stopping)"
    STARTING = "(p) its run is being started"
    RUN_QUEUED = "(p) its process runs; the moves up to RUNNING wait for the next batch"
    RUN_WRITING = "(p) its process runs; the moves up to RUNNING are in the batch in flight"
    RUN_VERIFYING = "(p) its process runs; those moves did not land as sent: re-reading"
    RUNNING = "(p) its process runs; RUNNING is written"
    ENDED_WRITING = "its process ended while RUNNING was being written: the outcome waits"
    STOPPING = "(p) its process is being stopped: the task is no longer ours to run"


P = Phase
#: Phases with a process, or a start under way.
PROCESS = frozenset({P.STARTING, P.RUN_QUEUED, P.RUN_WRITING, P.RUN_VERIFYING, P.RUNNING,
                     P.STOPPING})
#: Phases whose process runs freely (a launcher that stops, stops them).
RUNS = frozenset({P.RUN_QUEUED, P.RUN_WRITING, P.RUN_VERIFYING, P.RUNNING})
#: Phases whose moves wait for the next batch, and those whose moves are in the batch in flight.
QUEUES = frozenset({P.QUEUED, P.RUN_QUEUED})
WRITES = frozenset({P.WRITING, P.RUN_WRITING, P.ENDED_WRITING})
#: Phases waiting for a state re-read.
READS = frozenset({P.VERIFYING, P.RUN_VERIFYING, P.RECHECKING})
#: Phases in which news that the task is killed or lost waits: what is under way (a write, a
#: start, a script) ends in a write or a read, which tells again.
DEAF = frozenset({P.WRITING, P.RUN_WRITING, P.ENDED_WRITING, P.STARTING, P.WORKING})
#: Steps that run something of the task's or its app's (each is judged by trust first).
WORK = frozenset({"stage_in", "preprocess", "postprocess", "error_handler", "timeout_handler",
                  "stage_out"})


class Step(NamedTuple):
    """One move of a task: the state it goes to and why."""

    state: State
    message: str


class Known(NamedTuple):
    """A held task as the database has it (a claim-checked re-read)."""

    state: State
    message: str
    attempts: int


@dataclass(eq=False)
class Entry:
    """A held task. ``task`` is the database's view as of the last write or read (its state,
    message and attempts); the rest is the payload of its phase."""

    task: Task
    app: App
    parent_ids: list[int]
    #: Nodes are held for it (from the claim until its run ends or it is given back).
    has_nodes: bool
    phase: Phase = P.PARKED
    #: Moves decided and not yet written (QUEUED, WRITING, VERIFYING, STARTING, RUN_QUEUED,
    #: RUN_WRITING, RUN_VERIFYING, ENDED_WRITING): the batch in flight says which it carries.
    moves: list[Step] = field(default_factory=list)
    #: Give the claim back once ``moves`` are written (QUEUED, WRITING, VERIFYING), or once the
    #: process is gone (STOPPING; False there: the task is no longer ours at all).
    release: bool = False
    #: When the last run's process started and its exit was seen (epoch seconds): the times
    #: of the moves into and out of RUNNING, however late they are written.
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def id(self) -> int:
        assert self.task.id is not None
        return self.task.id


# --- intents -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start the task's run now on its nodes; report :meth:`Ledger.started` or
    :meth:`Ledger.start_failed` before anything else about it."""

    task_id: int


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the task's process: SIGTERM, SIGKILL after the grace period (``now``: at once)."""

    task_id: int
    now: bool = False


@dataclass(frozen=True, slots=True)
class Work:
    """Run a step in the script pool: ``stage_in``, ``preprocess``, ``postprocess``,
    ``error_handler``, ``timeout_handler`` or ``stage_out``; report :meth:`Ledger.work_done`."""

    task_id: int
    kind: str


@dataclass(frozen=True, slots=True)
class Read:
    """Re-read these tasks, claim-checked; report :meth:`Ledger.states_read`."""

    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Recover:
    """The database says we hold these tasks and the ledger does not know them: give them back
    by the recovery rule (a RUNNING one restarts or times out)."""

    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Free:
    """The task no longer needs its nodes."""

    task_id: int


@dataclass(frozen=True, slots=True)
class Note:
    """A line for the launcher's log (``level``: ``info`` or ``warning``)."""

    level: str
    text: str


Intent = Start | Stop | Work | Read | Recover | Free | Note


# --- batches -------------------------------------------------------------------------------------


class Chain(NamedTuple):
    """A task's moves in a batch: from ``source`` (its state in the database), each dated."""

    source: State
    moves: tuple[Step, ...]
    times: tuple[float | None, ...]


class Group(NamedTuple):
    """Moves of several tasks with the same (from, to) and position in their chains: one
    statement. ``at`` is when each happened (epoch seconds; None: the database's clock)."""

    from_state: State
    to_state: State
    messages: dict[int, str]
    at: dict[int, float | None]


@dataclass(frozen=True, eq=False)
class Batch:
    """One round trip of writes: each task's chain of moves, then the claims to give back."""

    chains: dict[int, Chain]
    release: frozenset[int]

    def groups(self) -> list[Group]:
        """The moves as statements, in an order that writes each task's chain in order: by
        position in the chain, then by (from, to)."""
        layers: list[dict[tuple[State, State], Group]] = []
        for tid, chain in self.chains.items():
            src = chain.source
            for i, (step, at) in enumerate(zip(chain.moves, chain.times, strict=True)):
                if i == len(layers):
                    layers.append({})
                group = layers[i].get((src, step.state))
                if group is None:
                    group = layers[i][src, step.state] = Group(src, step.state, {}, {})
                group.messages[tid] = step.message
                group.at[tid] = at
                src = step.state
        return [g for layer in layers for g in layer.values()]


# --- the ledger ----------------------------------------------------------------------------------


class Ledger:
    """Every task this launcher holds. Each event method returns the intents to carry out."""

    def __init__(self, *, max_retries: int = 0, trusted: Collection[str] | None = None) -> None:
        self.max_retries = max_retries
        #: The users whose tasks this launcher runs (the loop keeps it current); a task or app
        #: last changed by anyone else is given back instead of started or worked on. None: not
        #: judged again here (the claims alone judge).
        self.trusted = None if trusted is None else frozenset(trusted)
        #: How the runs of this launcher ended: RUN_DONE, RUN_ERROR or RUN_TIMEOUT (progress).
        self.outcomes: Counter[State] = Counter()
        self.tasks: dict[int, Entry] = {}
        #: Why the launcher stops (no more starts or scripts), None while it works.
        self.stopping: str | None = None
        #: Presumed dead: nothing more is written; processes are killed at once.
        self.dead = False
        self.in_flight: Batch | None = None
        self._queued: dict[int, None] = {}  # the tasks in QUEUES, in order
        self._waiting: dict[int, None] = {}  # QUEUED tasks whose next step waits for the write
        self._count: Counter[Phase] = Counter()

    # --- reading ---------------------------------------------------------------------------------

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def count(self, *phases: Phase) -> int:
        return sum(self._count[p] for p in phases)

    def active(self) -> int:
        """Processes and scripts: what the launcher waits for whatever the database does."""
        return self.count(*PROCESS, P.WORKING)

    def queued(self) -> int:
        """How many tasks have moves waiting for the next batch."""
        return len(self._queued)

    def waiting(self) -> bool:
        """Whether a queued write holds a task back (its next step, a script or a start, comes
        once it is written); the others only record what happened, or give claims back."""
        return bool(self._waiting)

    def settled(self) -> bool:
        """Nothing left to do or to write: every task is PARKED."""
        return self.in_flight is None and self._count[P.PARKED] == len(self.tasks)

    def next_batch(self) -> Batch | None:
        """The queued moves and releases as one batch (none while one is in flight, or when
        presumed dead). The loop reports :meth:`committed` or :meth:`write_failed`."""
        if self.in_flight is not None or self.dead or not self._queued:
            return None
        chains, release = {}, []
        for tid in list(self._queued):
            e = self.tasks[tid]
            times = move_times(e.task.state, e.moves, e.started_at, e.ended_at)
            chains[tid] = Chain(e.task.state, tuple(e.moves), tuple(times))
            if e.release:
                release.append(tid)
            self._set(e, P.WRITING if e.phase is P.QUEUED else P.RUN_WRITING)
        self.in_flight = Batch(chains, frozenset(release))
        return self.in_flight

    # --- events: claims and runs -----------------------------------------------------------------

    def claimed(self, task: Task, app: App, parent_ids: list[int], *, has_nodes: bool,
                refusal: str | None = None) -> list[Intent]:
        """A claim gave us ``task`` (with nodes for its run, or without: post-processing).
        ``refusal``: why this launcher will not run it (it is FAILED with that message)."""
        assert task.id is not None and task.id not in self.tasks
        if self.dead:  # the reaper has taken it back already
            return [Free(task.id)] if has_nodes else []
        e = Entry(task, app, parent_ids, has_nodes)
        self.tasks[task.id] = e
        self._count[e.phase] += 1
        return self._decide(e, [Step(S.FAILED, refusal)] if refusal else [])

    def started(self, task_id: int, at: float, message: str) -> list[Intent]:
        """The run of a STARTING task began at ``at``; ``message`` says where (RUNNING's)."""
        e = self.tasks[task_id]
        e.started_at = at
        if e.phase is P.STOPPING:  # presumed dead while it started
            return [Stop(task_id, now=True)]
        assert e.phase is P.STARTING, e.phase
        e.moves.append(Step(S.RUNNING, message))
        self._set(e, P.RUN_QUEUED)
        return [Stop(task_id)] if self.stopping is not None else []  # stopped while starting

    def start_failed(self, task_id: int, at: float, message: str, reason: str) -> list[Intent]:
        """The run of a STARTING task could not start (``reason``): RUNNING, then RUN_ERROR."""
        e = self.tasks[task_id]
        e.started_at = e.ended_at = at
        intents = self._free(e)
        if e.phase is P.STOPPING:
            return intents + self._gone(e)
        assert e.phase is P.STARTING, e.phase
        self.outcomes[S.RUN_ERROR] += 1
        moves = [*e.moves, Step(S.RUNNING, message), Step(S.RUN_ERROR, f"cannot start: {reason}")]
        return intents + self._decide(e, moves)

    def not_started(self, task_id: int, reason: str) -> list[Intent]:
        """The run of a STARTING task could not even be set up (its working directory or
        output file): it is FAILED with ``reason``, without a run."""
        e = self.tasks[task_id]
        intents = self._free(e)
        if e.phase is P.STOPPING:
            return intents + self._gone(e)
        assert e.phase is P.STARTING, e.phase
        return intents + self._decide(e, [*e.moves, Step(S.FAILED, reason)])

    def exited(self, task_id: int, at: float, returncode: int, *, signalled: bool,
               error: str = "", last_line: str = "") -> list[Intent]:
        """A task's process ended at ``at``. ``signalled``: the launcher had signalled it;
        ``error``: it never started (an agent could not start it); ``last_line``: the last line
        of its output."""
        e = self.tasks[task_id]
        e.ended_at = at
        intents = self._free(e)
        if e.phase is P.STOPPING:
            return intents + self._gone(e)
        outcome = self._outcome(e, at, returncode, signalled, error, last_line)
        self.outcomes[outcome.state] += 1
        if e.phase is P.RUNNING:
            return intents + self._decide(e, [outcome])
        if e.phase is P.RUN_QUEUED:
            return intents + self._decide(e, [*e.moves, outcome])
        e.moves.append(outcome)
        if e.phase is P.RUN_WRITING:
            self._set(e, P.ENDED_WRITING)
        else:
            assert e.phase is P.RUN_VERIFYING, e.phase
            self._set(e, P.VERIFYING)
        return intents

    def _outcome(self, e: Entry, at: float, returncode: int, signalled: bool, error: str,
                 last_line: str) -> Step:
        elapsed = at - (e.started_at if e.started_at is not None else at)
        if signalled and self.stopping is not None:
            return Step(S.RUN_TIMEOUT, f"stopped after {elapsed:.1f}s: {self.stopping}")
        if error:
            return Step(S.RUN_ERROR, f"cannot start: {error}")
        if returncode == 0:
            return Step(S.RUN_DONE, f"exit 0 after {elapsed:.1f}s")
        why = f"killed by {_signal_name(-returncode)}" if returncode < 0 else f"exit {returncode}"
        return Step(S.RUN_ERROR, f"{why}: {last_line}" if last_line else why)

    def work_done(self, task_id: int, kind: str, ok: bool | None, detail: str) -> list[Intent]:
        """A step of the script pool ended: ``ok`` None if it was stopped with the launcher,
        False if it failed (``detail`` says why)."""
        e = self.tasks.get(task_id)
        if e is None or e.phase is not P.WORKING:
            return []
        if self.dead:
            return self._forget(e)
        if ok is None:
            self._set(e, P.PARKED)
            return self._free(e)
        if not ok:
            return self._decide(e, [Step(S.FAILED, detail)])
        if kind == "stage_in":
            return self._decide(e, [Step(S.STAGED_IN, detail)])
        if kind == "preprocess":
            return self._decide(e, [Step(S.PREPROCESSED, detail)])
        if kind == "stage_out":
            return self._decide(e, [Step(S.JOB_FINISHED, detail)])
        self._set(e, P.RECHECKING)  # the script may have set the state itself
        return [Read((task_id,))]

    # --- events: the database --------------------------------------------------------------------

    def committed(self, batch: Batch, reached: Mapping[int, list[State]],
                  released: Iterable[int]) -> list[Intent]:
        """The batch in flight was written: ``reached`` the states each task's moves reached,
        ``released`` the claims given back."""
        if batch is not self.in_flight:
            return []  # presumed dead meanwhile
        self.in_flight = None
        released = set(released)
        intents: list[Intent] = []
        verify = []
        for tid, chain in batch.chains.items():
            e = self.tasks.get(tid)
            if e is None or e.phase not in WRITES:
                continue
            sent = chain.moves
            if list(reached.get(tid, ())) != [m.state for m in sent]:
                if tid in released:  # given back though its moves did not land: not RUNNING
                    intents += self._forget(e)
                    continue
                self._set(e, P.RUN_VERIFYING if e.phase is P.RUN_WRITING else P.VERIFYING)
                verify.append(tid)
                continue
            if sent:
                e.task.state, e.task.state_message = sent[-1]
                e.task.attempts += sum(1 for m in sent if m.state is S.RUNNING)
            rest = e.moves[len(sent):]
            if e.phase is P.RUN_WRITING:
                e.moves = rest
                self._set(e, P.RUNNING)
            elif tid in batch.release:
                intents += self._forget(e)
            else:  # WRITING, or ENDED_WRITING with its outcome to write now
                intents += self._decide(e, rest)
        if verify:
            intents.append(Read(tuple(verify)))
        return intents

    def write_failed(self, batch: Batch) -> list[Intent]:
        """The batch in flight was not written (rolled back, or the connection failed): its
        tasks' moves wait for the next batch, unchanged."""
        if batch is not self.in_flight:
            return []
        self.in_flight = None
        for tid in batch.chains:
            e = self.tasks.get(tid)
            if e is not None and e.phase in WRITES:
                self._set(e, P.RUN_QUEUED if e.phase is P.RUN_WRITING else P.QUEUED)
        return []

    def states_read(self, asked: Iterable[int], found: Mapping[int, Known]) -> list[Intent]:
        """A claim-checked re-read: ``found`` has the tasks of ``asked`` still ours."""
        if self.dead:
            return []
        intents: list[Intent] = []
        for tid in asked:
            e = self.tasks.get(tid)
            if e is None:
                continue
            known = found.get(tid)
            if known is None:
                intents += self._let_go(e, "is no longer held by this launcher", lost=True)
            elif known.state is S.USER_KILLED:
                intents += self._let_go(e, "was killed by a user", known=known)
            elif e.phase is P.RECHECKING:
                intents += self._rechecked(e, known)
            elif e.phase in (P.VERIFYING, P.RUN_VERIFYING):
                intents += self._resume(e, known)
        return intents

    def read_failed(self, asked: Iterable[int]) -> list[Intent]:
        """A re-read failed: ask again for the tasks still waiting for one."""
        again = tuple(t for t in asked if t in self.tasks and self.tasks[t].phase in READS)
        return [Read(again)] if again and not self.dead else []

    def reconciled(self, owned: Mapping[int, State],
                   known: Iterable[int] | None = None) -> list[Intent]:
        """What the database says this launcher holds (read after every write sent before);
        ``known``: the tasks the ledger held when it asked (a task claimed since may be missing
        from the answer: it is not judged). Unknown claims are to be recovered, less any claimed
        since (the caller checks again when it recovers them)."""
        if self.dead:
            return []
        intents: list[Intent] = []
        asked = None if known is None else set(known)
        for e in [e for t, e in self.tasks.items() if asked is None or t in asked]:
            state = owned.get(e.id)
            if state is None:
                intents += self._let_go(e, "is no longer held by this launcher", lost=True)
            elif state is S.USER_KILLED:
                intents += self._let_go(e, "was killed by a user",
                                        known=Known(state, e.task.state_message, e.task.attempts))
        unknown = tuple(sorted(t for t in owned if t not in self.tasks))
        if unknown:
            intents.append(Recover(unknown))
        return intents

    def kill_hint(self, ids: Iterable[int]) -> list[Intent]:
        """Someone says these tasks were killed: ask the database (anyone may send the hint)."""
        held = tuple(sorted({i for i in ids if i in self.tasks}))
        return [Read(held)] if held and not self.dead else []

    # --- events: the launcher --------------------------------------------------------------------

    def stop(self, reason: str) -> list[Intent]:
        """No more starts, claims or scripts; running processes are stopped (their runs end
        RUN_TIMEOUT) and what is decided is still written."""
        if self.stopping is not None:
            return []
        self.stopping = reason
        return [Stop(e.id) for e in self.tasks.values() if e.phase in RUNS]

    def presumed_dead(self) -> list[Intent]:
        """Others own our tasks now: kill every process at once and write nothing more."""
        if self.dead:
            return []
        self.dead = True
        self.stopping = self.stopping or "presumed dead"
        self.in_flight = None
        intents: list[Intent] = []
        for e in list(self.tasks.values()):
            if e.phase in PROCESS:
                e.moves, e.release = [], False
                self._set(e, P.STOPPING)
                intents.append(Stop(e.id, now=True))
            elif e.phase is not P.WORKING:  # a script's end forgets it
                intents += self._forget(e)
        return intents

    # --- decisions -------------------------------------------------------------------------------

    def _decide(self, e: Entry, moves: list[Step]) -> list[Intent]:
        """Extend ``moves`` with every move that needs no waiting, then take the next step: start
        the run now (the moves are written with it), queue the moves (with the release when
        nothing is left to do), or run a script once they are written."""
        state, cause = moves[-1] if moves else (e.task.state, e.task.state_message)
        attempts = e.task.attempts + sum(1 for m in moves if m.state is S.RUNNING)
        happened = len(moves)
        kind = None
        if self.stopping is None:
            for _ in range(MAX_CHAIN):
                step = next_step(e.task, e.app, state=state, cause=cause, attempts=attempts,
                                 has_nodes=e.has_nodes, has_parents=bool(e.parent_ids),
                                 max_retries=self.max_retries)
                kind = step[0] if step is not None else None
                if kind != "move":
                    break
                state, cause = step[1]  # type: ignore[index]
                moves.append(Step(state, cause))
                kind = None
        e.moves, e.release = moves, kind == "release"
        acts = kind == "start" or (kind in WORK and not moves)
        why = untrusted(e.task, e.app, self.trusted) if acts and self.trusted is not None else None
        if why is not None:  # what happened is written, nothing more, and the claim given back
            e.moves, e.release = moves[:happened], True
            self._set(e, P.QUEUED)
            note = Note("warning", f"task {e.id} not run and given back: {why}, whom this "
                                   f"launcher does not trust")
            return [note, *self._free(e)]
        if kind == "start":
            self._set(e, P.STARTING)
            return [Start(e.id)]
        if acts:
            assert kind is not None
            self._set(e, P.WORKING)
            return [Work(e.id, kind)]
        if moves or e.release:
            self._set(e, P.QUEUED)
            # nodes are for starting: a task that will not start now gives them back
            return self._free(e) if e.release else []
        self._set(e, P.PARKED)
        return self._free(e)

    def _rechecked(self, e: Entry, known: Known) -> list[Intent]:
        """After a post-processing script: adopt the state it set, or apply the default."""
        if known.state is e.task.state:
            return self._decide(e, [Step(*after_script(known.state))])
        e.task.state, e.task.state_message, e.task.attempts = known
        note = Note("info", f"task {e.id}: its script set {known.state}")
        return [note, *self._decide(e, [])]

    def _resume(self, e: Entry, known: Known) -> list[Intent]:
        """A write that did not land as sent, re-read: resume after what did land (a commit
        whose answer was lost), or let the task go if someone else changed it."""
        states = [m.state for m in e.moves]
        if known.state in states:
            landed = states.index(known.state) + 1
        elif known.state is e.task.state:
            landed = 0
        elif known.state is S.RUNNING:  # cannot be ours to judge: the recovery rule will
            return self._let_go(e, "is RUNNING but not as this launcher wrote it", lost=True)
        else:
            return self._let_go(e, f"was set to {known.state} by someone else", known=known)
        e.task.state, e.task.state_message, e.task.attempts = known
        rest = e.moves[landed:]
        if e.phase is P.RUN_VERIFYING:
            e.moves = rest
            self._set(e, P.RUN_QUEUED if rest else P.RUNNING)
            return []
        if rest or e.release:
            e.moves = rest
            self._set(e, P.QUEUED)
            return []
        return self._decide(e, [])

    def _let_go(self, e: Entry, why: str, *, lost: bool = False,
                known: Known | None = None) -> list[Intent]:
        """The database says the task is no longer ours to advance: ``lost`` (no longer ours
        at all), or ``known`` in a state that is not RUNNING (killed, or changed by someone
        else): stop its process if it has one, then give the claim back (not when lost)."""
        if e.phase in DEAF:
            return []
        if e.phase is P.STOPPING:
            e.release = e.release and not lost
            return []
        if known is not None:
            e.task.state, e.task.state_message, e.task.attempts = known
        level = "warning" if lost else "info"
        if e.phase in RUNS:
            e.moves, e.release = [], not lost
            self._set(e, P.STOPPING)
            return [Note(level, f"task {e.id} {why}: stopping it"), Stop(e.id)]
        note = Note(level, f"task {e.id} {why}")
        if lost:
            return [note, *self._forget(e)]
        e.moves, e.release = [], True
        self._set(e, P.QUEUED)
        return [note, *self._free(e)]

    def _gone(self, e: Entry) -> list[Intent]:
        """The process of a STOPPING task is gone: give the claim back, or forget the task."""
        if self.dead or not e.release:
            return self._forget(e)
        e.moves = []
        self._set(e, P.QUEUED)
        return []

    # --- bookkeeping -----------------------------------------------------------------------------

    def _set(self, e: Entry, phase: Phase) -> None:
        if e.phase in QUEUES:
            self._queued.pop(e.id, None)
            self._waiting.pop(e.id, None)
        if phase in QUEUES:
            self._queued[e.id] = None
            if phase is P.QUEUED and not e.release:
                self._waiting[e.id] = None
        self._count[e.phase] -= 1
        self._count[phase] += 1
        e.phase = phase

    def _free(self, e: Entry) -> list[Intent]:
        if not e.has_nodes:
            return []
        e.has_nodes = False
        return [Free(e.id)]

    def _forget(self, e: Entry) -> list[Intent]:
        """The task is no longer ours (given back, or lost)."""
        self._queued.pop(e.id, None)
        self._waiting.pop(e.id, None)
        self._count[e.phase] -= 1
        del self.tasks[e.id]
        return self._free(e)

    def check(self) -> None:
        """Assert that every task's payload fits its phase (tests call it after each event)."""
        assert sum(self._count.values()) == len(self.tasks)
        assert self._queued.keys() == {t for t, e in self.tasks.items() if e.phase in QUEUES}
        assert self._waiting.keys() == {t for t, e in self.tasks.items()
                                        if e.phase is P.QUEUED and not e.release}
        flying = set(self.in_flight.chains) if self.in_flight else set()
        for tid, e in self.tasks.items():
            assert (e.phase in WRITES) == (tid in flying), (tid, e.phase)
            if e.phase in (P.QUEUED, P.WRITING):
                assert e.moves or e.release, (tid, e.phase)
            if e.release:
                assert e.phase in (P.QUEUED, P.WRITING, P.VERIFYING, P.STOPPING), (tid, e.phase)
            if e.phase in (P.RUN_QUEUED, P.RUN_WRITING, P.RUN_VERIFYING):
                assert e.moves and e.moves[-1].state is S.RUNNING, (tid, e.moves)
            if e.phase is P.ENDED_WRITING:
                assert len(e.moves) >= 2 and e.moves[-2].state is S.RUNNING, (tid, e.moves)
            if e.phase is P.RUNNING:
                assert not e.moves and e.task.state is S.RUNNING, (tid, e.moves)
            if e.phase in (P.WORKING, P.RECHECKING, P.PARKED, P.STOPPING):
                assert not e.moves, (tid, e.phase, e.moves)
            if e.phase in (P.PARKED, P.ENDED_WRITING) or (e.release and e.phase in WRITES):
                assert not e.has_nodes, (tid, e.phase)  # nodes are for starting


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"
