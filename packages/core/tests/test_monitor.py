"""balsam.monitor: launcher health, failures by cause and workflow progress on a real database,
and the rules behind them as pure functions; the change notifications of migration 0035."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from balsam import api, monitor
from balsam.monitor import eta_seconds, launcher_health


def test_launcher_health_rules():
    fresh = {"heartbeat_age": 5.0, "heartbeat_timeout": 60.0}
    assert launcher_health(ended=False, batch_state=None, **fresh) == (True, "")
    assert launcher_health(ended=True, batch_state=None, **fresh) == (False, "")
    late = launcher_health(ended=False, batch_state="running", heartbeat_age=40,
                           heartbeat_timeout=60)
    assert late == (True, "heartbeat late: 40s ago (timeout 60s)")
    dead = launcher_health(ended=False, batch_state=None, heartbeat_age=95,
                           heartbeat_timeout=60)
    assert dead == (False, "no heartbeat for 95s (timeout 60s): presumed dead")
    alive, why = launcher_health(ended=False, batch_state="cancelled", **fresh)
    assert not alive and why.startswith("its batch job is cancelled")


def test_eta_rules():
    assert eta_seconds(0, 0) == 0.0
    assert eta_seconds(10, 0) is None
    assert eta_seconds(100, 360) == pytest.approx(1000.0)
    assert eta_seconds(5, 1, window=60) == pytest.approx(300.0)


def _launcher(db, *, age: float = 0.0, ended: bool = False, batch_job: int | None = None,
              timeout: float = 60.0) -> int:
    row = db.execute(
        "INSERT INTO launchers (hostname, pid, job_mode, num_nodes, batch_job_id, heartbeat_at, "
        "ended_at, heartbeat_timeout) VALUES ('nid1', 42, 'mpi', 4, %s, "
        "now() - make_interval(secs => %s), CASE WHEN %s THEN now() END, "
        "make_interval(secs => %s)) RETURNING id", (batch_job, age, ended, timeout)).fetchone()
    return row["id"]


def _move(db, task_id: int, *path: tuple[str, str], launcher: int | None = None) -> None:
    for state, message in path:
        db.execute("UPDATE tasks SET state = %s, state_message = %s, launcher_id = %s "
                   "WHERE id = %s", (state, message, launcher, task_id))


def _server_up_for(db, seconds: float) -> None:
    up = db.execute("SELECT date_part('epoch', now() - pg_postmaster_start_time())::float8 "
                    "AS up").fetchone()["up"]
    time.sleep(max(0.0, seconds - up))


RUN = [("STAGED_IN", ""), ("PREPROCESSED", ""), ("RUNNING", "")]


@pytest.mark.pg
def test_launchers_alive_running_and_suspect(db):
    api.add_app("a", "/bin/true", conn=db)
    job = db.execute("INSERT INTO batch_jobs (scheduler, scheduler_id, num_nodes, "
                     "wall_time_minutes, state) VALUES ('slurm', '777', 4, 10, 'running') "
                     "RETURNING id").fetchone()["id"]
    busy = _launcher(db, batch_job=job)
    quiet = _launcher(db, age=300, timeout=1)
    _server_up_for(db, 1.1)  # a server up for less than a timeout cannot tell silence
    gone = _launcher(db, ended=True)
    ids = api.add_tasks([{"app": "a"} for _ in range(3)], conn=db)
    for task_id in ids[:2]:
        _move(db, task_id, *RUN, launcher=busy)
    _move(db, ids[2], ("STAGED_IN", ""), launcher=busy)  # held, not running
    found = {s.id: s for s in monitor.launchers(db)}
    assert list(found) == [gone, quiet, busy]  # newest first
    assert (found[busy].alive, found[busy].running, found[busy].scheduler_id) == (True, 2, "777")
    assert found[busy].heartbeat_age < 5 and found[busy].suspect == ""
    assert not found[quiet].alive and "no heartbeat for 300s" in found[quiet].suspect
    assert (found[gone].alive, found[gone].suspect) == (False, "")
    assert [s.id for s in monitor.launchers(db, alive_only=True)] == [busy]
    db.execute("UPDATE batch_jobs SET state = 'cancelled' WHERE id = %s", (job,))
    assert [s.id for s in monitor.launchers(db, alive_only=True)] == [busy]  # still stopping
    db.execute("UPDATE batch_jobs SET ended_at = now() WHERE id = %s", (job,))  # confirmed
    assert monitor.launchers(db, alive_only=True) == []


@pytest.mark.pg
def test_failures_grouped_by_cause(db):
    api.add_app("a", "/bin/true", conn=db)
    ids = api.add_tasks([{"app": "a", "workflow": "w1" if i < 5 else "w2"} for i in range(7)],
                        conn=db)
    messages = ["exit 3: starting | reading input | ValueError: bad input",
                "exit 3: other output | ValueError: bad input",
                "exit 3: ValueError: bad input",
                "killed by SIGKILL: step 1 | step 2",
                "exit 1"]
    held = _launcher(db)  # a RUNNING task is always held by a launcher
    for task_id, message in zip(ids, messages, strict=False):
        _move(db, task_id, *RUN, ("RUN_ERROR", message), ("FAILED", "no error handler"),
              launcher=held)
    _move(db, ids[5], ("STAGED_IN", ""), ("FAILED", "preprocess exited with 2: missing.dat"))
    _move(db, ids[6], *RUN, ("RUN_TIMEOUT", "stopped after 12.5s: the launcher's time is up"),
          launcher=held)
    groups = monitor.failures_by_cause(db)
    assert [(g.cause, g.count) for g in groups[:1]] == [("exit 3: ValueError: bad input", 3)]
    assert groups[0].task_ids == tuple(sorted(ids[:3], reverse=True))
    assert {g.cause: g.count for g in groups[1:]} == {
        "killed by SIGKILL: step 2": 1, "exit 1": 1,
        "preprocess exited with 2: missing.dat": 1,
        "stopped: the launcher's time is up": 1}
    w2 = monitor.failures_by_cause(db, workflow="w2")
    assert sorted(g.cause for g in w2) == ["preprocess exited with 2: missing.dat",
                                           "stopped: the launcher's time is up"]
    assert monitor.failures_by_cause(db, workflow="nope") == []
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert monitor.failures_by_cause(db, since=later) == []
    assert groups[0].latest_at <= datetime.now(UTC)


@pytest.mark.pg
def test_workflow_progress(db):
    api.add_app("a", "/bin/true", conn=db)
    ids = api.add_tasks([{"app": "a", "workflow": "sim"} for _ in range(4)]
                        + [{"app": "a", "workflow": "post"}], conn=db)
    held = _launcher(db)  # a RUNNING task is always held by a launcher
    for task_id in ids[:2]:
        _move(db, task_id, *RUN, ("RUN_DONE", ""), ("POSTPROCESSED", ""), ("JOB_FINISHED", ""),
              launcher=held)
    api.kill([ids[2]], conn=db)
    post, sim = monitor.workflow_progress(db)
    assert (post.workflow, post.counts, post.finished_last_hour, post.eta_seconds) == (
        "post", {"READY": 1}, 0, None)
    assert sim.counts == {"READY": 1, "JOB_FINISHED": 2, "USER_KILLED": 1}  # state order
    assert list(sim.counts) == ["READY", "JOB_FINISHED", "USER_KILLED"]
    assert (sim.total, sim.remaining, sim.finished_last_hour) == (4, 1, 2)
    assert sim.eta_seconds == pytest.approx(1800.0)
    # Finished longer than an hour ago: no pace to go by.
    db.execute("UPDATE task_events SET at = at - interval '2 hours'")
    assert monitor.workflow_progress(db)[1].eta_seconds is None


@pytest.mark.pg
def test_changes_are_announced_per_statement_and_debounced(db_dsn, db):
    listener = psycopg.connect(db_dsn, autocommit=True)
    listener.execute("LISTEN balsam_events")
    api.add_app("a", "/bin/true", conn=db)
    [task] = api.add_tasks([{"app": "a"}], conn=db)

    def heard() -> list[str]:
        return [n.payload for n in listener.notifies(timeout=0.3)]

    assert heard() == ["tasks"]
    time.sleep(0.25)
    db.execute("UPDATE tasks SET name = 'x' WHERE false")  # changes nothing: says nothing
    for i in range(20):
        db.execute("UPDATE tasks SET name = %s WHERE id = %s", (f"n{i}", task))
    assert heard() == ["tasks"]  # 20 statements within 200 ms: one notification
    time.sleep(0.25)
    db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes) "
               "VALUES ('h', 1, 'mpi', 1)")
    with pytest.raises(ZeroDivisionError), db.transaction():
        db.execute("UPDATE tasks SET name = 'rolled back' WHERE id = %s", (task,))
        1 / 0  # noqa: B018 - the transaction rolls back, its notification and quiet period too
    db.execute("DELETE FROM task_parents")  # deletes nothing
    db.execute("UPDATE tasks SET name = 'kept' WHERE id = %s", (task,))
    assert sorted(heard()) == ["launchers", "tasks"]
    listener.close()
