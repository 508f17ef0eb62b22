"""Batch jobs on a real Slurm, submitted by a real user (alice) from her embedded project:
the job runs the launcher, which runs the tasks, and the batch job ends finished; killing a
running batch job leaves its running tasks RUN_TIMEOUT."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

ACTIVATE = '. balsamactivate "$P" >/dev/null 2>&1 && '

ADD_TASKS = """
import json, sys
from pathlib import Path
from balsam.db import connect
from balsam.project import Project
from balsam_testing import launchers as testing
project = Project.from_env()
kind, count = sys.argv[1], int(sys.argv[2])
with connect(project) as db:
    if kind == "record":
        app = testing.record_app(db, project.root)
        args = f"0.2 {project.root / 'counts'}"
    else:
        app = testing.add_app(db, "sleeper", "sleep")
        args = "120"
    ids = testing.add_tasks(db, app, [{"name": f"t{i}", "args": args} for i in range(count)])
print(json.dumps(ids))
"""

STATE = """
import json
from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_launcher.batch_jobs import sync
project = Project.from_env()
with connect(project) as db:
    sync(db, project, get_plugin_manager())
    tasks = {r["id"]: r["state"] for r in db.execute("SELECT id, state FROM tasks")}
    jobs = db.execute("SELECT id, state, scheduler_id, started_at IS NOT NULL AS started, "
                      "ended_at IS NOT NULL AS ended, owner FROM batch_jobs ORDER BY id").fetchall()
    launchers = db.execute("SELECT batch_job_id, owner FROM launchers").fetchall()
