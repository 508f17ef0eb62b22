"""Which nodes a launcher has: from the batch scheduler's environment, or the local host."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import InvalidInput
from balsam.resources import JOB_MODES, Resources


@dataclass(frozen=True)
class Allocation:
    """The nodes of the current batch job (or of the local host)."""

    scheduler: str
    hosts: tuple[str, ...]
    #: The scheduler's names for the nodes when they differ from host names (Cobalt nids).
    names: tuple[str, ...] = ()


def detect(env: Mapping[str, str] | None = None) -> Allocation:
    """Slurm (SLURM_JOB_NODELIST), PBS (PBS_NODEFILE), Cobalt (COBALT_PARTNAME), else local."""
    env = os.environ if env is None else env
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodelist:
        return Allocation("slurm", tuple(expand_hostlist(nodelist)))
    if env.get("PBS_NODEFILE"):
        return Allocation("pbs", tuple(read_nodefile(Path(env["PBS_NODEFILE"]))))
    if env.get("COBALT_PARTNAME"):
        nids = expand_ranges(env["COBALT_PARTNAME"])
        return Allocation("cobalt", tuple(f"nid{n:05d}" for n in nids),
                          tuple(str(n) for n in nids))
    return Allocation("local", (socket.gethostname(),))


def resources(job_mode: str, nodes: int | None = None, env: Mapping[str, str] | None = None, *,
              offset: int = 0, limit: int | None = None, gpus_per_node: int = 0,
              cpus_per_node: int | None = None) -> tuple[Resources, Allocation]:
    """The launcher's nodes: the allocation's nodes from ``offset`` on, at most ``limit`` of them
    (legacy ``--offset-nodes``/``--limit-nodes``: several launchers share one job), then their
    first ``nodes``, or ``nodes`` simulated nodes when that leaves a single host (one machine
    acting as N nodes). Each node has ``gpus_per_node`` GPUs and ``cpus_per_node`` CPUs (default:
    those this process may use), which simulated nodes share out."""
    if job_mode not in JOB_MODES:
        message = f"invalid job mode {job_mode!r}; expected one of: {', '.join(JOB_MODES)}"
        raise InvalidInput(message)
    alloc = detect(env)
    if not alloc.hosts:
        message = f"the {alloc.scheduler} allocation lists no nodes"
        raise InvalidInput(message)
    hosts, names = alloc.hosts[offset:], alloc.names[offset:]
    if limit is not None:
        hosts, names = hosts[:limit], names[:limit]
    if not hosts:
        message = (f"--offset-nodes {offset} leaves none of the {len(alloc.hosts)} node(s) of this "
                   f"{alloc.scheduler} allocation")
        raise InvalidInput(message)
    count = len(hosts) if nodes is None else nodes
    if count < 1:
        message = f"--nodes must be at least 1, got {count}"
        raise InvalidInput(message)
    cpus = len(os.sched_getaffinity(0)) if cpus_per_node is None else cpus_per_node
    if count <= len(hosts):
        res = Resources.on_hosts(hosts[:count], job_mode, names=names[:count],
                                 gpus_per_node=gpus_per_node, cpus_per_node=cpus)
        return res, alloc
    if len(hosts) == 1:
        host = hosts[0]
        simulated = [f"{host}:{i}" for i in range(count)]
        return Resources.on_hosts([host] * count, job_mode, names=simulated, simulated=True,
                                  gpus_per_node=gpus_per_node, cpus_per_node=cpus), alloc
    left = " left to it" if len(hosts) < len(alloc.hosts) else ""
    message = f"--nodes {count} is more than the {len(hosts)} nodes of this {alloc.scheduler} " \
              f"allocation{left}"
    raise InvalidInput(message)


def host_addresses(host: str) -> set[str] | None:
    """The addresses a host name resolves to, or None if it does not resolve."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return None


def is_remote(host: str) -> bool | None:
    """Whether a node is another machine: False for this host (its names, loopback or its own
    addresses), True for a host name that resolves elsewhere, None if the name does not resolve
    (such a node cannot be reached by name at all)."""
    here = socket.gethostname()
    if host in ("localhost", here, socket.getfqdn()):
        return False
    addresses = host_addresses(host)
    if addresses is None:
        return None
    mine = (host_addresses(here) or set()) | {"127.0.0.1", "::1"}
    return not (addresses <= mine or all(a.startswith("127.") for a in addresses))


def expand_hostlist(text: str) -> list[str]:
    """Expand a Slurm hostlist (``n[01-03,7],gpu2`` -> n01 n02 n03 n7 gpu2), keeping order and
    each host once, with python-hostlist (the parser Slurm sites use for their own tools)."""
    import hostlist

    try:
        return list(dict.fromkeys(hostlist.expand_hostlist(text.strip())))
    except hostlist.BadHostlist as exc:
        message = f"malformed hostlist {text!r}: {exc}"
        raise InvalidInput(message) from None


def expand_ranges(text: str) -> list[int]:
    """Expand ``1-3,7`` (Cobalt's COBALT_PARTNAME) into node numbers."""
    numbers: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            message = f"malformed node range {part!r} in {text!r}"
            raise InvalidInput(message)
        numbers.extend(range(int(lo), int(hi or lo) + 1))
    return numbers


def read_nodefile(path: Path) -> list[str]:
    """Unique host names of a PBS node file (it lists a host once per core), in order."""
    try:
        lines = path.read_text().split()
    except OSError as exc:
        message = f"cannot read PBS_NODEFILE {path}: {exc.strerror}"
        raise InvalidInput(message) from None
    return list(dict.fromkeys(ln.strip() for ln in lines if ln.strip()))
