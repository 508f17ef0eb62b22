"""The default task-selection policy: largest first, then longest, packed into the free nodes."""

from __future__ import annotations

from collections.abc import Sequence

from balsam.models import Task
from balsam.resources import Resources


def priority(task: Task) -> tuple[int, int, int]:
    """Sort key: most nodes first, then longest wall time, then oldest."""
    return (-task.num_nodes, -task.wall_time_minutes, task.id or 0)


def largest_first(candidates: Sequence[Task], resources: Resources) -> list[Task]:
    """The candidates that fit the free nodes when placed in :func:`priority` order.

    Big tasks go first so that they are not starved by a stream of small ones; small tasks fill
    the nodes left over. ``resources`` is a copy: packing on it changes nothing else.
    """
    return [task for task, _ in resources.pack(sorted(candidates, key=priority))]