print(json.dumps({"tasks": tasks, "jobs": jobs, "launchers": launchers}))
"""


@pytest.fixture
def alice_project(slurm_cluster, run_as, shared_dir):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"

    def alice(script, *args, check=True):
        proc = run_as("alice", ["bash", "-c", ACTIVATE + script, "_", *args],
                      env={"P": str(root)}, cwd=root, check=check)
        return proc

    def state():  # synced like balsam queue does, without a shell activation per poll
        proc = run_as("alice", ["python", "-c", STATE], env={"BALSAM_DB_PATH": str(root)})
        return json.loads(proc.stdout)

    alice.state = state
    alice.root = root
    yield alice
    for job in state()["jobs"] if root.exists() else []:
        if job["state"] in ("submitted", "queued", "running"):
            run_as("root", ["scancel", job["scheduler_id"]], check=False)


def wait(alice, predicate, timeout=90.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = alice.state()
        if predicate(current):
            return current
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}: {current}")


def test_alice_submits_and_the_job_runs_her_tasks(alice_project):
    alice = alice_project
    ids = json.loads(alice('python -c "$1" record 3', ADD_TASKS).stdout)
    out = alice("BALSAM_SCHEDULER=slurm balsam submit-launch -A P -q debug -t 15 -n 1 "
                "--job-mode=mpi").stdout
    assert out.startswith("Submitted batch job 1 (slurm job ")
    script = (alice.root / "qsubmit" / "qlaunch1.sh").read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --account=P" in script
    done = wait(alice, lambda s: s["jobs"][0]["state"] == "finished", what="job finished")
    assert {done["tasks"][str(i)] for i in ids} == {"JOB_FINISHED"}
    [job] = done["jobs"]
    assert job["owner"] == "alice" and job["started"] and job["ended"]
    assert done["launchers"] == [{"batch_job_id": 1, "owner": "alice"}]
    counts = (alice.root / "counts").read_text().split()
    assert sorted(map(int, counts)) == sorted(ids)  # each task ran exactly once
    listing = alice("COLUMNS=250 balsam queue --all").stdout
    assert "finished" in listing and "slurm" in listing


def test_kill_running_batch_job(alice_project):
    alice = alice_project
    ids = json.loads(alice('python -c "$1" sleep 1', ADD_TASKS).stdout)
    alice("balsam submit-launch --scheduler slurm -q debug -t 5 -n 1 --job-mode serial")
    wait(alice, lambda s: s["tasks"][str(ids[0])] == "RUNNING", what="task running")
    out = alice("balsam queue --kill 1").stdout
    assert out.strip() == "batch job 1: cancelled (cancelled by alice)"
    done = wait(alice, lambda s: s["jobs"][0]["ended"], what="job ended")
    assert done["tasks"][str(ids[0])] == "RUN_TIMEOUT"
    assert done["jobs"][0]["state"] == "cancelled"
    squeue = alice("squeue -h -t all -j $1 -o %T", done["jobs"][0]["scheduler_id"]).stdout
    assert squeue.strip() in ("COMPLETED", "CANCELLED", "")


def test_collaborator_sees_but_cannot_kill_alices_job(alice_project, run_as):
    alice = alice_project
    alice("balsam server --add-user bob")
    json.loads(alice('python -c "$1" sleep 1', ADD_TASKS).stdout)
    alice("balsam submit-launch --scheduler slurm -q debug -t 5 -n 1 --job-mode serial")
    wait(alice, lambda s: s["jobs"][0]["state"] == "running", what="job running")

    def bob(command):
        return run_as("bob", ["bash", "-c", ACTIVATE + command], env={"P": str(alice.root)},
                      check=False)

    listing = bob("COLUMNS=250 balsam queue")
    assert listing.returncode == 0, listing.stderr
    assert "alice" in listing.stdout and "running" in listing.stdout
    refused = bob("balsam queue --kill 1")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "Error: batch job 1 belongs to alice; only they can cancel it"
    assert alice.state()["jobs"][0]["state"] == "running"
    alice("balsam queue --kill 1")


NO_CLOCK = """#!/bin/bash
#SBATCH --job-name=balsam-{{ job.id }}
#SBATCH --nodes={{ job.num_nodes }}
#SBATCH --exclusive
#SBATCH --time={{ job.wall_time_minutes }}
#SBATCH --output={{ output }}
#SBATCH --partition={{ job.queue }}
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec balsam launcher --job-mode {{ job.job_mode }} --batch-job-id {{ job.id }}
"""


def test_the_launcher_stops_before_slurm_ends_the_job(alice_project):
    """No --time-limit-minutes: the launcher asks Slurm when the job ends and stops its tasks
    (RUN_TIMEOUT) and itself before, so that Slurm never has to kill the job."""
    alice = alice_project
    alice('umask 027 && cat > job-templates/noclock.sh <<"EOF"\n' + NO_CLOCK + 'EOF\n')
    ids = json.loads(alice('python -c "$1" sleep 1', ADD_TASKS).stdout)  # sleep 120
    alice("balsam modify $1 wall_time_minutes 0", str(ids[0]))  # fits the minute's time left
    alice("balsam submit-launch --scheduler slurm -q debug -t 1 -n 1 --job-mode serial "
          "--template noclock.sh")
    done = wait(alice, lambda s: s["jobs"][0]["ended"], timeout=150, what="job ended")
    assert done["tasks"][str(ids[0])] == "RUN_TIMEOUT"
    assert done["jobs"][0]["state"] == "finished"
    reason = alice('python -c "$1"', END_REASON).stdout.strip()
    assert reason == "time limit reached"  # not SIGTERM from Slurm
    log = next((alice.root / "log").glob("launcher_*.log")).read_text()
    assert "the slurm job ends at" in log
    job = done["jobs"][0]["scheduler_id"]
    state = alice("squeue -h -t all -j $1 -o %T", job, check=False).stdout.strip()
    assert state in ("COMPLETED", "")  # never TIMEOUT (gone from squeue: it ended long ago)


END_REASON = """
from balsam.db import connect
from balsam.project import Project
with connect(Project.from_env()) as db:
    print(db.execute("SELECT end_reason FROM launchers").fetchone()["end_reason"])
"""
