"""The Slurm scheduler class against a real Slurm: submit, status through squeue and the
job-completion log, graceful and forced cancel."""

from __future__ import annotations

import time

import pytest

from balsam.contracts import ServerInfo
from balsam.project import Project
from balsam_launcher.schedulers.slurm import SlurmScheduler

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture
def sched(slurm_cluster, tmp_path):
    (tmp_path / "qsubmit").mkdir()
    return SlurmScheduler(Project(tmp_path, ServerInfo(owner="root")))


def script(sched, body, nodes=1, name="job"):
    path = sched.project.qsubmit_dir / f"{name}.sh"
    path.write_text(f"#!/bin/bash\n#SBATCH --nodes={nodes}\n#SBATCH --time=2\n"
                    f"#SBATCH --output={path.with_suffix('.out')}\n{body}")
    return path


def wait_for(sched, sid, states, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = sched.status([sid]).get(sid)
        if status and status.state in states:
            return status
        time.sleep(0.2)
    pytest.fail(f"slurm job {sid} never reached {states}: {sched.status([sid])}")


def test_submit_run_finish(sched):
    path = script(sched, 'echo "nodes=$SLURM_JOB_NODELIST"\nsleep 1\n')
    sid = sched.submit(path, {})
    assert sid.isdigit()
    running = wait_for(sched, sid, {"running", "finished"})
    assert running.started_at is not None
    done = wait_for(sched, sid, {"finished"})
    assert done.ended_at >= done.started_at
    assert "nodes=" in path.with_suffix(".out").read_text()


def test_failed_exit_and_unknown_ids(sched):
    sid = sched.submit(script(sched, "exit 3\n"), {})
    assert wait_for(sched, sid, {"failed"}).state == "failed"
    found = sched.status([sid, "987654"])
    assert sid in found and "987654" not in found
    assert sched.status(["987654"]) == {}


def test_pending_job_then_cancel(sched):
    sid = sched.submit(script(sched, "true\n", nodes=2), {})  # more nodes than the cluster has
    queued = wait_for(sched, sid, {"queued"})
    assert queued.started_at is None and queued.message  # the reason it waits
    sched.cancel(sid, force=True)
    assert wait_for(sched, sid, {"cancelled"}).state == "cancelled"


def test_graceful_cancel_signals_the_batch_shell(sched):
    body = ("exec python3 -c 'import signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print(\"got-term\", flush=True), "
            "sys.exit(0)))\nprint(\"ready\", flush=True)\ntime.sleep(60)'\n")
    path = script(sched, body)
    sid = sched.submit(path, {})
    out = path.with_suffix(".out")
    deadline = time.monotonic() + 30
    while not (out.exists() and "ready" in out.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    sched.cancel(sid)
    wait_for(sched, sid, {"finished"})  # the job handled SIGTERM and exited 0
    assert "got-term" in out.read_text()


def test_forgotten_jobs_come_from_the_completion_log(sched, monkeypatch):
    sid = sched.submit(script(sched, "true\n"), {})
    wait_for(sched, sid, {"finished"})
    monkeypatch.setattr(SlurmScheduler, "_squeue", lambda self, ids: {})  # as after MinJobAge
    status = sched.status([sid])[sid]
    assert status.state == "finished" and status.ended_at is not None
