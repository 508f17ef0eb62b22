"""Reports on a real shared project: a member records history, a viewer reads the reports, an
outsider is refused. Real UNIX users, alice's embedded server."""

from __future__ import annotations

import json
import pwd
from datetime import datetime, timedelta
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

ACTIVATE = '. balsamactivate "$P" >/dev/null'
#: Run as bob (a member), who records history as anyone does, through the triggers: a task
#: created at t0 and dated as a launcher dates its changes (within its previous change and now),
#: RUNNING [0.1, 0.6) s on the 2 nodes of a launcher [0, 1) s. Prints t0.
RECORD = """
import time
from datetime import timedelta
from balsam.db import connect
from balsam.project import Project
with connect(Project.from_env()) as db:
    app = db.execute("INSERT INTO apps (name, executable) VALUES ('a', '/bin/true') "
                     "RETURNING id").fetchone()["id"]
    task = db.execute("INSERT INTO tasks (app_id, num_nodes, workflow, state) "
                      "VALUES (%s, 2, 'w', 'READY') RETURNING id, state_changed_at",
                      (app,)).fetchone()
    t0 = task["state_changed_at"]
    at = lambda s: t0 + timedelta(seconds=s)
    launcher = db.execute(
        "INSERT INTO launchers (hostname, pid, job_mode, num_nodes, started_at, heartbeat_at, "
        "ended_at) VALUES ('h', 1, 'mpi', 2, %s, %s, %s) RETURNING id",
        (at(0), at(1), at(1))).fetchone()["id"]
    time.sleep(1.1)
    for state, s in (("STAGED_IN", 0.05), ("PREPROCESSED", 0.08), ("RUNNING", 0.1),
                     ("RUN_DONE", 0.6), ("POSTPROCESSED", 0.65), ("JOB_FINISHED", 0.7)):
        db.execute("UPDATE tasks SET state = %s, state_changed_at = %s, launcher_id = %s "
                   "WHERE id = %s", (state, at(s), launcher, task["id"]))
    print(t0.isoformat())
"""


def sh(run_as, user: str, root: Path, script: str, check: bool = True, **env: str):
    return run_as(user, ["bash", "-c", script], cwd=root.parent, env={"P": str(root), **env},
                  check=check)


def test_viewer_reads_what_a_member_recorded(run_as, shared_dir):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam server --add-user carol --role viewer")
    t0 = datetime.fromisoformat(sh(run_as, "bob", root, f'{ACTIVATE} && python -c "$CODE"',
                                   CODE=RECORD).stdout.split()[-1])
    window = ["--since", t0.isoformat(), "--until", (t0 + timedelta(seconds=1)).isoformat()]

    data = json.loads(sh(run_as, "carol", root,
                         f"{ACTIVATE} && balsam report summary {' '.join(window)} --json").stdout)
    assert data["utilization"] == pytest.approx(2 * 0.5 / (2 * 1))
    assert data["tasks_finished"] == 1
    assert [(g["key"], g["tasks_finished"]) for g in data["groups"]] == [("bob", 1)]

    image = Path(pwd.getpwnam("carol").pw_dir) / "balsam-report-test.png"
    image.unlink(missing_ok=True)
    plot = sh(run_as, "carol", root, f"{ACTIVATE} && balsam report utilization "
                                     f"{' '.join(window)} --by workflow --plot {image}")
    assert "Utilisation 50.0%" in plot.stdout
    assert image.read_bytes()[:4] == b"\x89PNG" and image.stat().st_uid == pwd.getpwnam(
        "carol").pw_uid
    image.unlink()

    dave = run_as("dave", ["balsam", "report", "summary"], env={"BALSAM_DB_PATH": str(root)},
                  check=False)
    assert dave.returncode == 1
    assert dave.stderr.startswith("Error: ") and len(dave.stderr.strip().splitlines()) == 1
