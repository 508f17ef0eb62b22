"""A launcher's nodes and what runs on them: the free resources a ``select_tasks`` policy sees.

In ``mpi`` mode a task takes ``num_nodes`` whole idle nodes; in ``serial`` mode a single-node task
takes ``1/node_packing_count`` of one node, so up to ``node_packing_count`` tasks share a node.
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

    @property
    def free(self) -> Fraction:
        return ONE - self.busy

    @property
    def idle(self) -> bool:
        return self.busy == 0


class Resources:
    """The nodes of one launcher and the share of each that running tasks hold."""

    def __init__(self, nodes: list[Node], job_mode: str = "mpi", simulated: bool = False) -> None:
        self.nodes = nodes
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
                 names: Sequence[str] = (), simulated: bool = False) -> Resources:
        nodes = [Node(i, h, names[i] if i < len(names) else h) for i, h in enumerate(hosts)]
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

    def can_ever_run(self, task: Task) -> bool:
        """Whether the task fits these nodes when they are all idle."""
        if self.job_mode == "serial":
            return task.num_nodes == 1 and task.ranks_per_node == 1
        return task.num_nodes <= self.num_nodes

    def find(self, task: Task) -> list[Node] | None:
        """Nodes the task would get now (first fit), or None if it does not fit."""
        if not self.can_ever_run(task):
            return None
        if self.job_mode == "serial":
            share = self.share(task)
            for i in self._open:
                if self.nodes[i].free >= share:
                    return [self.nodes[i]]
            return None
        if self._idle < task.num_nodes:
            return None
        idle = (self.nodes[i] for i in self._open if self.nodes[i].idle)
        return [next(idle) for _ in range(task.num_nodes)]

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
        nodes = [self._writable(n.index) for n in nodes]
        for n in nodes:
            self._idle -= n.idle
            n.busy += share
            n.tasks[task.id] = share
            self._free -= share
            if n.busy >= 1:
                del self._open[bisect.bisect_left(self._open, n.index)]
        self._where[task.id] = [n.index for n in nodes]
        return nodes

    def _fit(self, task: Task, on: Sequence[int]) -> list[Node] | None:
        wanted = task.num_nodes if self.job_mode == "mpi" else 1
        if not self.can_ever_run(task) or len(on) != wanted or len(set(on)) != len(on):
            return None
        share = self.share(task)
        nodes = [self.nodes[i] for i in on]
        return nodes if all(n.free >= share for n in nodes) else None

    def release(self, task_id: int) -> None:
        """Free whatever the task holds (nothing if it holds nothing)."""
        for i in self._where.pop(task_id, ()):
            n = self._writable(i)
            share = n.tasks.pop(task_id)
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
        other._open, other._idle, other._free = list(self._open), self._idle, self._free
        other._where = dict(self._where)  # its lists are replaced, never changed in place
        other._mine = set()
        self._mine = set()
        return other

    def _writable(self, index: int) -> Node:
        """The node at ``index``, cloned first if another Resources may still refer to it."""
        node = self.nodes[index]
        if self._mine is not None and index not in self._mine:
            node = self.nodes[index] = replace(node, tasks=dict(node.tasks))
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
