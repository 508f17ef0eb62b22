"""The fence around a launcher (balsam_launcher.fence): no task process outlives its launcher,
and a launcher that cannot heartbeat in time has its tasks killed before anyone may run them
again. Real launchers, real kills; every run of every task is counted from a file."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from balsam.db import connect
from balsam_launcher import fence
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow]

#: tree.sh SECONDS COUNTS KIND: the process that appends the task's id to COUNTS after SECONDS
#: is the task itself (plain), a child it forked next to another (fork: ``sh -c 'sleep &
#: sleep'``), or a daemon in a session of its own, double-forked (daemon). Each rank appends.
TREE_SCRIPT = """#!/bin/sh
id="$BALSAM_TASK_ID"
case "$3" in
plain) sleep "$1"; echo "$id" >> "$2" ;;
fork) sh -c "sleep $1 & sleep $1"; echo "$id" >> "$2" ;;
daemon) sh -c "setsid sh -c 'sleep $1; echo $id >> $2' &"; sleep "$1"; sleep 0.5 ;;
esac
"""
KINDS = ("plain", "fork", "daemon")
VICTIM = ["--heartbeat-timeout", "2", "--poll-interval", "0.5"]
#: How soon every process of a killed launcher must be gone: well before its heartbeat timeout
#: (2 s above) lets anyone presume it dead and run its tasks again. The fence takes about 0.1 s
#: here, loaded or not. (This was 2 s for a while, for a CI failure first put down to a process
#: in uninterruptible I/O; the cause was a sweep that missed a half-exited launcher's tasks,
#: since fixed: such a process was never killed at all.)
PROMPTLY = 1.0
SURVIVOR = ["--consume-all", "--heartbeat-timeout", "4", "--poll-interval", "0.5"]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def launcher_row(db, proc) -> dict:
    """The launcher's row once it is registered (its pid is L's, as the host numbers it)."""
    wait_for(lambda: db.execute("SELECT 1 FROM launchers").fetchone(), 30, "the launcher row")
    return db.execute("SELECT * FROM launchers ORDER BY id LIMIT 1").fetchone()


def started(proc, launcher: int) -> set[int]:
    """What the launcher started: every process below P (the command's) but C and L."""
    return fence.descendants(proc.pid) - {launcher, lt.parent(launcher)}


def freeze_until_fenced(proc, launcher: int) -> None:
    """SIGSTOP the launcher; its fence kills what it started within its heartbeat timeout."""
    # each task and its sleep, the fork's two, the daemon
    tasks = lt.wait_for_processes(lambda: started(proc, launcher), 3 * 2 + 4, "the tasks")
    os.kill(launcher, signal.SIGSTOP)
    lt.wait_exited(tasks, 5, "the tasks the fence kills")


def end_reason(db, launcher_id: int) -> str:
    return db.execute("SELECT end_reason FROM launchers WHERE id = %s",
                      [launcher_id]).fetchone()["end_reason"]


def running(db, ids) -> bool:
    states = lt.states(db)
    return all(states[t]["state"] == "RUNNING" for t in ids)


@pytest.fixture
def tree_app(project, tmp_path):
    """(app id, counts file)."""
    script = tmp_path / "tree.sh"
    script.write_text(TREE_SCRIPT)
    with connect(project) as db:
        return lt.add_app(db, "tree", f"/bin/sh {script}"), tmp_path / "counts"


def start_tasks(db, app: int, counts: Path, seconds: float, ranks: int = 1) -> list[int]:
    return lt.add_tasks(db, app, [{"name": kind, "args": f"{seconds} {counts} {kind}",
                                   "ranks_per_node": ranks} for kind in KINDS])


def recover_and_count(project, db, ids, counts: Path, tmp_path: Path, *, ranks: int,
                      job_mode: str) -> None:
    """Another launcher runs what the dead one held (once the database may presume it dead:
    a launcher with --consume-all leaves tasks that others hold alone); every task completed
    exactly once."""
    wait_for(lambda: db.execute("SELECT bool_and(ended_at IS NOT NULL OR heartbeat_at + "
                                "heartbeat_timeout < now()) AS stale FROM launchers"
                                ).fetchone()["stale"], 10, "the dead launcher's heartbeat to age")
    survivor = lt.start_launcher(project.root, "--job-mode", job_mode, "--nodes", "3",
                                 *SURVIVOR, output=tmp_path / "survivor")
    try:
        final = lt.wait_until_final(db, ids, 90, [survivor])
        assert survivor.wait(timeout=60) == 0
    finally:
        if survivor.poll() is None:
            lt.kill_session(survivor)
    assert {r["state"] for r in final.values()} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: ranks for t in ids})


