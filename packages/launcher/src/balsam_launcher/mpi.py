"""The default ``mpi_command``: srun inside Slurm, aprun on a Cray, otherwise mpirun."""

from __future__ import annotations

import functools
import shutil
import socket
import subprocess
from collections.abc import Sequence
from typing import Any

from balsam.models import Task
from balsam.resources import Node


@functools.cache
def mpirun_flavour(mpirun: str = "mpirun") -> str:
    """``openmpi``, ``mpich`` or ``unknown``, from ``mpirun --version`` (asked once)."""
    path = shutil.which(mpirun)
    if path is None:
        return "unknown"
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).lower()
    if "open mpi" in text or "open-mpi" in text:
        return "openmpi"
    if "hydra" in text or "mpich" in text or "intel" in text:
        return "mpich"
    return "unknown"


def default_command(task: Task, command: Sequence[str], nodes: Sequence[Node],
                    env: dict[str, str], launcher: dict[str, Any]) -> list[str]:
    """The site-independent choice (see the ``mpi_command`` hook)."""
    local = launcher.get("simulated") or all(n.host == socket.gethostname() for n in nodes)
    if launcher.get("scheduler") == "slurm" and not launcher.get("simulated") \
            and shutil.which("srun"):
        return srun(task, command, nodes)
    if shutil.which("aprun") and not local:
        return aprun(task, command, nodes, env)
    return mpirun(task, command, nodes, env, local=bool(local), flavour=mpirun_flavour(),
                  scratch=launcher.get("scratch"))


def _ranks(task: Task) -> int:
    return task.num_nodes * task.ranks_per_node


def srun(task: Task, command: Sequence[str], nodes: Sequence[Node]) -> list[str]:
    args = ["srun", "--nodes", str(len(nodes)), "--ntasks", str(_ranks(task)),
            "--ntasks-per-node", str(task.ranks_per_node),
            "--nodelist", ",".join(n.name or n.host for n in nodes), "--export=ALL"]
    if task.threads_per_rank > 1:
        args += ["--cpus-per-task", str(task.threads_per_rank)]
    if task.cpu_affinity == "none":
        args += ["--cpu-bind=none"]
    return [*args, *command]


def aprun(task: Task, command: Sequence[str], nodes: Sequence[Node],
          env: dict[str, str]) -> list[str]:
    affinity = task.cpu_affinity if task.cpu_affinity in ("none", "depth") else "none"
    args = ["aprun", "-n", str(_ranks(task)), "-N", str(task.ranks_per_node),
            "-d", str(task.threads_per_rank), "-j", str(task.threads_per_core), "-cc", affinity,
            "-L", ",".join(n.name or n.host for n in nodes)]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    return [*args, *command]


def mpirun(task: Task, command: Sequence[str], nodes: Sequence[Node], env: dict[str, str], *,
           local: bool, flavour: str, scratch: str | None = None) -> list[str]:
    args = ["mpirun", "-n", str(_ranks(task))]
    hosts = list(dict.fromkeys(n.host for n in nodes))
    if flavour == "mpich":
        if not local:
            args += ["-ppn", str(task.ranks_per_node), "-hosts", ",".join(hosts)]
        if env:
            args += ["-genvlist", ",".join(env)]
        return [*args, *command]
    if scratch and flavour == "openmpi":
        # One session directory per task: Open MPI 4 fails ("mkdir /tmp/ompi.<host>.<uid>:
        # File exists") when several mpiruns of one user create the shared one at once.
        args += ["--mca", "orte_tmpdir_base", f"{scratch}/{task.id}"]
    if local:
        # Several tasks share this host: never pin them all to the same cores.
        args += ["--oversubscribe", "--bind-to", "none"]
    else:
        args += ["--npernode", str(task.ranks_per_node),
                 "--host", ",".join(f"{h}:{task.ranks_per_node}" for h in hosts)]
        if task.cpu_affinity == "none":
            args += ["--bind-to", "none"]
    for key in env:
        args += ["-x", key]
    return [*args, *command]
