"""The default ``mpi_command``: the site's ``mpi_command`` setting, else srun inside Slurm, aprun on
a Cray, otherwise mpirun; and a task's ``mpi_flags`` put before its command."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence

from balsam.config import check_mpi_template
from balsam.contracts import LauncherInfo
from balsam.errors import InvalidInput
from balsam.models import Task
from balsam.resources import Node
from balsam_launcher.detect import expand_hostlist


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
                    env: dict[str, str], launcher: LauncherInfo) -> list[str]:
    """The site's ``mpi_command`` setting if it has one, else the site-independent choice (see
    the ``mpi_command`` hook)."""
    if launcher.mpi_command:
        return from_template(launcher.mpi_command, task, command, nodes)
    local = launcher.simulated or all(n.host == socket.gethostname() for n in nodes)
    if launcher.scheduler == "slurm" and not launcher.simulated and shutil.which("srun"):
        return srun(task, command, nodes, cpus=slurm_job_cpus(os.environ))
    if shutil.which("aprun") and not local:
        return aprun(task, command, nodes, env)
    return mpirun(task, command, nodes, env, local=local, flavour=mpirun_flavour(),
                  scratch=launcher.scratch)


def _ranks(task: Task) -> int:
    return task.num_nodes * task.ranks_per_node


def from_template(template: str, task: Task, command: Sequence[str],
                  nodes: Sequence[Node]) -> list[str]:
    """The argv of the ``mpi_command`` setting (see :func:`balsam.config.check_mpi_template`):
    each word formatted alone (a value never splits into more words, nor joins two), the last
    replaced by the command."""
    words = check_mpi_template(template, "mpi_command")
    values = {"ranks": _ranks(task), "num_nodes": task.num_nodes,
              "ranks_per_node": task.ranks_per_node, "threads_per_rank": task.threads_per_rank,
              "threads_per_core": task.threads_per_core, "cpu_affinity": task.cpu_affinity,
              "gpus_per_rank": task.gpus_per_rank,
              "hosts": ",".join(dict.fromkeys(n.name or n.host for n in nodes))}
    try:
        return [w.format(**values) for w in words[:-1]] + list(command)
    except (ValueError, KeyError, IndexError) as exc:
        message = f"mpi_command {template!r} cannot be filled in: {exc}"
        raise InvalidInput(message) from None


def with_flags(argv: Sequence[str], command: Sequence[str], flags: str) -> list[str]:
    """A task's ``mpi_flags`` (split like a shell command line) put before its command at the
    end of the MPI launcher's ``argv``."""
    extra = shlex.split(flags)
    if not extra:
        return list(argv)
    n = len(command)
    if n == 0 or len(argv) <= n or list(argv[-n:]) != list(command):
        message = ("the MPI command line does not end with the task's command: cannot place its "
                   "mpi_flags")
        raise InvalidInput(message)
    return [*argv[:-n], *extra, *argv[-n:]]


_CPU_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def slurm_job_cpus(env: Mapping[str, str]) -> dict[str, int]:
    """The CPUs the Slurm job owns on each of its nodes, from SLURM_JOB_CPUS_PER_NODE (like
    ``2(x3),1``, in node-list order); empty when Slurm does not say."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    counts: list[int] = []
    for part in filter(None, env.get("SLURM_JOB_CPUS_PER_NODE", "").split(",")):
        match = _CPU_COUNT.fullmatch(part.strip())
        if match is None:
            return {}
        counts += [int(match[1])] * int(match[2] or 1)
    try:
        hosts = expand_hostlist(nodelist) if nodelist else []
    except InvalidInput:
        return {}
    return dict(zip(hosts, counts, strict=True)) if len(hosts) == len(counts) else {}


def check_fits(task: Task, names: Sequence[str], cpus: Mapping[str, int]) -> None:
    """Refuse, in one line, a task that needs more CPUs per node than the job owns there (a job
    on shared nodes owns some cores of each node, not the node)."""
    need = task.ranks_per_node * max(1, task.threads_per_rank)
    for name in names:
        owned = cpus.get(name)
        if owned is not None and owned < need:
            message = (f"task {task.id} needs {need} CPUs on each node ({task.ranks_per_node} "
                       f"rank(s) x {max(1, task.threads_per_rank)} thread(s)) but this batch job "
                       f"owns {owned} on {name}: submit it on whole nodes (the default job "
                       f"templates ask for them) or ask for fewer ranks per node")
            raise InvalidInput(message)


def srun(task: Task, command: Sequence[str], nodes: Sequence[Node],
         cpus: Mapping[str, int] | None = None) -> list[str]:
    """srun on exactly the task's nodes; ``cpus`` (CPUs the job owns per node) refuses a task
    that cannot fit instead of letting srun fail with "More processors requested than
    permitted"."""
    names = [n.name or n.host for n in nodes]
    check_fits(task, names, cpus or {})
    args = ["srun", "--nodes", str(len(nodes)), "--ntasks", str(_ranks(task)),
            "--ntasks-per-node", str(task.ranks_per_node),
            "--nodelist", ",".join(names), "--export=ALL"]
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
