"""Many launchers on one database: every task runs exactly once (each task appends its id to a
file; the lines are counted), with launcher processes of one user and of three UNIX users
sharing a project's embedded server."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from balsam.db import connect
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow]


def test_concurrent_launchers_run_every_task_exactly_once(project, tmp_path):
    counts = tmp_path / "counts"
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0 {counts}"}
                                     for i in range(2000)])
    args = ["--job-mode", "serial", "--nodes", "8", "--consume-all", "--poll-interval", "0.5"]
    procs = [lt.start_launcher(project.root, *args, output=tmp_path / f"l{i}") for i in range(4)]
    try:
        with connect(project) as db:
            final = lt.wait_until_final(db, ids, 300, procs)
        assert [p.wait(timeout=60) for p in procs] == [0] * 4
    finally:
        for p in procs:
            if p.poll() is None:
                lt.kill_session(p)
    assert {r["state"] for r in final.values()} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    with connect(project) as db:
        events = lt.events(db)
        runs = Counter(e["task_id"] for e in events if e["to_state"] == "RUNNING")
        assert set(runs.values()) == {1}
        by_launcher = Counter(e["launcher_id"] for e in events if e["to_state"] == "RUNNING")
        assert len(by_launcher) == 4 and min(by_launcher.values()) > 50  # all took part
        assert all(r["launcher_id"] is None for r in lt.states(db).values())


#: Run as the project owner: add the recording app and tasks, print their ids.
SETUP = """
import json, sys
from pathlib import Path
from balsam.db import connect
from balsam.project import Project
from balsam_testing import launchers as lt
project = Project.load(sys.argv[1])
with connect(project) as db:
    app = lt.record_app(db, project.root)
    ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0 {sys.argv[2]}"}
                                 for i in range(int(sys.argv[3]))])
print(json.dumps(ids))
"""

#: Run as the owner afterwards: the tasks, the RUNNING events and the launchers.
REPORT = """
import json, sys
from balsam.db import connect
from balsam.project import Project
from balsam_testing import launchers as lt
with connect(Project.load(sys.argv[1])) as db:
    states = {i: r["state"] for i, r in lt.states(db).items()}
    runs = db.execute("SELECT e.task_id, e.db_user, l.owner FROM task_events e "
                      "JOIN launchers l ON l.id = e.launcher_id "
                      "WHERE e.to_state = 'RUNNING'").fetchall()
    launchers = db.execute("SELECT owner, end_reason FROM launchers ORDER BY id").fetchall()
print(json.dumps({"states": states, "runs": runs, "launchers": launchers}))
"""


@pytest.mark.multiuser
def test_launchers_of_three_users_share_one_project(run_as, shared_dir):
    run_as("alice", ["balsam", "init", "shared"], cwd=shared_dir)
    root = shared_dir / "shared"
    env = {"BALSAM_DB_PATH": str(root)}
    run_as("alice", ["bash", "-c", '. balsamactivate "$BALSAM_DB_PATH"'], env=env)
    run_as("alice", ["balsam", "server", "--add-user", "bob", "--add-user", "carol"], env=env)
    counts = root / "data" / "counts"  # the work zone: every launcher's tasks write it
    out = run_as("alice", [sys.executable, "-c", SETUP, str(root), str(counts), "1200"], env=env)
    ids = json.loads(out.stdout)
    args = ["--job-mode", "serial", "--nodes", "4", "--consume-all", "--poll-interval", "0.5"]
    users = ("alice", "bob", "carol")
    # alice's tasks: bob and carol run them because their launchers trust her
    procs = [lt.start_launcher(root, *args, *([] if u == "alice" else ["--trust", "alice"]),
                               user=u, output=shared_dir / f"{u}.out")
             for u in users]
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                lt.kill_session(p)
    outputs = {u: (shared_dir / f"{u}.out").read_text() for u in users}
    assert codes == [0, 0, 0], outputs
    report = json.loads(run_as("alice", [sys.executable, "-c", REPORT, str(root)],
                               env=env).stdout)
    assert {report["states"][str(t)] for t in ids} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    assert Counter(r["task_id"] for r in report["runs"]) == Counter({t: 1 for t in ids})
    assert {r["owner"] for r in report["launchers"]} == set(users)
    assert all(r["end_reason"] == "no work left" for r in report["launchers"])
    # each launcher wrote its tasks' changes as its own database user
    assert all(r["db_user"] == r["owner"] for r in report["runs"])
    per_user = Counter(r["owner"] for r in report["runs"])
    assert len(per_user) == 3 and min(per_user.values()) > 50, per_user
    logs = sorted(p.name for p in (root / "log").glob("launcher_*.log"))
    assert len(logs) == 3
