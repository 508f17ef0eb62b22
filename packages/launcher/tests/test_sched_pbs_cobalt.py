"""The PBS and Cobalt schedulers against test doubles of their commands (tests/fakes)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from balsam.contracts import ServerInfo
from balsam.errors import SchedulerError
from balsam.project import Project
from balsam_launcher.schedulers.cobalt import CobaltScheduler
from balsam_launcher.schedulers.pbs import PBSScheduler

FAKES = Path(__file__).resolve().parents[3] / "tests" / "fakes"


@pytest.fixture(params=["pbs", "cobalt"])
def sched(request, tmp_path, monkeypatch):
    flavor = request.param
    monkeypatch.setenv("PATH", f"{FAKES / flavor / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv(f"FAKE_{flavor.upper()}_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("FAKE_KILL_DELAY", "1")
    root = tmp_path / "proj"
    (root / "qsubmit").mkdir(parents=True)
    cls = PBSScheduler if flavor == "pbs" else CobaltScheduler
    return cls(Project(root, ServerInfo(owner="x")))


def job_script(sched, body, name="qlaunch1"):
    directives = ("#PBS -l select=2\n#PBS -l walltime=00:05:00\n#PBS -j oe\n"
                  f"#PBS -o {sched.project.qsubmit_dir}/{name}.out\n"
                  if sched.name == "pbs" else "#COBALT -n 2\n#COBALT -t 5\n#COBALT -A P\n")
    path = sched.project.qsubmit_dir / f"{name}.sh"
    path.write_text(f"#!/bin/bash\n{directives}{body}")
    path.chmod(0o770)
    return path


def output(sched, name="qlaunch1"):
    suffix = ".out" if sched.name == "pbs" else ".output"
    path = sched.project.qsubmit_dir / f"{name}{suffix}"
    return path.read_text() if path.exists() else ""


def wait_for(sched, sid, states, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sched.status([sid]).get(sid)
        if (status.state if status else None) in states:
            return status
        time.sleep(0.1)
    pytest.fail(f"{sched.name} job {sid} never reached {states}: {sched.status([sid])}")


def test_job_runs_with_the_scheduler_environment(sched):
    env = "$PBS_JOBID $PBS_NODEFILE" if sched.name == "pbs" else "$COBALT_JOBID $COBALT_PARTNAME"
    sid = sched.submit(job_script(sched, f'echo "env: {env}"\nsleep 0.5\n'), {})
    assert sid == ("1.fakepbs" if sched.name == "pbs" else "1")
    done = wait_for(sched, sid, {"finished", None})
    out = output(sched)
    if sched.name == "pbs":
        assert done.state == "finished" and done.started_at and done.ended_at
        assert "env: 1.fakepbs /" in out
    else:
        assert done is None  # Cobalt forgets finished jobs; the launchers table tells the rest
        assert "env: 1 0-1" in out


def test_queued_then_cancelled(sched, monkeypatch):
    monkeypatch.setenv("FAKE_START_DELAY", "30")
    sid = sched.submit(job_script(sched, "echo ran\n"), {})
    status = sched.status([sid])[sid]
    assert status.state == "queued" and status.started_at is None
    sched.cancel(sid)
    ended = wait_for(sched, sid, {"failed", None})
    assert "ran" not in output(sched)
    if ended is not None:
        assert ended.started_at is None


def test_cancel_running_job_sends_sigterm(sched):
    body = "trap 'echo got-term; exit 0' TERM\necho ready\nsleep 30 & wait\necho not-reached\n"
    sid = sched.submit(job_script(sched, body), {})
    deadline = time.monotonic() + 10
    while "ready" not in output(sched) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sched.status([sid])[sid].state == "running"
    sched.cancel(sid)
    wait_for(sched, sid, {"finished", None})
    assert "got-term" in output(sched) and "not-reached" not in output(sched)


def test_failed_job_reports_exit_status(sched):
    sid = sched.submit(job_script(sched, "exit 9\n"), {})
    if sched.name == "pbs":
        assert wait_for(sched, sid, {"failed"}).message == "exit status 9"
    else:  # Cobalt forgets the job; its log keeps the exit code
        assert wait_for(sched, sid, {None}) is None
        log = (sched.project.qsubmit_dir / "qlaunch1.cobaltlog").read_text()
        assert "exit code of 9" in log


def test_unknown_jobs_are_missing_not_errors(sched):
    sid = sched.submit(job_script(sched, "true\n"), {})
    other = "77.fakepbs" if sched.name == "pbs" else "77"
    found = sched.status([sid, other])
    assert other not in found


def test_refusal_is_a_scheduler_error(sched, monkeypatch):
    monkeypatch.setenv(f"FAKE_{sched.name.upper()}_QUEUES", "only")
    queue = "#PBS -q workq\n" if sched.name == "pbs" else "#COBALT -q default\n"
    with pytest.raises(SchedulerError, match=r"^qsub failed: .*(Unknown queue|does not exist)"):
        sched.submit(job_script(sched, f"{queue}true\n"), {})


def test_missing_commands_are_a_scheduler_error(sched, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SchedulerError, match="qstat not found"):
        sched.status(["1"])
