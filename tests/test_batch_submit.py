"""``balsam submit-launch`` and ``balsam queue`` on a real database with the local scheduler.

A project job template stands in for the launcher here (the launcher's own end-to-end runs are
in test_batch_launch.py), so these tests check rows, scripts, states and cancellation.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg

FAKES = Path(__file__).parent / "fakes"

# Records what the job saw, then waits (trapping SIGTERM like the launcher does) or exits.
STUB = """#!/bin/bash
umask {{ umask }}
echo "job={{ job.id }} nodes={{ job.num_nodes }} mode={{ job.job_mode }} queue={{ job.queue }}"
echo "launcher: {{ launcher }}"
trap 'echo got-term; exit 0' TERM
[ -e {{ project_dir | quote }}/hold ] && { sleep 30 & wait; }
exit ${STUB_EXIT:-0}
"""


@pytest.fixture
def cli(project, monkeypatch):
    monkeypatch.delenv("BALSAM_SCHEDULER", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    (project.root / "job-templates" / "local.sh").write_text(STUB)
    runner = CliRunner()
    pm = get_plugin_manager()

    def invoke(*args: str) -> str:
        result = runner.invoke(build_cli(pm), list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def fails(*args: str) -> str:
        result = runner.invoke(build_cli(pm), list(args), catch_exceptions=False)
        assert result.exit_code == 1, result.output
        return result.output

    invoke.fails = fails
    return invoke


def rows(db):
    return db.execute("SELECT * FROM batch_jobs ORDER BY id").fetchall()


def wait_state(cli, db, job_id, states, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cli("queue")  # syncs
        row = db.execute("SELECT * FROM batch_jobs WHERE id = %s", (job_id,)).fetchone()
        if row["state"] in states:
            return row
        time.sleep(0.1)
    pytest.fail(f"batch job {job_id} stuck in {row['state']}")


def test_legacy_command_as_written(cli, db, project):
    out = cli("submit-launch", "-A", "P", "-q", "Q", "-t", "15", "-n", "5", "--job-mode=mpi")
    [job] = rows(db)
    assert out.strip() == (f"Submitted batch job {job['id']} (local job {job['scheduler_id']}): "
                           f"qsubmit/qlaunch{job['id']}.sh")
    assert (job["scheduler"], job["project"], job["queue"], job["num_nodes"],
            job["wall_time_minutes"], job["job_mode"], job["wf_filter"]) == (
        "local", "P", "Q", 5, 15, "mpi", "")
    assert job["state"] == "submitted" and job["submitted_at"] is not None
    assert job["script_path"] == f"qsubmit/qlaunch{job['id']}.sh"  # relative: movable project
    script = project.root / job["script_path"]
    assert stat.S_IMODE(script.stat().st_mode) == 0o770
    done = wait_state(cli, db, job["id"], {"finished"})
    assert done["started_at"] is not None and done["ended_at"] >= done["started_at"]
    out = script.with_suffix(".out").read_text()
    assert f"job={job['id']} nodes=5 mode=mpi queue=Q" in out
    assert f"--batch-job-id {job['id']}" in out


def test_queue_lists_and_filters(cli, db):
    cli("submit-launch", "-t", "5", "-n", "1", "--job-mode", "serial", "--wf-filter", "wf1")
    [job] = rows(db)
    wait_state(cli, db, job["id"], {"finished"})
    assert f"\n│ {job['id']} " not in cli("queue")  # ended jobs are hidden ...
    listing = cli("queue", "--all")  # ... unless asked for
    assert "finished" in listing and "serial" in listing and "wf1" in listing


def test_failed_job(cli, db, monkeypatch):
    monkeypatch.setenv("STUB_EXIT", "4")
    cli("submit-launch", "-t", "5", "-n", "1")
    [job] = rows(db)
    done = wait_state(cli, db, job["id"], {"failed"})
    assert done["state_message"] == "exit status 4"


def test_kill_running_job(cli, db, project):
    (project.root / "hold").touch()
    cli("submit-launch", "-t", "5", "-n", "2")
    [job] = rows(db)
    wait_state(cli, db, job["id"], {"running"})
    out = cli("queue", "--kill", str(job["id"]))
    assert f"batch job {job['id']}: cancelled (cancelled by" in out
    row = wait_state(cli, db, job["id"], {"cancelled"})
    assert row["state_message"].startswith("cancelled by")
    deadline = time.monotonic() + 10
    while row["ended_at"] is None and time.monotonic() < deadline:
        cli("queue")
        row = db.execute("SELECT * FROM batch_jobs WHERE id = %s", (job["id"],)).fetchone()
    assert row["ended_at"] is not None and row["state"] == "cancelled"
    assert "got-term" in (project.root / f"qsubmit/qlaunch{job['id']}.out").read_text()
    assert "already cancelled" in cli.fails("queue", "--kill", str(job["id"]))


def test_kill_refusals(cli, db):
    assert "no batch job 999" in cli.fails("queue", "--kill", "999")
    cli("submit-launch", "-t", "5", "-n", "1")
    [job] = rows(db)
    db.execute("UPDATE batch_jobs SET owner = 'bob' WHERE id = %s", (job["id"],))
    out = cli.fails("queue", "--kill", str(job["id"]))
    assert f"Error: batch job {job['id']} belongs to bob; only they can cancel it" in out
    db.execute("UPDATE batch_jobs SET owner = current_user WHERE id = %s", (job["id"],))
    wait_state(cli, db, job["id"], {"finished"})
    assert "is already finished" in cli.fails("queue", "--kill", str(job["id"]))


@pytest.mark.parametrize("args, message", [
    (["-t", "5", "-n", "0"], "--nodes must be between 1 and 100,000 (got 0)"),
    (["-t", "0", "-n", "1"], "--time-minutes must be between 1 and 525,600"),
    (["-t", "5", "-n", "1", "-q", "a;b"], "--queue 'a;b' has characters"),
    (["-t", "5", "-n", "1", "--scheduler", "lsf"], "unknown scheduler 'lsf'"),
    (["-t", "5", "-n", "1", "--template", "missing.sh"], "job template 'missing.sh' not found"),
])
def test_bad_submissions_change_nothing(cli, db, project, args, message):
    out = cli.fails("submit-launch", *args)
    assert out.startswith("Error: ") and message in out and len(out.strip().splitlines()) == 1
    assert rows(db) == []
    assert [p.name for p in project.qsubmit_dir.iterdir()] in ([], [".local"])


def test_broken_template_changes_nothing(cli, db, project):
    (project.root / "job-templates" / "local.sh").write_text("{{ job.nodes }}\n")
    out = cli.fails("submit-launch", "-t", "5", "-n", "1")
    assert "job template 'local.sh'" in out and "has no attribute 'nodes'" in out
    assert rows(db) == [] and list(project.qsubmit_dir.glob("qlaunch*")) == []


def test_scheduler_refusal_changes_nothing(cli, db, project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{FAKES / 'pbs' / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_SPOOL", str(tmp_path / "spool"))
    out = cli.fails("submit-launch", "--scheduler", "pbs", "-q", "nosuchqueue", "-t", "5", "-n",
                    "1")
    assert out.strip() == "Error: qsub failed: qsub: Unknown queue"
    assert rows(db) == [] and list(project.qsubmit_dir.glob("qlaunch*")) == []


def test_dry_run_submits_nothing(cli, db, project):
    out = cli("submit-launch", "-t", "5", "-n", "3", "--dry-run")
    assert "job=0 nodes=3" in out and "--batch-job-id 0" in out
    assert rows(db) == [] and list(project.qsubmit_dir.glob("qlaunch*")) == []


def test_scheduler_from_server_info(cli, db, project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{FAKES / 'pbs' / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PBS_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("FAKE_START_DELAY", "30")
    project.info = replace(project.info, scheduler="pbs")
    project.save_info()
    cli("submit-launch", "-t", "5", "-n", "1", "-q", "debug")
    [job] = rows(db)
    assert job["scheduler"] == "pbs" and job["scheduler_id"].endswith(".fakepbs")
    assert wait_state(cli, db, job["id"], {"queued"})["started_at"] is None
    cli("queue", "--kill", str(job["id"]))


def test_force_kill(cli, db, project):
    (project.root / "job-templates" / "local.sh").write_text(
        "#!/bin/bash\ntrap '' TERM\nsleep 30 & wait\n")  # ignores a polite SIGTERM
    cli("submit-launch", "-t", "5", "-n", "1")
    [job] = rows(db)
    wait_state(cli, db, job["id"], {"running"})
    out = cli("queue", "--kill", str(job["id"]), "--force")
    assert out.strip().endswith("cancelled (killed by postgres)")  # the database user
    deadline = time.monotonic() + 10
    row = rows(db)[0]
    while row["ended_at"] is None and time.monotonic() < deadline:
        cli("queue")
        row = rows(db)[0]
    assert row["state"] == "cancelled" and row["ended_at"] is not None
