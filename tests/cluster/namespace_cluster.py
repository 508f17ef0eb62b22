"""Driving the namespace test cluster of ``scripts/cluster-up.sh`` from Python (root only).

A login node and N compute nodes on this machine, each with its own hostname, address,
processes, /tmp and /run, sharing /home, /opt and /var/tmp like a cluster's filesystem. Commands
run on a node as a user the way ``ssh node`` would run them; faults are what happens to a real
node: it loses power (every process killed at once), its cable is pulled, Slurm cancels its job.

Used by the cluster tests (``tests/cluster``) and the cluster benchmark.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
HOSTS = Path("/etc/balsam-cluster/hosts")
#: An empty, read-only directory mounted over paths a node must not see.
EMPTY = Path("/var/lib/balsam-cluster/empty")
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
              env: Mapping[str, str] | None = None, output: Path | None = None,
              cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
        """Start a command on a node without waiting for it."""
        out = open(output, "ab") if output else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(self.command(node, args, user=user, env=env), cwd=cwd,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        finally:
            if output:
                out.close()  # type: ignore[union-attr]

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

    def hide(self, path: Path, nodes: Sequence[str] | None = None) -> None:
        """Make ``path`` (a directory on the shared filesystem) look empty on ``nodes`` (default:
        the compute nodes), as a login node's private directory is on a real cluster."""
        for node in self.compute if nodes is None else nodes:
            self.run(node, ["mount", "--bind", "-o", "ro", str(EMPTY), str(path)])

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
