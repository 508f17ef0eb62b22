"""Free nodes (balsam.resources) and the default policy: largest first, packed first-fit."""

from __future__ import annotations

from fractions import Fraction

from balsam.models import Task
from balsam.resources import Resources
from balsam_launcher.policy import largest_first


def task(tid: int, nodes: int = 1, wall: int = 1, packing: int = 1, ranks: int = 1) -> Task:
    return Task(id=tid, num_nodes=nodes, wall_time_minutes=wall, node_packing_count=packing,
                ranks_per_node=ranks)


def test_mpi_tasks_take_whole_idle_nodes_first_fit():
    res = Resources.on_hosts([f"h{i}" for i in range(4)], "mpi")
    assert [n.index for n in res.allocate(task(1, nodes=2))] == [0, 1]
    assert res.allocate(task(2, nodes=3)) is None
    assert [n.index for n in res.allocate(task(3, nodes=2))] == [2, 3]
    assert res.idle_nodes == 0
    res.release(1)
    assert res.idle_nodes == 2 and res.running == {3}
    assert [n.index for n in res.allocate(task(4))] == [0]


def test_serial_tasks_pack_node_packing_count_per_node():
    res = Resources.on_hosts(["a", "b"], "serial")
    placed = res.pack([task(i, packing=4) for i in range(1, 10)])
    assert [ns[0].index for _, ns in placed] == [0] * 4 + [1] * 4
    assert res.free_share == 0
    res.release(2)
    assert res.free_share == Fraction(1, 4)
    assert res.allocate(task(20, packing=2)) is None
    assert res.allocate(task(21, packing=4))[0].index == 0


def test_serial_mode_refuses_multi_node_and_multi_rank_tasks():
    res = Resources.on_hosts(["a"], "serial")
    assert res.allocate(task(1, nodes=2)) is None
    assert res.allocate(task(2, ranks=4)) is None
    assert res.idle_nodes == 1


def test_a_task_is_placed_once():
    res = Resources.on_hosts(["a", "b"], "mpi")
    assert res.allocate(task(1)) is not None
    assert res.allocate(task(1)) is None
    assert res.idle_nodes == 1


def test_copy_is_independent():
    res = Resources.on_hosts(["a", "b"], "mpi")
    res.allocate(task(1))
    scratch = res.copy()
    scratch.allocate(task(2))
    assert scratch.idle_nodes == 0 and res.idle_nodes == 1 and res.running == {1}


def test_default_policy_largest_then_longest_packed():
    res = Resources.on_hosts([f"h{i}" for i in range(5)], "mpi")
    candidates = [task(1, nodes=1, wall=5), task(2, nodes=4, wall=1), task(3, nodes=2, wall=9),
                  task(4, nodes=1, wall=30), task(5, nodes=3, wall=2)]
    chosen = largest_first(candidates, res.copy())
    # 4 nodes first, then nothing else fits but a 1-node task: the longest one.
    assert [t.id for t in chosen] == [2, 4]
    assert res.idle_nodes == 5  # the policy planned on a copy


def test_default_policy_fills_serial_nodes():
    res = Resources.on_hosts(["a"], "serial")
    candidates = [task(i, packing=2, wall=i) for i in range(1, 5)]
    assert [t.id for t in largest_first(candidates, res.copy())] == [4, 3]
