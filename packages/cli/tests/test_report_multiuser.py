"""Reports on a real shared project: a member records history, a viewer reads the reports, an
outsider is refused. Real UNIX users, alice's embedded server."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

ACTIVATE = '. balsamactivate "$P" >/dev/null'
WINDOW = ["--since", "2024-03-01T00:00:00+00:00", "--until", "2024-03-01T00:01:40+00:00"]

#: Run as bob (a member): a 2-node launcher [0, 100) s and a 2-node task RUNNING [10, 60) s.
RECORD = """
from datetime import datetime, timedelta, timezone
from balsam.db import connect
from balsam.project import Project
t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
at = lambda s: t0 + timedelta(seconds=s)
with connect(Project.from_env()) as db:
    app = db.execute("INSERT INTO apps (name, executable) VALUES ('a', '/bin/true') "
                     "RETURNING id").fetchone()["id"]
    launcher = db.execute(
        "INSERT INTO launchers (hostname, pid, job_mode, num_nodes, started_at, heartbeat_at, "
        "ended_at) VALUES ('h', 1, 'mpi', 2, %s, %s, %s) RETURNING id",
        (at(0), at(100), at(100))).fetchone()["id"]
    task = db.execute("INSERT INTO tasks (app_id, num_nodes, workflow) VALUES (%s, 2, 'w') "
                      "RETURNING id", (app,)).fetchone()["id"]
    for src, dst, s in (("PREPROCESSED", "RUNNING", 10), ("RUNNING", "RUN_DONE", 60),
                        ("POSTPROCESSED", "JOB_FINISHED", 70)):
        db.execute("INSERT INTO task_events (task_id, from_state, to_state, at, launcher_id) "
                   "VALUES (%s, %s, %s, %s, %s)", (task, src, dst, at(s), launcher))
"""


def sh(run_as, user: str, root: Path, script: str, check: bool = True, **env: str):
    return run_as(user, ["bash", "-c", script], cwd=root.parent, env={"P": str(root), **env},
                  check=check)


def test_viewer_reads_what_a_member_recorded(run_as, shared_dir):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam server --add-user carol --role viewer")
    sh(run_as, "bob", root, f'{ACTIVATE} && python -c "$CODE"', CODE=RECORD)

    data = json.loads(sh(run_as, "carol", root,
                         f"{ACTIVATE} && balsam report summary {' '.join(WINDOW)} --json").stdout)
    assert data["utilization"] == pytest.approx(2 * 50 / (2 * 100))
    assert data["tasks_finished"] == 1
    assert [(g["key"], g["tasks_finished"]) for g in data["groups"]] == [("bob", 1)]

    image = Path(pwd.getpwnam("carol").pw_dir) / "balsam-report-test.png"
    image.unlink(missing_ok=True)
    plot = sh(run_as, "carol", root, f"{ACTIVATE} && balsam report utilization "
                                     f"{' '.join(WINDOW)} --by workflow --plot {image}")
    assert "Utilisation 50.0%" in plot.stdout
    assert image.read_bytes()[:4] == b"\x89PNG" and image.stat().st_uid == pwd.getpwnam(
        "carol").pw_uid
    image.unlink()

    dave = run_as("dave", ["balsam", "report", "summary"], env={"BALSAM_DB_PATH": str(root)},
                  check=False)
    assert dave.returncode == 1
    assert dave.stderr.startswith("Error: ") and len(dave.stderr.strip().splitlines()) == 1
