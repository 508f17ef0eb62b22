"""The launcher's decisions for a held task (legacy Balsam's transitions)."""

from __future__ import annotations

import pytest

from balsam.models import App, Task
from balsam.states import State
from balsam_launcher.transitions import after_script, move_times, next_step

S = State
PLAIN = App(name="plain", executable="true")
SCRIPTS = App(name="scripts", executable="true", preprocess="pre.sh", postprocess="post.sh")


def step(state, app=PLAIN, *, nodes=True, parents=False, retries=0, **fields):
    task = Task(id=1, state=state, **fields)
    return next_step(task, app, has_nodes=nodes, has_parents=parents, max_retries=retries)


def test_fast_path_of_a_task_without_scripts():
    assert step(S.READY) == ("move", (S.STAGED_IN, "nothing to stage in"))
    assert step(S.STAGED_IN) == ("move", (S.PREPROCESSED, "no preprocess step"))
    assert step(S.PREPROCESSED) == ("start", None)
    assert step(S.RUNNING) is None
    assert step(S.RUN_DONE) == ("move", (S.POSTPROCESSED, "no postprocess step"))
    assert step(S.POSTPROCESSED) == ("move", (S.JOB_FINISHED, ""))
    assert step(S.JOB_FINISHED) == ("release", None)


def test_stage_in_only_with_parents_and_input_files():
    assert step(S.READY, input_files="*.dat")[0] == "move"
    assert step(S.READY, parents=True)[0] == "move"
    assert step(S.READY, parents=True, input_files="*.dat") == ("stage_in", None)


def test_staging_urls_stage_in_before_preprocess_and_out_after_postprocess():
    assert step(S.READY, stage_in_url="/in") == ("stage_in", None)  # parents or not
    assert step(S.POSTPROCESSED, stage_out_url="rsync://h/out") == ("stage_out", None)
    assert step(S.POSTPROCESSED, stage_out_files="*") == ("move", (S.JOB_FINISHED, ""))


def test_scripts_run_in_workers():
    assert step(S.STAGED_IN, SCRIPTS) == ("preprocess", None)
    assert step(S.RUN_DONE, SCRIPTS) == ("postprocess", None)


def test_restart_skips_preprocess_and_needs_nodes():
    assert step(S.RESTART_READY, SCRIPTS) == ("start", None)
    assert step(S.RESTART_READY, nodes=False) == ("release", None)


def test_run_error_handler_retry_or_fail():
    assert step(S.RUN_ERROR, SCRIPTS, post_error_handler=True) == ("error_handler", None)
    assert step(S.RUN_ERROR, PLAIN, post_error_handler=True, attempts=1)[1][0] == S.FAILED
    assert step(S.RUN_ERROR, retries=2, attempts=2) == ("move", (S.RESTART_READY,
                                                                 "retry 2 of 2"))
    assert step(S.RUN_ERROR, retries=2, attempts=3)[1][0] == S.FAILED


@pytest.mark.parametrize(("handler", "retry", "app", "expected"), [
    (True, True, SCRIPTS, ("timeout_handler", None)),
    (False, True, SCRIPTS, ("move", S.RESTART_READY)),
    (True, True, PLAIN, ("move", S.RESTART_READY)),
    (False, False, SCRIPTS, ("move", S.FAILED)),
])
def test_run_timeout(handler, retry, app, expected):
    kind, value = step(S.RUN_TIMEOUT, app, post_timeout_handler=handler,
                       auto_timeout_retry=retry)
    assert (kind, value if value is None else value[0]) == expected


def test_script_that_leaves_the_state_alone():
    assert after_script(S.RUN_DONE)[0] == S.POSTPROCESSED
    assert after_script(S.RUN_ERROR) == (S.FAILED, "the error handler exited 0 but left the "
                                                   "task in RUN_ERROR")
    assert after_script(S.RUN_TIMEOUT)[0] == S.FAILED


def test_moves_are_dated_by_the_run_they_start_or_end():
    def times(state, *states, started=None, ended=None):
        return move_times(state, [(s, "") for s in states], started, ended)

    # the formal steps before a start happened at the start
    assert times(S.READY, S.STAGED_IN, S.PREPROCESSED, S.RUNNING, started=5.0) == [5.0] * 3
    # the steps after an end happened at the end, up to the start of a retry
    assert times(S.RUNNING, S.RUN_ERROR, S.RESTART_READY, S.RUNNING, started=9.0,
                 ended=7.0) == [7.0, 7.0, 9.0]
    assert times(S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED,
                 ended=7.0) == [7.0] * 3
    # nothing to do with a run (after a script): the database's clock
    assert times(S.POSTPROCESSED, S.JOB_FINISHED, started=5.0, ended=7.0) == [None]
