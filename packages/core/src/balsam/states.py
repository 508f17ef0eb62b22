"""The legacy Balsam task state machine: the one table of allowed transitions.

The database enforces the same table (``task_transitions``, synced from here by every migration
run), so a forbidden transition fails whoever attempts it, from Python, psql or a third-party tool.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    POSTPROCESSED = "POSTPROCESSED"
    JOB_FINISHED = "JOB_FINISHED"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    FAILED = "FAILED"
    USER_KILLED = "USER_KILLED"


S = State

#: States a task may be inserted in.
INITIAL: frozenset[State] = frozenset({S.CREATED, S.AWAITING_PARENTS, S.READY})

#: Terminal states (no launcher work left; a user may still reset some of them).
FINAL: frozenset[State] = frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED})

#: States in which an unclaimed task has launcher work to do.
RUNNABLE: frozenset[State] = frozenset(
    {S.READY, S.STAGED_IN, S.PREPROCESSED, S.RESTART_READY, S.RUN_DONE, S.RUN_ERROR,
     S.RUN_TIMEOUT, S.POSTPROCESSED}
)

#: Allowed transitions: from-state -> to-states. USER_KILLED is reachable from every
#: non-final state; users may reset FAILED, USER_KILLED, JOB_FINISHED and RUN_* tasks (to READY,
#: or to CREATED, which the database turns into READY at once, as a fresh start).
TRANSITIONS: dict[State, frozenset[State]] = {
    S.CREATED: frozenset({S.AWAITING_PARENTS, S.READY}),
    # A waiting task fails when a parent fails, unless it allows failed parents (migration 0025).
    S.AWAITING_PARENTS: frozenset({S.READY, S.FAILED}),
    S.READY: frozenset({S.STAGED_IN, S.AWAITING_PARENTS, S.FAILED}),
    S.STAGED_IN: frozenset({S.PREPROCESSED, S.FAILED}),
    S.PREPROCESSED: frozenset({S.RUNNING, S.FAILED}),
    S.RUNNING: frozenset({S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.RESTART_READY}),
    # A post-processing script may ask for another run (legacy allowed it) or fail the task.
    S.RUN_DONE: frozenset({S.POSTPROCESSED, S.RUN_ERROR, S.RESTART_READY, S.FAILED}),
    S.POSTPROCESSED: frozenset({S.JOB_FINISHED, S.FAILED}),
    S.RUN_ERROR: frozenset({S.POSTPROCESSED, S.RESTART_READY, S.FAILED, S.READY}),
    S.RUN_TIMEOUT: frozenset({S.POSTPROCESSED, S.RESTART_READY, S.FAILED, S.READY}),
    S.RESTART_READY: frozenset({S.RUNNING, S.PREPROCESSED, S.FAILED}),
    S.JOB_FINISHED: frozenset({S.READY}),
    # A task that failed only because a parent failed waits again when that parent is reset.
    # POSTPROCESSED: a user retries a failed stage-out alone (its outputs are still there).
    S.FAILED: frozenset({S.READY, S.RESTART_READY, S.AWAITING_PARENTS, S.POSTPROCESSED}),
    S.USER_KILLED: frozenset({S.READY}),
}
#: Legacy's reset (``balsam modify ID state CREATED``): from every state a launcher does not hold
#: in the middle of its work (the database refuses it for a task a launcher holds).
for _state in (S.AWAITING_PARENTS, S.READY, S.RUN_ERROR, S.RUN_TIMEOUT, *FINAL):
    TRANSITIONS[_state] = TRANSITIONS[_state] | {S.CREATED}
for _state in State:
    if _state not in FINAL:
        TRANSITIONS[_state] = TRANSITIONS[_state] | {S.USER_KILLED}
del _state


def parse_state(value: str) -> State:
    """Parse a state name case-insensitively; raise InvalidInput naming the valid ones."""
    from balsam.errors import InvalidInput

    try:
        return State(value.strip().upper())
    except ValueError:
        names = ", ".join(s.value for s in State)
        message = f"invalid state {value!r}; expected one of: {names}"
        raise InvalidInput(message) from None


def allowed(src: State, dst: State) -> bool:
    """Whether the state machine allows ``src -> dst``."""
    return dst in TRANSITIONS[src]
