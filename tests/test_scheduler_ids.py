"""``balsam queue --kill`` acts only on a job id the user got from the scheduler themselves: bob
cannot aim alice's kill at her database server (or any other process of hers) by rewriting her
batch job's row or the local scheduler's shared state files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from balsam_launcher.schedulers.local_runner import start_ticks
from balsam_testing.pg import ACTIVATE, balsam_as, sh, sql_as, write_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

#: alice's batch job: waits until it is told to stop, and says so.
HOLD = """#!/bin/bash
trap 'echo got-term >> {{ project_dir | quote }}/qsubmit/marker; exit 0' TERM
echo ready >> {{ project_dir | quote }}/qsubmit/marker
for i in $(seq 600); do sleep 0.1; done
"""


def wait_for_text(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{path} never said {text!r}"
        time.sleep(0.1)


def test_queue_kill_acts_only_on_jobs_the_user_submitted(run_as, shared_dir):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    write_as(run_as, "alice", root / "job-templates/local.sh", HOLD)
    out = balsam_as(run_as, "alice", root, "submit-launch", "-t", "5", "-n", "1").stdout
    assert "Submitted batch job 1" in out
    marker = root / "qsubmit/marker"
    wait_for_text(marker, "ready")
    runner = sql_as(run_as, "alice", root, "SELECT scheduler_id FROM batch_jobs")[0][0]
    postgres = int((root / "balsamdb/postmaster.pid").read_text().split()[0])
    # bob may not rewrite alice's row...
    assert sql_as(run_as, "bob", root, f"UPDATE batch_jobs SET scheduler_id = '{postgres}'") == [
        "PermissionDenied: permission denied: only alice may change the scheduler id or script "
        "of batch job 1 (bob is not its owner)"]
    # ...but say it happened anyway (a bypass of the trigger), and bob forged the local
    # scheduler's shared record of that pid, start time and all.
    forged = {"host": os.uname().nodename, "boot": start_ticks(postgres),
              "started_at": "2026-01-01T00:00:00+00:00"}
    run_as("bob", ["tee", str(root / f"qsubmit/.local/{postgres}.start")],
           input=json.dumps(forged))
    bypass = ("SET session_replication_role = replica",
              f"UPDATE batch_jobs SET scheduler_id = '{postgres}' WHERE id = 1")
    assert sql_as(run_as, "alice", root, *bypass, ADMIN="1") == ["ok", "ok"]
    for force in ((), ("--force",)):
        proc = balsam_as(run_as, "alice", root, "queue", "--kill", "1", *force, check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip() == (f"Error: batch job 1 names local job {postgres}, which "
                                       f"you (alice) did not submit: refusing to act on it")
    assert start_ticks(postgres) == forged["boot"], "the server was not signalled"
    assert balsam_as(run_as, "alice", root, "ls").returncode == 0
    assert "got-term" not in marker.read_text()
    # Put back, alice's own job is cancelled as before.
    restore = ("SET session_replication_role = replica",
               f"UPDATE batch_jobs SET scheduler_id = '{runner['scheduler_id']}' WHERE id = 1")
    sql_as(run_as, "alice", root, *restore, ADMIN="1")
    out = balsam_as(run_as, "alice", root, "queue", "--kill", "1").stdout
    assert "batch job 1: cancelled (cancelled by alice)" in out
    wait_for_text(marker, "got-term")
    # The private record is alice's alone.
    uuid = json.loads((root / "server-info").read_text())["uuid"]
    record = Path(f"/home/alice/.balsam/submitted/{uuid}")
    assert oct(record.stat().st_mode & 0o777) == oct(0o600)
    assert oct(record.parent.stat().st_mode & 0o777) == oct(0o700)
