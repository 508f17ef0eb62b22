"""Launchers under fire: SIGTERM from the scheduler, a user killing a task, a launcher killed
with SIGKILL (reaped, its tasks re-run), a launcher frozen past its heartbeat (it must not
overwrite what others did since), and PostgreSQL restarting mid-run."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from balsam import api
from balsam.db import connect
from balsam.states import FINAL
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def count_state(project, state: str) -> int:
    with connect(project) as db:
        return sum(1 for r in lt.states(db).values() if r["state"] == state)


def running_pid(db, tid: int) -> int:
    event = next(e for e in reversed(lt.events(db))
                 if e["task_id"] == tid and e["to_state"] == "RUNNING")
    return int(event["message"].split()[1])  # "pid N on host"


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def record(project, tmp_path):
    """(app id, file the tasks append their ids to)."""
    with connect(project) as db:
        return lt.record_app(db, tmp_path), tmp_path / "counts"


def test_sigterm_marks_running_tasks_run_timeout_and_exits_cleanly(project, record, tmp_path):
    app, counts = record
    with connect(project) as db:
        ids = lt.add_tasks(db, app, [{"name": f"long{i}", "args": f"60 {counts}",
                                      "wall_time_minutes": 0} for i in range(2)])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "2",
                                 output=tmp_path / "out")
        wait_for(lambda: count_state(project, "RUNNING") == 2, 30, "two running tasks")
        pids = [running_pid(db, t) for t in ids]
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - start < 10
        assert all(gone(p) for p in pids)
        for tid in ids:
            row = lt.states(db)[tid]
            assert (row["state"], row["launcher_id"]) == ("RUN_TIMEOUT", None)
            assert "received SIGTERM" in row["state_message"]
        row = db.execute("SELECT ended_at, end_reason FROM launchers").fetchone()
        assert row["ended_at"] is not None and row["end_reason"] == "received SIGTERM"
    assert not counts.exists()  # the tasks never completed


def test_kill_stops_a_running_task_and_frees_its_node(project, record, tmp_path):
    app, counts = record
    with connect(project) as db:
        [long] = lt.add_tasks(db, app, [{"name": "long", "args": f"60 {counts}",
                                         "wall_time_minutes": 5}])
        [short] = lt.add_tasks(db, app, [{"name": "short", "args": f"0 {counts}",
                                          "wall_time_minutes": 1}])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                                 "--consume-all", output=tmp_path / "out")
        try:
            wait_for(lambda: lt.states(db)[long]["state"] == "RUNNING", 30, "the long task")
            pid = running_pid(db, long)
            assert lt.states(db)[short]["state"] == "READY"  # the only node is busy
            killed_at = time.monotonic()
            assert api.kill([long], conn=db) == [long]
            wait_for(lambda: gone(pid), 10, "the killed process to stop")
            assert time.monotonic() - killed_at < 8
            lt.wait_until_final(db, [short], 30, [proc])
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        states = lt.states(db)
        assert (states[long]["state"], states[long]["launcher_id"]) == ("USER_KILLED", None)
        assert states[short]["state"] == "JOB_FINISHED"
    assert lt.executions(counts) == Counter({short: 1})


def test_sigkilled_launcher_is_reaped_and_its_tasks_run_again(project, record, tmp_path):
    app, counts = record
    args = ["--job-mode", "serial", "--nodes", "4", "--consume-all", "--heartbeat-timeout", "2",
            "--poll-interval", "0.5"]
    with connect(project) as db:
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0.4 {counts}"}
                                     for i in range(80)])
        victim = lt.start_launcher(project.root, *args, output=tmp_path / "victim")
        wait_for(lambda: count_state(project, "JOB_FINISHED") >= 8, 60, "some progress")
        survivor = lt.start_launcher(project.root, *args, output=tmp_path / "survivor")
        wait_for(lambda: any(r["state"] == "RUNNING" for r in lt.states(db).values()), 30,
                 "running tasks")
        dead = db.execute("SELECT min(id) AS id FROM launchers").fetchone()["id"]
        held = {t for t, r in lt.states(db).items() if r["launcher_id"] == dead}
        lt.kill_session(victim)  # the launcher and its tasks, as if its node died
        try:
            final = lt.wait_until_final(db, ids, 120, [survivor])
            assert survivor.wait(timeout=60) == 0
        finally:
            if survivor.poll() is None:
                lt.kill_session(survivor)
        assert {r["state"] for r in final.values()} == {"JOB_FINISHED"}
        row = db.execute("SELECT end_reason FROM launchers WHERE id = %s", [dead]).fetchone()
        assert row["end_reason"].startswith("presumed dead")
        restarted = {e["task_id"] for e in lt.events(db)
                     if f"launcher {dead} presumed dead" in e["message"]}
    runs = lt.executions(counts)
    assert set(runs) == set(ids)
    # A task runs again only if the dead launcher held it; a second completion is possible only
    # for a task that completed in the instant between its own end and the launcher's death.
    assert restarted and restarted <= held
    assert {t for t, n in runs.items() if n > 1} <= restarted
    assert all(n <= 2 for n in runs.values())


def test_frozen_launcher_presumed_dead_cannot_overwrite(project, record, tmp_path):
    """The database alone refuses a presumed-dead launcher's late writes. Its fence would kill
    the frozen launcher's task before that (tests/test_launcher_fencing.py): this launcher runs
    without one (BALSAM_FENCE=none), so that its task completes and it tries to record that."""
    app, counts = record
    with connect(project) as db:
        [tid] = lt.add_tasks(db, app, [{"name": "t", "args": f"1.5 {counts}"}])
        frozen = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                                   "--heartbeat-timeout", "1", env={"BALSAM_FENCE": "none"},
                                   output=tmp_path / "frozen")
        try:
            wait_for(lambda: lt.states(db)[tid]["state"] == "RUNNING", 30, "the task to run")
            os.kill(frozen.pid, signal.SIGSTOP)
            first = db.execute("SELECT id FROM launchers").fetchone()["id"]
            wait_for(lambda: db.execute("SELECT heartbeat_at + heartbeat_timeout < now() AS s "
                                        "FROM launchers WHERE id = %s", [first]).fetchone()["s"],
                     10, "its heartbeat to go stale")
            other = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                                      "--consume-all", output=tmp_path / "other")
            final = lt.wait_until_final(db, [tid], 60, [other])
            assert other.wait(timeout=30) == 0
            os.kill(frozen.pid, signal.SIGCONT)
            assert frozen.wait(timeout=30) == 1  # it learns it was presumed dead and stops
        finally:
            for p in (frozen, locals().get("other")):
                if p is not None and p.poll() is None:
                    os.kill(p.pid, signal.SIGCONT)
                    lt.kill_session(p)
        assert final[tid]["state"] == "JOB_FINISHED"
        second = db.execute("SELECT max(id) AS id FROM launchers").fetchone()["id"]
        done = [e for e in lt.events(db) if e["task_id"] == tid and e["to_state"] == "RUN_DONE"]
        assert [e["launcher_id"] for e in done] == [second]  # the frozen one's result was refused
        assert lt.states(db)[tid]["launcher_id"] is None
    log = (project.log_dir / f"launcher_{first}.log").read_text()
    assert "was presumed dead" in log


def test_postgres_restart_mid_run_loses_nothing(project, record, pg_server, tmp_path):
    app, counts = record
    with connect(project) as db:
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0.1 {counts}"}
                                     for i in range(240)])
    args = ["--job-mode", "serial", "--nodes", "4", "--consume-all", "--poll-interval", "0.5"]
    procs = [lt.start_launcher(project.root, *args, output=tmp_path / f"l{i}") for i in range(2)]
    try:
        for threshold in (40, 120):
            wait_for(lambda n=threshold: count_state(project, "JOB_FINISHED") >= n, 90,
                     f"{threshold} finished tasks")
            pg_server.restart()
        for p in procs:
            assert p.wait(timeout=120) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                lt.kill_session(p)
    with connect(project) as db:
        states = lt.states(db)
        assert {states[t]["state"] for t in ids} == {"JOB_FINISHED"}
        assert all(r["launcher_id"] is None for r in states.values())
        finished = Counter(e["task_id"] for e in lt.events(db) if e["to_state"] == "JOB_FINISHED")
        assert set(finished.values()) == {1}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    logs = "".join(p.read_text() for p in project.log_dir.glob("launcher_*.log"))
    assert "database connection lost" in logs and "reconnected to the database" in logs
    assert all(r in FINAL for r in {s["state"] for s in states.values()})


def test_run_times_are_when_the_process_ran_not_when_they_were_written(project, pg_server,
                                                                        tmp_path):
    """The database is down when a task ends: its end is written after the outage, but dated
    when the process exited (busy time and utilisation reports rest on these times)."""
    script, marks = tmp_path / "marks.sh", tmp_path / "marks"
    script.write_text('#!/bin/sh\ndate +%s.%N >> "$1"\nsleep "$2"\ndate +%s.%N >> "$1"\n')
    with connect(project) as db:
        app = lt.add_app(db, "marks", f"/bin/sh {script}")
        [tid] = lt.add_tasks(db, app, [{"name": "t", "args": f"{marks} 1"}])
    proc = lt.start_launcher(project.root, "--nodes", "1", "--consume-all",
                             "--poll-interval", "0.5", output=tmp_path / "launcher")
    try:
        wait_for(lambda: count_state(project, "RUNNING") == 1, 60, "the task to run")
        pg_server.stop()
        try:
            wait_for(lambda: marks.exists() and len(marks.read_text().split()) == 2, 30,
                     "the task to end")
            time.sleep(2)
        finally:
            pg_server.start()
        back = time.time()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            lt.kill_session(proc)
    began, ended = (float(x) for x in marks.read_text().split())
    with connect(project) as db:
        at = {e["to_state"]: e["at"].timestamp() for e in lt.events(db) if e["task_id"] == tid}
    assert began - 0.5 < at["RUNNING"] <= began
    assert ended <= at["RUN_DONE"] < ended + 0.5 < back - 1
    assert at["RUN_DONE"] <= at["JOB_FINISHED"] < back - 1


def test_a_rolled_back_write_is_sent_again(project, record, tmp_path):
    """A transaction rolled back under the launcher (a deadlock with another launcher releasing
    the same children) loses nothing: the launcher retries, and every task runs once. On 800
    nodes, the first write fails in the middle of starting the first batch."""
    app, counts = record
    with connect(project) as db:
        db.execute(lt.q("testing_inject_rollbacks"))
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0 {counts}"} for i in range(800)])
    proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "800",
                             "--consume-all", output=tmp_path / "launcher")
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            lt.kill_session(proc)
    with connect(project) as db:
        assert {lt.states(db)[t]["state"] for t in ids} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    logs = "".join(p.read_text() for p in project.log_dir.glob("launcher_*.log"))
    assert logs.count("database transaction rolled back, retrying") == 3
