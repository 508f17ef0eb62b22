"""Who may change a task a launcher holds (balsam.held): the pure rule, and api.modify_task
applying it. The end-to-end case (a real launcher running a task that saves its own data) is in
tests/test_legacy_api.py."""

from __future__ import annotations

import pytest

from balsam import api, held
from balsam.errors import InvalidInput
from balsam.models import TASK_FIELDS

ITSELF = held.Caller(task_id=7, launcher_id=3)


def test_nobody_is_refused_a_task_no_launcher_holds():
    for field in (*TASK_FIELDS, "app"):
        assert held.refusal(7, "READY", None, field, held.Caller()) is None


def test_the_task_itself_may_change_only_what_the_launcher_never_reads():
    for field in (*TASK_FIELDS, "app", "state", "launcher_id"):
        reason = held.refusal(7, "RUNNING", 3, field, ITSELF)
        assert (reason is None) == (field in ("data", "description")), field
    assert held.refusal(7, "RUNNING", 3, "args", ITSELF) == (
        "task 7 is held by launcher 3 (RUNNING): only the task itself may change its data and "
        "description meanwhile; kill it or wait until it is released")


@pytest.mark.parametrize("other", [held.Caller(), held.Caller(8, 3), held.Caller(7, 4),
                                   held.Caller(7, None), held.Caller(None, 3)])
def test_anyone_else_is_refused_even_data(other):
    assert held.refusal(7, "RUNNING", 3, "data", other) is not None


def test_the_caller_comes_from_the_launchers_variables():
    assert held.caller({"BALSAM_TASK_ID": "7", "BALSAM_LAUNCHER_ID": " 3 "}) == ITSELF
    assert held.caller({"BALSAM_TASK_ID": "seven"}) == held.Caller()


@pytest.mark.pg
def test_modify_task_lets_the_held_task_record_its_results(db, monkeypatch):
    api.add_app("sim", "/bin/true", conn=db)
    task = api.add_task("sim", data={"x": 1}, conn=db)
    launcher = db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
                          "VALUES ('h', 1, 'mpi', 1) RETURNING id").fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [launcher, task.id])
    with pytest.raises(InvalidInput, match=f"held by launcher {launcher}"):
        api.modify_task(task.id, "data", {"y": 2}, conn=db)  # not from inside the task
    monkeypatch.setenv("BALSAM_TASK_ID", str(task.id))
    monkeypatch.setenv("BALSAM_LAUNCHER_ID", str(launcher))
    assert api.modify_task(task.id, "data", {"x": 1, "y": 2}, conn=db).data == {"x": 1, "y": 2}
    assert api.modify_task(task.id, "description", "done", conn=db).description == "done"
    for field, value in (("args", "-n 2"), ("num_nodes", 2), ("env", "A=1"), ("app", "sim"),
                         ("workdir", "/tmp"), ("name", "other")):
        with pytest.raises(InvalidInput, match="only the task itself may change its data"):
            api.modify_task(task.id, field, value, conn=db)
    found = api.get_task(task.id, conn=db)
    assert (found.args, found.num_nodes, found.name) == ("", 1, "")
