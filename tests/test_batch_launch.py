"""End to end with the real launcher: submit-launch renders the default template, the scheduler
(local, or the PBS and Cobalt test doubles) runs it, the launcher runs the tasks, the batch job
ends; killing a batch job leaves its running tasks RUN_TIMEOUT."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_testing import launchers as testing

pytestmark = [pytest.mark.pg, pytest.mark.slow]

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def cli(project, monkeypatch, tmp_path):
    monkeypatch.delenv("BALSAM_SCHEDULER", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    # mpirun refuses root unless told; the tests run as root with an external-DSN project
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT", "1")
    monkeypatch.setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    for flavor in ("pbs", "cobalt"):
        monkeypatch.setenv(f"FAKE_{flavor.upper()}_SPOOL", str(tmp_path / f"{flavor}-spool"))
    runner = CliRunner()

    def invoke(*args: str) -> str:
        result = runner.invoke(build_cli(get_plugin_manager()), list(args),
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


def batch_job(db, job_id=None):
    rows = db.execute("SELECT * FROM batch_jobs ORDER BY id").fetchall()
    return rows[-1] if job_id is None else next(r for r in rows if r["id"] == job_id)


def wait_job(cli, db, states, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cli("queue")
        job = batch_job(db)
        if job["state"] in states and (job["state"] != "cancelled" or job["ended_at"]):
            return job
        time.sleep(0.3)
    pytest.fail(f"batch job stuck in {batch_job(db)['state']}")


def wait_tasks(db, ids, states, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = {i: r["state"] for i, r in testing.states(db).items() if i in ids}
        if all(s in states for s in current.values()):
            return current
        time.sleep(0.2)
    pytest.fail(f"tasks not {states}: {current}")


def record_tasks(db, project, count, workflow="", **fields):
    app = testing.record_app(db, project.root, name=f"record-{workflow or 'x'}")
    counts = project.root / "counts"
    tasks = [{"name": f"t{i}", "workflow": workflow, "args": f"0.2 {counts}", **fields}
             for i in range(count)]
    return testing.add_tasks(db, app, tasks), counts


def test_legacy_command_runs_the_tasks(cli, db, project):
    # 3-node tasks on 5 nodes run one at a time: concurrent mpiruns of one user race to create
    # Open MPI 4.1's session directory (/tmp/ompi.<host>.<uid>), a launcher matter
    ids, counts = record_tasks(db, project, 3, num_nodes=3)
    out = cli("submit-launch", "-A", "P", "-q", "Q", "-t", "15", "-n", "5", "--job-mode=mpi")
    assert out.startswith("Submitted batch job ")
    finals = testing.wait_until_final(db, ids, timeout=60)
    assert {r["state"] for r in finals.values()} == {"JOB_FINISHED"}
    assert testing.executions(counts) == {i: 3 for i in ids}  # one line per MPI rank
    job = wait_job(cli, db, {"finished"})  # --consume-all: the launcher exits, the job ends
    assert job["started_at"] and job["ended_at"] and job["num_nodes"] == 5
    [launcher] = db.execute("SELECT * FROM launchers WHERE batch_job_id = %s",
                            (job["id"],)).fetchall()
    assert launcher["num_nodes"] == 5 and launcher["job_mode"] == "mpi"


def test_wf_filter_and_serial_mode(cli, db, project):
    mine, counts = record_tasks(db, project, 3, workflow="wf1")
    other, _ = record_tasks(db, project, 2, workflow="wf2")
    cli("submit-launch", "-t", "5", "-n", "1", "--job-mode", "serial", "--wf-filter", "wf1")
    wait_job(cli, db, {"finished"})
    assert testing.executions(counts) == {i: 1 for i in mine}
    assert wait_tasks(db, set(other), {"READY"}) == {i: "READY" for i in other}


def kill_running_job(cli, db, project, *submit_args):
    app = testing.add_app(db, "sleeper", "sleep")
    ids = testing.add_tasks(db, app, [{"name": f"s{i}", "args": "60", "node_packing_count": 2}
                                      for i in range(2)])
    cli("submit-launch", "-t", "5", "-n", "1", "--job-mode", "serial", *submit_args)
    wait_tasks(db, set(ids), {"RUNNING"})
    job = batch_job(db)
    out = cli("queue", "--kill", str(job["id"]))
    assert f"batch job {job['id']}: cancelled (cancelled by" in out
    assert wait_tasks(db, set(ids), {"RUN_TIMEOUT"}) == {i: "RUN_TIMEOUT" for i in ids}
    job = wait_job(cli, db, {"cancelled"})
    assert job["ended_at"] is not None
    return job


def test_kill_marks_running_tasks_run_timeout(cli, db, project):
    kill_running_job(cli, db, project)


def test_submission_recorded_late_is_not_lost(cli, db, project, monkeypatch):
    """The scheduler accepts the job but the database dies before the row says so: the launcher
    still reports under its batch job id, and the sync recovers the job's state from it."""
    from balsam.errors import ServerDown
    from balsam_launcher import batch_jobs

    def lost(*args, **kwargs):
        raise ServerDown("database connection lost: server closed the connection unexpectedly")

    ids, counts = record_tasks(db, project, 2)
    monkeypatch.setattr(batch_jobs, "mark_submitted", lost)
    result = CliRunner().invoke(build_cli(get_plugin_manager()),
                                ["submit-launch", "-t", "5", "-n", "1", "--job-mode", "serial"])
    assert result.exit_code == 1
    assert "Error: local accepted job" in result.output and "(batch job 1)" in result.output
    assert batch_job(db)["state"] == "pending"
    testing.wait_until_final(db, ids, timeout=60)
    assert testing.executions(counts) == {i: 1 for i in ids}
    job = wait_job(cli, db, {"finished"})
    assert job["id"] == 1 and job["started_at"] and job["ended_at"]


@pytest.fixture(params=["pbs", "cobalt"])
def fake_scheduler(request, monkeypatch):
    monkeypatch.setenv("PATH", f"{FAKES / request.param / 'bin'}:{os.environ['PATH']}")
    return request.param


def test_fake_scheduler_runs_the_tasks(cli, db, project, fake_scheduler):
    ids, counts = record_tasks(db, project, 3)
    queue = "workq" if fake_scheduler == "pbs" else "default"
    out = cli("submit-launch", "--scheduler", fake_scheduler, "-A", "P", "-q", queue, "-t", "5",
              "-n", "1", "--job-mode", "serial")
    job = batch_job(db)
    assert f"({fake_scheduler} job {job['scheduler_id']})" in out
    testing.wait_until_final(db, ids, timeout=60)
    assert testing.executions(counts) == {i: 1 for i in ids}
    job = wait_job(cli, db, {"finished"})
    assert job["started_at"] and job["ended_at"]


def test_fake_scheduler_kill(cli, db, project, fake_scheduler):
    queue = "workq" if fake_scheduler == "pbs" else "default"
    kill_running_job(cli, db, project, "--scheduler", fake_scheduler, "-A", "P", "-q", queue)
