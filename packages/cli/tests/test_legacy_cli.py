"""Legacy commands and options through the real CLI on a real database: mkchild, make_dummies,
``job --allow-failed-parents``, ``modify ID state CREATED|READY`` resets, and ``ls`` saying why a
task failed with its parent."""

from __future__ import annotations

import tracemalloc

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.models import Event
from balsam.plugins import get_plugin_manager
from balsam_cli.job_commands import MAX_VALUES
from balsam_cli.legacy_commands import make_dummies
from balsam_cli.main import build_cli
from balsam_testing.launchers import give_back, hold

pytestmark = pytest.mark.pg


@pytest.fixture
def balsam(project, monkeypatch):
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    api.add_app("sim", "/bin/true")
    cli = build_cli(get_plugin_manager())
    runner = CliRunner(env={"COLUMNS": "250"})

    def run(*args: str, ok: bool = True) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return run


def run_to(task: int, *states: str) -> None:
    hold(api.connection(), [task])
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING", *states):
        api.set_state([task], state)
    if states and states[-1] != "RUNNING":
        give_back(api.connection(), [task])


def test_mkchild_inside_a_task_or_with_a_parent(balsam, monkeypatch):
    parent = api.add_task("sim", name="p", workflow="wf")
    out = balsam("mkchild", "--parent", str(parent.id), "--name", "kid", "--app", "sim")
    [kid] = api.children(parent.id)
    assert out.startswith(f"Added task {kid} (AWAITING_PARENTS)")
    assert api.get_task(kid).workflow == "wf"  # the parent's, unless given
    error = balsam("mkchild", "--name", "orphan", "--app", "sim", ok=False)
    assert error.strip().splitlines()[-1] == (
        "Error: not inside a balsam task (BALSAM_TASK_ID is not set): mkchild makes a child of "
        "the task it runs in; give its parent with --parent ID")
    monkeypatch.setenv("BALSAM_TASK_ID", "abc")
    error = balsam("mkchild", "--name", "orphan", "--app", "sim", ok=False)
    assert "(BALSAM_TASK_ID is 'abc', not a task id)" in error.strip().splitlines()[-1]
    monkeypatch.setenv("BALSAM_TASK_ID", str(parent.id))
    balsam("mkchild", "--name", "kid2", "--workflow", "other", "--app", "sim",
           "--wall-minutes", "5", "--num-nodes", "2", "--yes")
    second = api.get_task(max(api.children(parent.id)))
    assert (second.name, second.workflow, second.wall_time_minutes, second.num_nodes) == (
        "kid2", "other", 5, 2)


def test_make_dummies(balsam):
    assert balsam("make_dummies", "3").startswith("Added 3 dummy tasks")
    balsam("make_dummies", "2", "--workflow", "more")
    assert api.get_app("dummy").executable == "echo"
    tasks = api.get_tasks(app="dummy")
    assert [(t.name, t.workflow, t.args, t.state) for t in tasks] == [
        ("dummy0", "dummy", "hello", "READY"), ("dummy1", "dummy", "hello", "READY"),
        ("dummy2", "dummy", "hello", "READY"), ("dummy0", "more", "hello", "READY"),
        ("dummy1", "more", "hello", "READY")]
    assert "Error: Invalid value for 'NUM'" in balsam("make_dummies", "0", ok=False)


def test_failed_parents_through_the_cli(balsam):
    parent = api.add_task("sim", name="parent", workflow="wf").id
    balsam("job", "--name", "strict", "--workflow", "wf", "--app", "sim", "--parent", str(parent))
    balsam("job", "--name", "tolerant", "--workflow", "wf", "--app", "sim", "--parent",
           str(parent), "--allow-failed-parents")
    strict, tolerant = api.task_ids(workflow="wf")[1:]
    assert api.get_task(tolerant).allow_failed_parents
    run_to(parent, "RUN_ERROR", "FAILED")
    listing = balsam("ls", "--workflow", "wf")
    line = next(ln for ln in listing.splitlines() if "strict" in ln)
    assert "FAILED" in line and f"parent {parent} is FAILED" in line
    line = next(ln for ln in listing.splitlines() if "tolerant" in ln)
    assert "READY" in line and "all parents ended, not all finished" in line
    balsam("modify", str(parent), "state", "READY", "-m", "fixed")  # the strict child waits again
    assert api.get_task(strict).state == "AWAITING_PARENTS"
    balsam("modify", str(tolerant), "allow_failed_parents", "false")
    assert api.get_task(tolerant).state == "AWAITING_PARENTS"
    run_to(parent, "RUN_ERROR", "FAILED")
    assert {api.get_task(t).state for t in (strict, tolerant)} == {"FAILED"}
    balsam("retry", "--workflow", "wf", "-y")  # all three at once: the children wait again
    assert [api.get_task(t).state for t in (parent, strict, tolerant)] == [
        "READY", "AWAITING_PARENTS", "AWAITING_PARENTS"]


def test_modify_state_created_or_ready_resets_a_task(balsam):
    task = api.add_task("sim", name="t").id
    run_to(task, "RUN_DONE", "POSTPROCESSED", "JOB_FINISHED")
    out = balsam("modify", str(task), "state", "CREATED")
    assert out.strip() == f"Task {task}: state = CREATED (READY)"
    run_to(task, "RUN_DONE", "POSTPROCESSED", "JOB_FINISHED")
    balsam("modify", str(task), "state", "READY")
    assert api.get_task(task).state == "READY"
    moves = [(e.from_state, e.to_state) for e in api.history(task) if isinstance(e, Event)]
    assert ("JOB_FINISHED", "CREATED") in moves and moves[-1] == ("JOB_FINISHED", "READY")
    run_to(task, "RUN_ERROR")
    balsam("modify", str(task), "state", "created")
    assert api.get_task(task).state == "READY"
    api.set_state([task], "STAGED_IN")
    error = balsam("modify", str(task), "state", "CREATED", ok=False)
    assert "STAGED_IN -> CREATED is not an allowed transition" in error


def test_make_dummies_is_bounded_and_streamed(balsam):
    """At most as many tasks as one sweep makes (it ran unbounded, filling memory); the tasks
    are streamed to the database, never all in memory."""
    assert make_dummies.params[0].type.max == MAX_VALUES
    for num in ("100000000", "9" * 30):
        assert "is not in the range 1<=x<=10000000" in balsam("make_dummies", num, ok=False)
    assert api.get_tasks() == []
    tracemalloc.start()
    try:
        balsam("make_dummies", "40000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert api.count_by_state(workflow="dummy") == {"READY": 40_000}
    assert peak < 15_000_000  # a list of their 40,000 specifications alone took 22 MB
