"""The multi-host cluster of ``scripts/cluster-up.sh`` for the tests in this directory: one
session brings it up and tears it down; one project, owned by alice, whose server runs on the
login node, shared with bob. Tests keep apart by workflow (each submits with ``--wf-filter``).
"""

from __future__ import annotations

import grp
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NODES = 3
#: Where projects live: on the shared filesystem (/tmp is node-local on the cluster).
SHARED = Path("/var/tmp")
ACTIVATE = '. balsamactivate "$BALSAM_PROJECT_DIR" >/dev/null && '
#: A task that records where it ran: ``record.sh SECONDS FILE`` sleeps, then appends
#: "TASK_ID HOSTNAME" to FILE (one line per execution).
RECORD = """#!/bin/sh
sleep "$1"
echo "$BALSAM_TASK_ID $(hostname)" >> "$2"
"""
SUBMITTED = re.compile(r"^Submitted batch job (\d+) \(slurm job (\d+)\)")

SQL = """
import json, sys
from balsam.db import connect
from balsam.project import Project
with connect(Project.from_env()) as db:
    rows = db.execute(sys.argv[1], json.loads(sys.argv[2])).fetchall()
print(json.dumps(rows, default=str))
"""

ADD_TASKS = """
import json, sys
from balsam.db import connect
from balsam.project import Project
from balsam_launcher import testing
app_name, executable, tasks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with connect(Project.from_env()) as db:
    row = db.execute("SELECT id FROM apps WHERE name = %s", [app_name]).fetchone()
    app = row["id"] if row else testing.add_app(db, app_name, executable)
    print(json.dumps(testing.add_tasks(db, app, tasks)))
"""


def _load(name: str) -> Any:
    """A helper module of this directory (pytest's importlib mode does not put it on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


nc = _load("namespace_cluster")
Cluster = nc.Cluster


@pytest.fixture(scope="session")
def cluster(unix_users: Any) -> Iterator[Cluster]:
    """A login node and three compute nodes (``scripts/cluster-up.sh 3``), torn down after."""
    if os.geteuid() != 0:
        pytest.skip("the namespace cluster needs root (scripts/cluster-up.sh)")
    up = Cluster.up(NODES)
    try:
        yield up
    finally:
        Cluster.down()


@dataclass(frozen=True)
class Job:
    """A batch job as ``balsam submit-launch`` reported it."""

    id: int
    slurm_id: str


@dataclass
class ClusterProject:
    """alice's project on the cluster: commands as its users on any node, and SQL."""

    cluster: Cluster
    root: Path
    owner: str = "alice"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"BALSAM_PROJECT_DIR": str(self.root), "BALSAM_PG_FAST": "1", **(extra or {})}

    def sh(self, user: str, script: str, *args: str, node: str = "login", check: bool = True,
           env: dict[str, str] | None = None, timeout: float = 120) -> Any:
        """``bash -c script`` as ``user`` on ``node``, the project activated first."""
        return self.cluster.run(node, ["bash", "-c", ACTIVATE + script, "_", *args], user=user,
                                env=self.env(env), cwd=self.root, check=check, timeout=timeout)

    def python(self, user: str, code: str, *args: str, node: str = "login",
               check: bool = True) -> Any:
        """``python -c code`` as ``user`` on ``node`` with BALSAM_DB_PATH set (no activation)."""
        return self.cluster.run(node, ["python", "-c", code, *args], user=user,
                                env=self.env({"BALSAM_DB_PATH": str(self.root)}), cwd=self.root,
                                check=check)

    def sql(self, query: str, *params: Any, user: str = "alice") -> list[dict[str, Any]]:
        """Rows of a query run as ``user`` on the login node."""
        out = self.python(user, SQL, query, json.dumps(list(params))).stdout
        return json.loads(out)

    def add_tasks(self, user: str, app: str, executable: str,
                  tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Insert READY tasks of ``app`` (created by ``user`` if it does not exist)."""
        out = self.python(user, ADD_TASKS, app, executable, json.dumps(list(tasks))).stdout
        return [int(i) for i in json.loads(out)]

    def write(self, user: str, path: Path, text: str, mode: str = "0640") -> Path:
        """Write a file as ``user`` (on the shared filesystem)."""
        self.cluster.run("login", ["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "_", str(path),
                                   mode], user=user, input=text)
        return path

    def script(self, user: str, name: str, text: str = RECORD) -> str:
        """A shell script of ``user`` in the project's data directory, as an app's executable."""
        return f"/bin/sh {self.write(user, self.root / 'data' / f'{name}.sh', text, '0750')}"

    def submit(self, user: str, *options: str, env: dict[str, str] | None = None) -> Job:
        """``balsam submit-launch --scheduler slurm OPTIONS`` as ``user`` on the login node."""
        out = self.sh(user, 'balsam submit-launch --scheduler slurm "$@"', *options,
                      env=env).stdout
        match = SUBMITTED.match(out)
        assert match, out
        return Job(int(match.group(1)), match.group(2))

    def wait(self, *jobs: Job, timeout: float = 120) -> None:
        """Wait until Slurm says these batch jobs ended."""
        for job in jobs:
            self.cluster.wait_job_ended(job.slurm_id, timeout)


@pytest.fixture(scope="session")
def project(cluster: Cluster, unix_users: Any) -> Iterator[ClusterProject]:
    """alice's project in a group directory on the shared filesystem; its server runs on the
    login node; bob is added and has activated it there (so he has a password). The project's
    socket is hidden from the compute nodes, as on a real cluster."""
    parent = Path(tempfile.mkdtemp(prefix="balsam-cluster-", dir=SHARED))
    os.chown(parent, 0, grp.getgrnam(unix_users.group).gr_gid)
    os.chmod(parent, 0o2770)
    proj = ClusterProject(cluster, parent / "proj")
    try:
        cluster.run("login", ["balsam", "init", str(proj.root)], user="alice", env=proj.env())
        proj.sh("alice", "balsam server --add-user bob")
        proj.sh("bob", "true")
        cluster.hide(proj.root / ".pgsocket")
        yield proj
    finally:
        if (proj.root / "server-info").exists():
            cluster.run("login", ["balsam", "server", "stop"], user="alice",
                        env={"BALSAM_DB_PATH": str(proj.root)}, check=False)
        shutil.rmtree(parent, ignore_errors=True)
