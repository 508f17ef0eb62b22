"""Driving the namespace test cluster of ``scripts/cluster-up.sh`` from Python (root only).

A login node and N compute nodes on this machine, each with its own hostname, address,
processes, /tmp and /run, sharing /home, /opt and /var/tmp like a cluster's filesystem. Commands
run on a node as a user the way ``ssh node`` would run them; faults are what happens to a real
node: it loses power (every process killed at once), its cable is pulled, Slurm cancels its job.

A project on it (:func:`project`) is owned by alice, who runs its server on the login node, and
shared with bob; commands run as either user on any node.

Used by the cluster tests (``tests/cluster``) and the cluster benchmark.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
HOSTS = Path("/etc/balsam-cluster/hosts")
SLURMCTLD_LOG = Path("/var/log/balsam-cluster/slurmctld.log")
#: slurmctld's log lines for a job getting its nodes and ending.
_ALLOCATION = re.compile(r"^\[(?P<at>[0-9T:.-]+)\] (?P<event>sched: Allocate|backfill: Started|"
                         r"_job_complete:) JobId=(?P<job>\d+) (NodeList|done)")
VENV_BIN = str(Path(sys.executable).parent)
#: Slurm job states of a job that has not ended yet.
ACTIVE_JOB_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
                     "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED")

T = TypeVar("T")


class ClusterError(RuntimeError):
    """A cluster script or a command on a node failed."""


def _script(name: str, *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        message = f"scripts/{name} {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
        raise ClusterError(message)
    return proc.stdout


def login_env(user: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a login shell of ``user`` has: the venv's ``balsam`` first on PATH."""
    pw = pwd.getpwnam(user)
    return {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir, "USER": user,
            "LOGNAME": user, "LANG": "C.UTF-8", "SHELL": "/bin/bash", **(extra or {})}


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             interval: float = 0.5) -> T:
    """Call ``probe`` until it returns something other than None; ClusterError on timeout,
    naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f}s waiting for {what}"
            raise ClusterError(message)
        time.sleep(interval)


@dataclass(frozen=True)
class Cluster:
    """The running cluster: ``login`` plus ``compute`` nodes."""

    compute: tuple[str, ...]
    login: str = "login"

    @classmethod
    def up(cls, nodes: int) -> Cluster:
        """Bring the cluster up with ``nodes`` compute nodes (a no-op when it already is)."""
        _script("cluster-up.sh", str(nodes))
        return cls(tuple(f"node{i}" for i in range(1, nodes + 1)))

    @staticmethod
    def down() -> None:
        _script("cluster-down.sh")

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.login, *self.compute)

    # --- commands ------------------------------------------------------------------------------

    def command(self, node: str, args: Sequence[str], *, user: str | None = None,
                env: Mapping[str, str] | None = None) -> list[str]:
        """The argument list that runs ``args`` on ``node`` (as ``user``, with a clean login
        environment plus ``env``)."""
        if user is not None:
            args = ["runuser", "-u", user, "--", "env", "-i",
                    *(f"{k}={v}" for k, v in login_env(user, env).items()), *args]
        elif env:
            args = ["env", *(f"{k}={v}" for k, v in env.items()), *args]
        return [str(SCRIPTS / "cluster-exec.sh"), node, *args]

    def run(self, node: str, args: Sequence[str], *, user: str | None = None,
            env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
            check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command on a node and wait for it; ClusterError if it fails and ``check``."""
        proc = subprocess.run(self.command(node, args, user=user, env=env), cwd=cwd,
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            who = f"{user}@{node}" if user else f"root@{node}"
            message = (f"{who}$ {' '.join(args)} -> exit {proc.returncode}\n"
                       f"{proc.stdout}{proc.stderr}")
            raise ClusterError(message)
        return proc

    def start(self, node: str, args: Sequence[str], *, user: str | None = None,
              env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a command on a node without waiting for it (its output is dropped)."""
        return subprocess.Popen(self.command(node, args, user=user, env=env),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def address(self, node: str) -> str:
        """The node's IP address on the cluster network."""
        for line in HOSTS.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == node:
                return parts[0]
        message = f"no node {node!r} in {HOSTS}"
        raise ClusterError(message)

    def pids(self, node: str) -> list[int]:
        """The node's processes, as this machine numbers them."""
        out = subprocess.run(["ip", "netns", "pids", f"bcl-{node}"], capture_output=True,
                             text=True, check=True).stdout
        return [int(p) for p in out.split()]

    @staticmethod
    def hide(path: Path) -> None:
        """Make ``path`` (a directory on the shared filesystem) look empty on every compute node,
        now and after it boots again, as a login node's private directory is on a real
        cluster."""
        _script("cluster-node.sh", "hide", str(path))

    # --- Slurm ---------------------------------------------------------------------------------

    def job_state(self, job_id: str) -> str:
        """A Slurm job's state (``RUNNING``, ``COMPLETED``...), or "" once Slurm forgot it."""
        out = self.run(self.login, ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
                       check=False).stdout
        return out.strip()

    def wait_job_ended(self, job_id: str, timeout: float) -> str:
        """Wait until a Slurm job has ended; returns its final state ("" if Slurm forgot it)."""

        def ended() -> str | None:
            state = self.job_state(job_id)
            return None if state in ACTIVE_JOB_STATES else state

        return wait_for(f"Slurm job {job_id} to end", ended, timeout)

    def allocation(self, job_id: str) -> tuple[float, float]:
        """When slurmctld gave a job its nodes and when it saw the job end (epoch seconds, to the
        millisecond: squeue and sacct keep whole seconds only)."""
        start = end = None
        for line in SLURMCTLD_LOG.read_text().splitlines():
            match = _ALLOCATION.match(line)
            if match and match["job"] == job_id:
                when = datetime.fromisoformat(match["at"]).timestamp()
                start, end = (when, end) if match["event"] != "_job_complete:" else (start, when)
        if start is None or end is None:
            message = f"{SLURMCTLD_LOG} does not say when job {job_id} started and ended"
            raise ClusterError(message)
        return start, end

    def scancel(self, job_id: str, *options: str) -> None:
        self.run(self.login, ["scancel", *options, job_id])

    def idle(self) -> bool:
        """Whether every compute node is idle (no job left on it)."""
        out = self.run(self.login, ["sinfo", "-h", "-N", "-o", "%T"], check=False).stdout
        return out.split() == ["idle"] * len(self.compute)

    # --- faults --------------------------------------------------------------------------------

    def _node(self, node: str, action: str) -> None:
        _script("cluster-node.sh", node, action, timeout=120)

    def kill(self, node: str) -> None:
        """Every process of the node dies at once (its init is killed: a power failure)."""
        self._node(node, "kill")

    def link_down(self, node: str) -> None:
        """Pull the node's network cable: its processes live on, unreachable."""
        self._node(node, "link-down")

    def link_up(self, node: str) -> None:
        self._node(node, "link-up")

    def lose(self, node: str) -> None:
        """The node is lost mid-run: unplugged first (so that nothing it held says goodbye),
        then every process killed. ``boot`` and ``link_up`` bring it back."""
        self.link_down(node)
        self.kill(node)

    def boot(self, node: str) -> None:
        """Start a killed node again (init, munged, slurmd); Slurm takes it back once slurmd
        registers."""
        self._node(node, "boot")

    def heal(self, timeout: float = 300) -> None:
        """After faults: boot every stopped node, plug every cable back, cancel every job, and
        wait until Slurm has every compute node idle again."""
        for line in _script("cluster-node.sh", "status").splitlines():
            node, state, link = line.split()
            if state == "stopped":
                self.boot(node)
            if link != "link=UP":
                self.link_up(node)
        jobs = self.run(self.login, ["squeue", "-h", "-o", "%i"]).stdout.split()
        if jobs:
            self.run(self.login, ["scancel", *jobs])
        wait_for("every compute node idle", lambda: self.idle() or None, timeout)


# --- a project on the cluster ------------------------------------------------------------------

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
from balsam_testing import launchers as testing
app_name, executable, tasks = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with connect(Project.from_env()) as db:
    row = db.execute("SELECT id FROM apps WHERE name = %s", [app_name]).fetchone()
    app = row["id"] if row else testing.add_app(db, app_name, executable)
    print(json.dumps(testing.add_tasks(db, app, tasks)))
"""


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

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {"BALSAM_PROJECT_DIR": str(self.root), "BALSAM_PG_FAST": "1", **(extra or {})}

    def sh(self, user: str, script: str, *args: str, node: str = "login", check: bool = True,
           env: Mapping[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``bash -c script`` as ``user`` on ``node``, the project activated first."""
        return self.cluster.run(node, ["bash", "-c", ACTIVATE + script, "_", *args], user=user,
                                env=self.env(env), cwd=self.root, check=check, timeout=timeout)

    def python(self, user: str, code: str, *args: str, node: str = "login",
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python -c code`` as ``user`` on ``node`` with BALSAM_DB_PATH set (no activation)."""
        return self.cluster.run(node, ["python", "-c", code, *args], user=user,
                                env=self.env({"BALSAM_DB_PATH": str(self.root)}), cwd=self.root,
                                check=check)

    def sql(self, query: str, *params: Any, user: str = "alice") -> list[dict[str, Any]]:
        """Rows of a query run as ``user`` on the login node."""
        out = self.python(user, SQL, query, json.dumps(list(params))).stdout
        return list(json.loads(out))

    def add_tasks(self, user: str, app: str, executable: str,
                  tasks: Sequence[Mapping[str, Any]]) -> list[int]:
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

    @staticmethod
    def runs(path: Path) -> list[tuple[int, str]]:
        """(task id, host) of every run a RECORD task wrote to ``path``."""
        if not path.exists():
            return []
        return [(int(t), h) for t, h in (ln.split() for ln in path.read_text().splitlines())]

    def submit(self, user: str, *options: str, env: Mapping[str, str] | None = None) -> Job:
        """``balsam submit-launch --scheduler slurm OPTIONS`` as ``user`` on the login node."""
        out = self.sh(user, 'balsam submit-launch --scheduler slurm "$@"', *options,
                      env=env).stdout
        match = SUBMITTED.match(out)
        if match is None:
            message = f"unexpected submit-launch output: {out!r}"
            raise ClusterError(message)
        return Job(int(match.group(1)), match.group(2))

    def wait(self, *jobs: Job, timeout: float = 120) -> None:
        """Wait until Slurm says these batch jobs ended."""
        for job in jobs:
            self.cluster.wait_job_ended(job.slurm_id, timeout)


@contextlib.contextmanager
def project(cluster: Cluster, group: str, collaborators: Sequence[str] = ("bob",)
            ) -> Iterator[ClusterProject]:
    """alice's project in a ``group`` directory on the shared filesystem; its server runs on the
    login node; each collaborator is added and has activated it there (so has a password). The
    project's socket is hidden from the compute nodes, as on a real cluster. Stopped and removed
    afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="balsam-cluster-", dir=SHARED))
    os.chown(parent, 0, grp.getgrnam(group).gr_gid)
    os.chmod(parent, 0o2770)
    proj = ClusterProject(cluster, parent / "proj")
    try:
        cluster.run("login", ["balsam", "init", str(proj.root)], user="alice", env=proj.env())
        for user in collaborators:
            proj.sh("alice", "balsam server --add-user $1", user)
            proj.sh(user, "true")
        cluster.hide(proj.root / ".pgsocket")
        yield proj
    finally:
        if (proj.root / "server-info").exists():
            cluster.run("login", ["balsam", "server", "stop"], user="alice",
                        env={"BALSAM_DB_PATH": str(proj.root)}, check=False)
        shutil.rmtree(parent, ignore_errors=True)