@pytest.mark.parametrize(("fencing", "job_mode", "victim"), [
    ("namespace", "serial", "P"), ("namespace", "serial", "L"), ("namespace", "serial", "C"),
    ("namespace", "mpi", "P"), ("namespace", "mpi", "L"), ("namespace", "mpi", "C"),
    ("subreaper", "serial", "P"), ("subreaper", "serial", "L"), ("subreaper", "serial", "C"),
])
def test_sigkill_leaves_no_process_and_every_task_runs_once(project, tree_app, tmp_path, fencing,
                                                            job_mode, victim):
    """SIGKILL of the command's process (P), of the launcher (L) or of its supervisor (C)
    while tasks run, fork and leave daemons: nothing the launcher started is left before its
    heartbeat timeout, and once another launcher recovered them every task has completed
    exactly once."""
    app, counts = tree_app
    ranks = 2 if job_mode == "mpi" else 1
    with connect(project) as db:
        ids = start_tasks(db, app, counts, 2.5, ranks)
        proc = lt.start_launcher(project.root, "--job-mode", job_mode, "--nodes", "3", *VICTIM,
                                 env={fence.VARIABLE: fencing}, output=tmp_path / "victim")
        try:
            row = launcher_row(db, proc)
            wait_for(lambda: running(db, ids), 30, "the tasks to run")
            launcher = row["pid"]
            assert lt.parent(lt.parent(launcher)) == proc.pid  # P -> C -> L
            everything = lt.wait_for_processes(  # C, L, the tasks, forks and daemons
                lambda: fence.descendants(proc.pid) | {proc.pid}, 2 + 3 * ranks + 4,
                "the launcher's processes")
            target = {"P": proc.pid, "L": launcher, "C": lt.parent(launcher)}[victim]
            os.kill(target, signal.SIGKILL)
            lt.wait_exited(everything, PROMPTLY, "every process of the launcher")
            assert proc.wait(timeout=5) == (-9 if victim == "P" else 128 + 9)
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        assert not counts.exists()  # no run completed
        recover_and_count(project, db, ids, counts, tmp_path, ranks=ranks, job_mode=job_mode)


def test_frozen_launcher_is_fenced_before_its_tasks_run_again(project, tree_app, tmp_path):
    """A launcher frozen (SIGSTOP) past its heartbeat timeout: its fence kills its tasks while
    the database still says the launcher lives; another launcher then runs them; thawed, the
    frozen launcher's write is refused (ClaimLost) and it exits 1. Each task ran once."""
    app, counts = tree_app
    with connect(project) as db:
        ids = start_tasks(db, app, counts, 4)
        frozen = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "3",
                                   *VICTIM, output=tmp_path / "frozen")
        try:
            row = launcher_row(db, frozen)
            wait_for(lambda: running(db, ids), 30, "the tasks to run")
            freeze_until_fenced(frozen, row["pid"])
            live = db.execute("SELECT ended_at IS NULL AND heartbeat_at + heartbeat_timeout "
                              "> now() AS live FROM launchers WHERE id = %s",
                              [row["id"]]).fetchone()["live"]
            assert live  # killed before anyone could presume the launcher dead
            assert running(db, ids)
            assert lt.alive(row["pid"])  # the launcher lives, frozen, to say so later
            recover_and_count(project, db, ids, counts, tmp_path, ranks=1, job_mode="serial")
            os.kill(row["pid"], signal.SIGCONT)
            assert frozen.wait(timeout=30) == 1
        finally:
            if frozen.poll() is None:
                os.kill(row["pid"], signal.SIGCONT)
                lt.kill_session(frozen)
        survivor = db.execute("SELECT max(id) AS id FROM launchers").fetchone()["id"]
        done = [e for e in lt.events(db) if e["to_state"] == "RUN_DONE"]
        assert {e["launcher_id"] for e in done} == {survivor}  # nothing from the frozen one
        assert end_reason(db, row["id"]).startswith("presumed dead")
    log = (project.log_dir / f"launcher_{row['id']}.log").read_text()
    assert "its lease lapsed and its fence killed its tasks" in log
    assert f"launcher {row['id']} was presumed dead" in log
    assert "the lease of pid" in (tmp_path / "frozen").read_text()  # the fence said so too


