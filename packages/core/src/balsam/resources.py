"""A launcher's nodes and what runs on them: the free resources a ``select_tasks`` policy sees.

In ``mpi`` mode a task takes ``num_nodes`` whole idle nodes (and ``coschedule_num_nodes`` more
beside them); in ``serial`` mode a single-node task takes ``1/node_packing_count`` of one node,
so up to ``node_packing_count`` tasks share a node.
Devices are held, never shared: a task gets ``gpus_per_rank * ranks_per_node`` GPUs of each of its
nodes to itself and, in serial mode with a ``cpu_affinity`` other than ``none``,
``threads_per_rank`` CPUs of its node to itself. A node's GPUs are device numbers as its tasks see
them; its CPUs are slots, indices into the CPUs the process starting its tasks may use (the
launcher, or a node agent), so several simulated nodes on one host get disjoint slots. A pinned
task gets at most its share of the node's CPUs (as far as the node allows), so CPUs never keep a
task from a node its share fits.
Shares are exact fractions: four quarter-node tasks fill a node, never 0.9999 of it. Placement is
first fit in node order; the nodes with room are kept in a sorted index, so placing a task on a
launcher of thousands of nodes does not scan the busy ones. Every claim plans on copies, so a copy
shares its nodes with the original and each side clones a node only when it first changes it:
copying thousands of nodes costs a list copy, not thousands of objects.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from balsam.models import Task

JOB_MODES = ("mpi", "serial")
ZERO, ONE = Fraction(0), Fraction(1)


@dataclass
class Node:
    """One compute node (or one simulated node on a shared host)."""

    index: int
    host: str
    #: The scheduler's name for the node when it differs from the host name (Cray nid numbers).
    name: str = ""
    busy: Fraction = ZERO
    tasks: dict[int, Fraction] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()
    cpus: tuple[int, ...] = ()
    #: GPU device -> the task holding it; CPU slot -> the task pinned to it.
    gpu_owner: dict[int, int] = field(default_factory=dict)
    cpu_owner: dict[int, int] = field(default_factory=dict)

    @property
    def free(self) -> Fraction:
        return ONE - self.busy

    @property
    def idle(self) -> bool:
        return self.busy == 0

    @property
    def free_gpus(self) -> int:
        return len(self.gpus) - len(self.gpu_owner)

    @property
    def free_cpus(self) -> int:
        return len(self.cpus) - len(self.cpu_owner)

    def gpus_of(self, task_id: int) -> tuple[int, ...]:
        return tuple(d for d in self.gpus if self.gpu_owner.get(d) == task_id)

    def cpus_of(self, task_id: int) -> tuple[int, ...]:
        return tuple(c for c in self.cpus if self.cpu_owner.get(c) == task_id)


def pinned(task: Task) -> bool:
    """Whether a task asks for CPUs of its own (any ``cpu_affinity`` but ``none``)."""
    affinity = task.cpu_affinity
    return affinity != "none" and affinity.strip().lower() not in ("", "none")


def gpus_needed(task: Task) -> int:
    """GPUs a task holds on each of its nodes."""
    return task.gpus_per_rank * task.ranks_per_node


def split(count: int, parts: int) -> list[tuple[int, ...]]:
    """``range(count)`` cut into ``parts`` contiguous runs as even as can be (the CPUs or GPUs of
    one host shared out among simulated nodes; a part may be empty)."""
    base, extra = divmod(count, parts)
    starts = [i * base + min(i, extra) for i in range(parts + 1)]
    return [tuple(range(starts[i], starts[i + 1])) for i in range(parts)]


class Resources:
    """The nodes of one launcher and the share of each that running tasks hold."""

    def __init__(self, nodes: list[Node], job_mode: str = "mpi", simulated: bool = False) -> None:
        self.nodes = nodes
        #: The most GPUs a task could get on one node (claims skip tasks needing more).
        self.max_gpus = max((len(n.gpus) for n in nodes), default=0)
        self.job_mode = job_mode
        #: True when several nodes are simulated on one host (``balsam launcher --nodes N``).
        self.simulated = simulated
        self._open = [n.index for n in nodes if n.busy < 1]  # nodes with room, sorted
        self._idle = sum(1 for n in nodes if n.idle)
        self._free = sum((n.free for n in nodes), ZERO)
        self._where: dict[int, list[int]] = {}  # task id -> indices of its nodes
        for n in nodes:
            for tid in n.tasks:
                self._where.setdefault(tid, []).append(n.index)
        #: Indices of the nodes only this object refers to; None: all of them (never copied).
        self._mine: set[int] | None = None

    @classmethod
    def on_hosts(cls, hosts: Sequence[str], job_mode: str = "mpi", *,
                 names: Sequence[str] = (), simulated: bool = False, gpus_per_node: int = 0,
                 cpus_per_node: int = 0) -> Resources:
        """Nodes on ``hosts``, each with ``gpus_per_node`` GPUs and ``cpus_per_node`` CPU slots;
        ``simulated`` nodes share one host, so they share out its GPUs and CPUs."""
        parts = len(hosts) if simulated else 1
        gpus = split(gpus_per_node, parts) if parts else []
        cpus = split(cpus_per_node, parts) if parts else []
        nodes = [Node(i, h, names[i] if i < len(names) else h,
                      gpus=gpus[i % parts], cpus=cpus[i % parts]) for i, h in enumerate(hosts)]
        return cls(nodes, job_mode, simulated)

    def __repr__(self) -> str:
        return (f"Resources({self.num_nodes} nodes, {self.job_mode}, idle={self._idle}, "
                f"free={float(self._free):g})")

    # --- reading -------------------------------------------------------------------------------

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def idle_nodes(self) -> int:
        return self._idle

    @property
    def free_share(self) -> Fraction:
        """Free node-equivalents (an idle node counts 1, a half-used node 1/2)."""
        return self._free

    @property
    def running(self) -> set[int]:
        return set(self._where)


    def share(self, task: Task) -> Fraction:
        """The fraction of each of its nodes a task occupies."""
        if self.job_mode == "serial":
            return Fraction(1, max(1, task.node_packing_count))
        return ONE

    def nodes_needed(self, task: Task) -> int:
        if self.job_mode == "serial":
            return 1
        return task.num_nodes + task.coschedule_num_nodes

    def cpus_needed(self, task: Task, node: Node) -> int:
        """CPU slots a task holds on ``node``: in serial mode, if it is pinned,
        ``threads_per_rank`` of them, at most its share of the node's (``1/node_packing_count``
        of them, rounded down; none, so unpinned, when that is less than one). Tasks that fit a
        node's share fit its CPUs: pinning never keeps a task from running."""
        if self.job_mode != "serial" or not pinned(task):
            return 0
        share = len(node.cpus) // max(1, task.node_packing_count)
        return min(max(1, task.threads_per_rank), share)

    def can_ever_run(self, task: Task) -> bool:
        """Whether the task fits these nodes when they are all idle."""
        if task.gpus_per_rank and gpus_needed(task) > self.max_gpus:
            return False
        if self.job_mode == "serial":
            return (task.num_nodes == 1 and task.ranks_per_node == 1
                    and task.coschedule_num_nodes == 0)
        return self.nodes_needed(task) <= self.num_nodes

    def _room(self, node: Node, task: Task, share: Fraction) -> bool:
        if node.free < share:
            return False
        return not task.gpus_per_rank or node.free_gpus >= gpus_needed(task)

    def find(self, task: Task) -> list[Node] | None:
        """Nodes the task would get now (first fit), or None if it does not fit."""
        if not self.can_ever_run(task):
            return None
        if self.job_mode == "serial":
            share = self.share(task)
            for i in self._open:
                if self._room(self.nodes[i], task, share):
                    return [self.nodes[i]]
            return None
        wanted = self.nodes_needed(task)
        if self._idle < wanted:
            return None
        gpus = gpus_needed(task)
        found = []
        for i in self._open:
            node = self.nodes[i]
            if node.idle and (not gpus or node.free_gpus >= gpus):
                found.append(node)
                if len(found) == wanted:
                    return found
        return None

    def nodes_of(self, task_id: int) -> list[Node]:
        return [self.nodes[i] for i in self._where.get(task_id, ())]

    # --- changing ------------------------------------------------------------------------------

    def allocate(self, task: Task, on: Sequence[int] | None = None) -> list[Node] | None:
        """Give the task its nodes now: the first that fit, or exactly the nodes ``on`` (a
        placement planned on a copy); None (and no change) if it does not fit."""
        nodes = self.find(task) if on is None else self._fit(task, on)
        if nodes is None or task.id is None or task.id in self._where:
            return None
        share = self.share(task)
        gpus = gpus_needed(task) if task.gpus_per_rank else 0
        nodes = [self._writable(n.index) for n in nodes]
        for n in nodes:
            cpus = self.cpus_needed(task, n)
            self._idle -= n.idle
            n.busy += share
            n.tasks[task.id] = share
            if gpus:
                for d in [d for d in n.gpus if d not in n.gpu_owner][:gpus]:
                    n.gpu_owner[d] = task.id
            if cpus:
                for c in [c for c in n.cpus if c not in n.cpu_owner][:cpus]:
                    n.cpu_owner[c] = task.id
            self._free -= share
            if n.busy >= 1:
                del self._open[bisect.bisect_left(self._open, n.index)]
        self._where[task.id] = [n.index for n in nodes]
        return nodes

    def _fit(self, task: Task, on: Sequence[int]) -> list[Node] | None:
        wanted = self.nodes_needed(task)
        if not self.can_ever_run(task) or len(on) != wanted or len(set(on)) != len(on):
            return None
        share = self.share(task)
        nodes = [self.nodes[i] for i in on]
        return nodes if all(self._room(n, task, share) for n in nodes) else None

    def release(self, task_id: int) -> None:
        """Free whatever the task holds (nothing if it holds nothing)."""
        for i in self._where.pop(task_id, ()):
            n = self._writable(i)
            share = n.tasks.pop(task_id)
            for owner in (n.gpu_owner, n.cpu_owner):
                if owner:
                    for d in [d for d, t in owner.items() if t == task_id]:
                        del owner[d]
            if n.busy >= 1:
                bisect.insort(self._open, n.index)
            n.busy -= share
            self._free += share
            self._idle += n.idle

    def copy(self) -> Resources:
        """An independent copy a policy may allocate on freely (copy-on-write: both sides now
        share every node and clone one before changing it)."""
        other = Resources.__new__(Resources)
        other.nodes, other.job_mode, other.simulated = list(self.nodes), self.job_mode, \
            self.simulated
        other.max_gpus = self.max_gpus
        other._open, other._idle, other._free = list(self._open), self._idle, self._free
        other._where = dict(self._where)  # its lists are replaced, never changed in place
        other._mine = set()
        self._mine = set()
        return other

    def _writable(self, index: int) -> Node:
        """The node at ``index``, cloned first if another Resources may still refer to it."""
        node = self.nodes[index]
        if self._mine is not None and index not in self._mine:
            node = self.nodes[index] = replace(node, tasks=dict(node.tasks),
                                               gpu_owner=dict(node.gpu_owner),
                                               cpu_owner=dict(node.cpu_owner))
            self._mine.add(index)
        return node

    def pack(self, tasks: Iterable[Task]) -> list[tuple[Task, list[Node]]]:
        """Place tasks in the given order on these resources, skipping those that do not fit.

        Changes ``self``: call it on a :meth:`copy` to plan without committing.
        """
        placed = []
        for task in tasks:
            nodes = self.allocate(task)
            if nodes is not None:
                placed.append((task, nodes))
        return placed
