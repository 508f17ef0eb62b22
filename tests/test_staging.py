"""Data staging through a real launcher on a real database: stage-in before preprocessing,
stage-out after postprocessing, as legacy Balsam did; a failed transfer ends the task FAILED
with a message saying why, and loses nothing: a failed stage-in never runs the task, a failed
stage-out keeps its outputs and is retried alone (``modify ID state POSTPROCESSED``), counting
real runs. The audit: who changed a task's URLs is who changed what a launcher executes."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.db import connect
from balsam.errors import InvalidInput
from balsam.models import Change, Event
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_launcher import transfers
from balsam_launcher.launcher import Launcher, Options
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg

#: Reads the staged-in file, writes an output, and counts its own runs.
WORK = """#!/bin/sh
tr a-z A-Z < input.txt > result.txt
echo "$BALSAM_TASK_ID" >> "$1"
"""
POST = """#!/bin/sh
echo post > post.txt
"""


def run_launcher(project) -> Launcher:
    options = Options(job_mode="serial", nodes=2, consume_all=True, time_limit_minutes=5,
                      poll_interval=0.2)
    launcher = Launcher(project, options, get_plugin_manager())
    launcher.exit_code = launcher.run()
    return launcher


def moves(task_id: int) -> list[tuple[str, str]]:
    return [(e.to_state, e.message) for e in api.history(task_id) if isinstance(e, Event)]


@pytest.fixture
def app(tmp_path):
    work, post = tmp_path / "work.sh", tmp_path / "post.sh"
    work.write_text(WORK)
    post.write_text(POST)
    return api.add_app("upper", f"/bin/sh {work}", postprocess=f"/bin/sh {post}")


def test_stage_in_run_postprocess_stage_out(project, tmp_path, app):
    source = tmp_path / "inputs"
    source.mkdir()
    (source / "input.txt").write_text("hello\n")
    counts, out = tmp_path / "counts", tmp_path / "results" / "run1"
    task = api.add_task("upper", name="t", workflow="wf", args=str(counts),
                        stage_in_url=f"file://{source}/", stage_out_url=f"local:{out}",
                        stage_out_files="result.txt post.txt")
    launcher = run_launcher(project)
    assert launcher.exit_code == 0
    assert moves(task.id) == [
        ("READY", ""), ("STAGED_IN", f"1 item(s) staged in from file://{source}/"),
        ("PREPROCESSED", "no preprocess step"), *moves(task.id)[3:5],
        ("POSTPROCESSED", "postprocess done"),
        ("JOB_FINISHED", f"2 item(s) staged out to local:{out}")]
    assert [s for s, _ in moves(task.id)[3:5]] == ["RUNNING", "RUN_DONE"]
    assert (out / "result.txt").read_text() == "HELLO\n"
    assert (out / "post.txt").read_text() == "post\n"  # after the postprocess script
    assert lt.executions(counts) == {task.id: 1}


def test_failed_transfers_lose_nothing(project, tmp_path, app):
    counts = tmp_path / "counts"
    (tmp_path / "a file").write_text("")
    bad_in = api.add_task("upper", name="in", workflow="wf", args=str(counts),
                          stage_in_url=f"file://{tmp_path}/missing")
    bad_out = api.add_task("upper", name="out", workflow="wf", args=str(counts),
                           stage_in_url=f"{tmp_path}/inputs/input.txt", stage_out_files="*.txt",
                           stage_out_url=f"file://{tmp_path}/a file/results")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "input.txt").write_text("data\n")
    run_launcher(project)
    failed_in = api.get_task(bad_in.id)
    assert failed_in.state == "FAILED"
    assert failed_in.state_message == (f"stage-in from file://{tmp_path}/missing failed: No such "
                                       f"file or directory: {tmp_path}/missing")
    failed_out = api.get_task(bad_out.id)
    workdir = project.root / failed_out.workdir
    assert failed_out.state == "FAILED"
    assert failed_out.state_message == (
        f"stage-out to file://{tmp_path}/a file/results failed: Not a directory: {tmp_path}/"
        f"a file; the outputs stay in {workdir}")
    assert (workdir / "result.txt").read_text() == "DATA\n"
    assert lt.executions(counts) == {bad_out.id: 1}  # the failed stage-in never ran its task
    # Fixed, the stage-out alone is tried again: the task does not run a second time.
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    for args in (["modify", str(bad_out.id), "stage_out_url", f"{tmp_path}/results"],
                 ["modify", str(bad_out.id), "state", "POSTPROCESSED", "-m", "fixed the URL"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    run_launcher(project)
    assert api.get_task(bad_out.id).state == "JOB_FINISHED"
    assert (tmp_path / "results" / "input.txt").read_text() == "data\n"
    assert (tmp_path / "results" / "result.txt").read_text() == "DATA\n"
    assert lt.executions(counts) == {bad_out.id: 1}


def test_rsync_stage_out_through_a_launcher(project, tmp_path, app, monkeypatch):
    """The real rsync, started by the launcher with its argument list, over a local stand-in
    for ssh (the cluster tests have no sshd)."""
    monkeypatch.setenv(transfers.SSH_VARIABLE, str(lt.fake_ssh(tmp_path)))
    source = tmp_path / "src dir"
    source.mkdir()
    (source / "input.txt").write_text("abc\n")
    task = api.add_task("upper", name="r", workflow="wf", args=str(tmp_path / "counts"),
                        stage_in_url=f"rsync://login{source}/",
                        stage_out_url=f"rsync://me@login:22{tmp_path}/out dir",
                        stage_out_files="result.txt")
    run_launcher(project)
    assert api.get_task(task.id).state == "JOB_FINISHED", api.get_task(task.id).state_message
    assert (tmp_path / "out dir" / "result.txt").read_text() == "ABC\n"


def test_changing_a_url_is_audited(project, tmp_path, app):
    task = api.add_task("upper", name="t", stage_out_url="/data/a")
    with connect(project) as db:
        before = db.execute("SELECT changed_at FROM tasks WHERE id = %s", [task.id]).fetchone()
        api.modify_task(task.id, "url_out", "scp://dtn/data/b", conn=db)
        after = db.execute("SELECT changed_by, changed_at, session_user AS me FROM tasks "
                           "WHERE id = %s", [task.id]).fetchone()
    assert after["changed_at"] > before["changed_at"] and after["changed_by"] == after["me"]
    changes = [(c.field, c.old_value, c.new_value) for c in api.history(task.id)
               if isinstance(c, Change)]
    assert changes == [("stage_out_url", "/data/a", "scp://dtn/data/b")]
    for field, value, error in (("stage_in_url", "relative/path", "is not a URL"),
                                ("stage_out_url", "rsync://-x/y", "may not start with '-'")):
        with pytest.raises(InvalidInput, match=error):
            api.modify_task(task.id, field, value)
    assert api.get_task(task.id).stage_out_url == "scp://dtn/data/b"
