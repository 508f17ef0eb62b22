"""The local scheduler runs job scripts as real background processes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from balsam.contracts import ServerInfo
from balsam.errors import SchedulerError
from balsam.project import Project
from balsam_launcher import submitted
from balsam_launcher.schedulers import local_runner as runner
from balsam_launcher.schedulers.local import LocalScheduler
from balsam_testing import launchers as lt


@pytest.fixture
def sched(tmp_path, monkeypatch):
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    (tmp_path / "qsubmit").mkdir()
    return LocalScheduler(Project(tmp_path, ServerInfo(owner="x", uuid="u1")))


def submit(sched, path: Path, minutes: float) -> str:
    """Submit as balsam's submit-launch does: the id goes into the submitter's private record."""
    sid = sched.submit(path, {"wall_time_minutes": minutes})
    submitted.record(sched.project, sched.name, sid, sched.details(sid))
    return sid


def script(sched, name: str, body: str) -> Path:
    path = sched.project.qsubmit_dir / f"{name}.sh"
    path.write_text("#!/bin/bash\n" + body)
    return path


def wait_for(sched, sid, states, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sched.status([sid]).get(sid)
        if status and status.state in states:
            return status
        time.sleep(0.05)
    pytest.fail(f"job {sid} never reached {states}: {sched.status([sid])}")


def test_runs_in_background_and_finishes(sched):
    path = script(sched, "ok", 'echo "cwd=$PWD"; sleep 0.5; echo done\n')
    sid = submit(sched, path, 5)
    assert sid.isdigit()
    assert wait_for(sched, sid, {"running"}).started_at is not None
    status = wait_for(sched, sid, {"finished"})
    assert status.ended_at >= status.started_at
    out = path.with_suffix(".out").read_text()
    assert f"cwd={sched.project.root}" in out and "done" in out
    with pytest.raises(ChildProcessError):  # detached: never a zombie of the submitter
        os.waitpid(int(sid), os.WNOHANG)


def test_nonzero_exit_is_failed(sched):
    sid = submit(sched, script(sched, "bad", "exit 3\n"), 5)
    status = wait_for(sched, sid, {"failed"})
    assert status.message == "exit status 3"


def test_unknown_id_is_missing(sched):
    assert sched.status(["999999"]) == {}


def test_cancel_sends_sigterm_to_the_script(sched):
    body = ("trap 'echo got-term; exit 0' TERM\n"
            "echo ready\nfor i in $(seq 100); do sleep 0.1; done\necho not-reached\n")
    path = script(sched, "term", body)
    sid = submit(sched, path, 5)
    deadline = time.monotonic() + 10
    while "ready" not in path.with_suffix(".out").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    sched.cancel(sid)
    wait_for(sched, sid, {"finished"})  # the script trapped it and exited 0
    out = path.with_suffix(".out").read_text()
    assert "got-term" in out and "not-reached" not in out


def test_force_cancel_kills_everything(sched):
    child = sched.project.qsubmit_dir / "stubborn.child"
    path = script(sched, "stubborn", f"trap '' TERM\nsleep 30 &\necho $! > {child}.new\n"
                                     f"mv {child}.new {child}\nwait\n")
    sid = submit(sched, path, 5)
    wait_for(sched, sid, {"running"})
    deadline = time.monotonic() + 10
    while not child.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(child.read_text())
    sched.cancel(sid, force=True)
    status = wait_for(sched, sid, {"failed"})
    assert "died" in status.message
    lt.wait_exited([pid], 10, "the job's background child")
    sched.cancel(sid)  # cancelling an ended job is a no-op


def test_wall_time_is_enforced(sched, monkeypatch):
    path = script(sched, "long", "trap 'echo term; exit 5' TERM\nsleep 30 & wait\n")
    sid = submit(sched, path, 0.02)  # 1.2 s
    status = wait_for(sched, sid, {"failed"}, timeout=20)
    assert "wall time" in status.message
    assert "term" in path.with_suffix(".out").read_text()


def test_cancel_unknown_job_is_an_error(sched):
    with pytest.raises(SchedulerError, match="no local job 12345 was started by you"):
        sched.cancel("12345")


def test_other_hosts_jobs_are_reported_not_judged(sched):
    sched.state_dir.mkdir()
    (sched.state_dir / "4242.start").write_text(
        '{"host": "elsewhere", "boot": 1, "started_at": "2026-01-01T00:00:00+00:00"}')
    status = sched.status(["4242"])["4242"]
    assert status.state == "running" and "elsewhere" in status.message
    submitted.record(sched.project, "local", "4242", {"host": "elsewhere", "boot": 1})
    with pytest.raises(SchedulerError, match="cancel it there"):
        sched.cancel("4242")


def test_cancel_signals_only_the_runner_it_started(sched):
    """A pid recorded as ours but now another process (the runner ended, the pid was reused),
    or a process of ours that is not a runner, is never signalled."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        sid = str(sleeper.pid)
        submitted.record(sched.project, "local", sid,
                         {"host": socket.gethostname(), "boot": 1})  # another start time
        sched.cancel(sid, force=True)
        boot = runner.start_ticks(sleeper.pid)
        submitted.record(sched.project, "local", sid, {"host": socket.gethostname(),
                                                       "boot": boot})  # right, but no runner
        sched.cancel(sid, force=True)
        time.sleep(0.2)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_state_files_never_follow_a_planted_symlink(sched, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    sched.state_dir.mkdir()
    path = script(sched, "quick", "echo out\n")
    path.with_suffix(".out").symlink_to(victim)
    sid = submit(sched, path, 5)
    wait_for(sched, sid, {"failed"})  # the runner refused the planted output file
    assert victim.read_text() == "mine\n"