def test_a_lapsed_lease_gives_the_tasks_back_at_once(project, tree_app, tmp_path):
    """A launcher that cannot heartbeat (here: frozen just long enough) is fenced; resumed
    before anyone presumed it dead, it gives its tasks back for restart itself and exits 1."""
    app, counts = tree_app
    with connect(project) as db:
        ids = start_tasks(db, app, counts, 4)
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "3", *VICTIM,
                                 output=tmp_path / "lapsed")
        try:
            row = launcher_row(db, proc)
            wait_for(lambda: running(db, ids), 30, "the tasks to run")
            freeze_until_fenced(proc, row["pid"])
            os.kill(row["pid"], signal.SIGCONT)
            assert proc.wait(timeout=30) == 1
        finally:
            if proc.poll() is None:
                os.kill(row["pid"], signal.SIGCONT)
                lt.kill_session(proc)
        states = lt.states(db)
        assert end_reason(db, row["id"]) == "lease lapsed"
        assert {states[t]["state"] for t in ids} == {"RESTART_READY"}
        assert {states[t]["state_message"] for t in ids} == {f"launcher {row['id']} lease lapsed"}
        recover_and_count(project, db, ids, counts, tmp_path, ranks=1, job_mode="serial")


def _agent(pid: int) -> bool:
    """Whether ``pid`` runs ``python -m balsam_launcher.agent`` (the fence's P and C too)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[1:3] == [b"-m", b"balsam_launcher.agent"]


def test_agents_tasks_die_with_their_launcher(project, tree_app, tmp_path, monkeypatch):
    """Serial mode through node agents (each fenced on its own): SIGKILL of the launcher's
    command kills the agents' tasks too, and each task then runs once."""
    monkeypatch.setenv("BALSAM_LAUNCHER_AGENTS", "always")
    app, counts = tree_app
    with connect(project) as db:
        ids = start_tasks(db, app, counts, 2.5)
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "3", *VICTIM,
                                 output=tmp_path / "victim")
        try:
            launcher_row(db, proc)
            wait_for(lambda: running(db, ids), 60, "the tasks to run")
            messages = {e["message"] for e in lt.events(db) if e["to_state"] == "RUNNING"}
            assert all("through its node agent" in m for m in messages)
            # P, C and L; each agent's P, C and agent; the tasks, forks and daemons
            everything = lt.wait_for_processes(
                lambda: fence.descendants(proc.pid) | {proc.pid}, 3 + 3 * 3 + 3 + 4,
                "the launcher's processes")
            assert len([p for p in everything if _agent(p)]) == 3 * 3
            os.kill(proc.pid, signal.SIGKILL)
            lt.wait_exited(everything, PROMPTLY, "every process of the launcher")
            proc.wait(timeout=5)
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        assert not counts.exists()
        monkeypatch.delenv("BALSAM_LAUNCHER_AGENTS")
        recover_and_count(project, db, ids, counts, tmp_path, ranks=1, job_mode="serial")


def test_pids_in_the_database_are_the_hosts(project, tree_app, tmp_path):
    """Inside the fence pids are the namespace's; the launchers table and the RUNNING messages
    name the processes as the rest of the machine (ps, /proc, kill) knows them."""
    app, counts = tree_app
    with connect(project) as db:
        [tid] = lt.add_tasks(db, app, [{"name": "t", "args": f"30 {counts} plain"}])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                                 output=tmp_path / "out")
        try:
            row = launcher_row(db, proc)
            wait_for(lambda: running(db, [tid]), 30, "the task to run")
            event = next(e for e in lt.events(db) if e["to_state"] == "RUNNING")
            task_pid = int(event["message"].split()[1])  # "pid N on host"
            assert lt.parent(task_pid) == row["pid"]
            assert lt.parent(lt.parent(row["pid"])) == proc.pid
            assert Path(f"/proc/{task_pid}/cmdline").read_bytes().split(b"\0")[:2] == [
                b"/bin/sh", str(tmp_path / "tree.sh").encode()]
            status = Path(f"/proc/{row['pid']}/status").read_text()
            nspid = next(line.split()[1:] for line in status.splitlines()
                         if line.startswith("NSpid:"))
            assert nspid == [str(row["pid"]), "2"]  # L is pid 2 of its namespace
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        assert lt.states(db)[tid]["state"] == "RUN_TIMEOUT"
