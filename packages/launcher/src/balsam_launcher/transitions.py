"""What a launcher does next with a task it holds: the legacy Balsam transitions as a pure
function of the task, so that the rules read (and test) apart from the machinery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from balsam.models import App, Task
from balsam.states import State

S = State

#: ``("move", (state, message))``, ``("start", None)``, ``("release", None)``, or a step run
#: by a worker thread: ``("stage_in" | "preprocess" | "postprocess" | "error_handler" |
#: "timeout_handler" | "stage_out", None)``.
Step = tuple[str, Any]

#: Steps that run in a worker thread (stage-in and scripts).
WORK = ("stage_in", "preprocess", "postprocess", "error_handler", "timeout_handler",
        "stage_out")


def next_step(task: Task, app: App, *, has_nodes: bool, has_parents: bool, max_retries: int,
              state: State | None = None, cause: str | None = None,
              attempts: int | None = None) -> Step | None:
    """The next step for a held task that is not running (in ``state``, by default its own), or
    None to leave it alone. ``cause`` is the message of the move into ``state`` (by default the
    task's own): why a run failed, which a FAILED task's message repeats. ``attempts`` counts
    the runs so far (by default the task's own).

    Legacy rules: stage-in with a ``stage_in_url``, or with parents and ``input_files``;
    stage-out after postprocessing with a ``stage_out_url``; preprocess once (a restart
    skips it); a run error goes to the app's postprocess script if ``post_error_handler``,
    else is retried up to ``max_retries`` times, else FAILED; a timeout goes to the script if
    ``post_timeout_handler``, else restarts if ``auto_timeout_retry``, else FAILED. Tasks in
    a state with no launcher work left (final, or runnable but without nodes) are released.
    """
    state = task.state if state is None else state
    cause = task.state_message if cause is None else cause
    attempts = task.attempts if attempts is None else attempts
    if state == S.READY:
        if task.stage_in_url or (task.input_files.strip() and has_parents):
            return ("stage_in", None)
        return ("move", (S.STAGED_IN, "nothing to stage in"))
    if state == S.STAGED_IN:
        if app.preprocess:
            return ("preprocess", None)
        return ("move", (S.PREPROCESSED, "no preprocess step"))
    if state in (S.PREPROCESSED, S.RESTART_READY):
        return ("start", None) if has_nodes else ("release", None)
    if state == S.RUNNING:
        return None
    if state == S.RUN_DONE:
        if app.postprocess:
            return ("postprocess", None)
        return ("move", (S.POSTPROCESSED, "no postprocess step"))
    if state == S.POSTPROCESSED:
        if task.stage_out_url:
            return ("stage_out", None)
        return ("move", (S.JOB_FINISHED, ""))
    if state == S.RUN_ERROR:
        if task.post_error_handler and app.postprocess:
            return ("error_handler", None)
        if attempts <= max_retries:
            retry = f"retry {attempts} of {max_retries}"
            return ("move", (S.RESTART_READY, _because(cause, retry)))
        return ("move", (S.FAILED, _because(cause or "the run failed",
                                            "no error handler, no retries left")))
    if state == S.RUN_TIMEOUT:
        if task.post_timeout_handler and app.postprocess:
            return ("timeout_handler", None)
        if task.auto_timeout_retry:
            return ("move", (S.RESTART_READY, _because(cause, "timed out: will restart")))
        return ("move", (S.FAILED, _because(cause, "timed out, without automatic retry or "
                                                   "timeout handler")))
    return ("release", None)


def _because(cause: str, decision: str) -> str:
    """A decision's message after the cause it follows from (``exit 3: oops; retry 1 of 2``)."""
    return f"{cause}; {decision}" if cause else decision


def after_script(state: State) -> tuple[State, str]:
    """The move when a post-processing script exits 0 but leaves the state as it was: done for
    a normal postprocess, FAILED for a handler (it was meant to decide)."""
    if state == S.RUN_DONE:
        return (S.POSTPROCESSED, "postprocess done")
    kind = "error" if state == S.RUN_ERROR else "timeout"
    return (S.FAILED, f"the {kind} handler exited 0 but left the task in {state}")


def move_times(state: State, chain: Sequence[tuple[State, str]], started_at: float | None,
               ended_at: float | None) -> list[float | None]:
    """When each move of ``chain`` (from ``state``) happened, in epoch seconds, or None for the
    database's clock: a run starts when its process was started (``started_at``) and ends when
    its exit was seen (``ended_at``); the formal steps written with them share the time of the
    move before them, or of the first dated move for those that led to it."""
    dated = []
    for dst, _ in chain:
        dated.append(started_at if dst == S.RUNNING else ended_at if state == S.RUNNING else None)
        state = dst
    first = next((at for at in dated if at is not None), None)
    times, last = [], first
    for at in dated:
        last = at if at is not None else last
        times.append(last)
    return times
