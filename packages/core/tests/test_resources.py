"""Copy-on-write resources behave exactly like independent deep copies."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from balsam.models import Task
from balsam.resources import Node, Resources


def deep_copy(res: Resources) -> Resources:
    """The obvious copy: every node rebuilt (the reference the cheap copy must match)."""
    nodes = [Node(n.index, n.host, n.name, n.busy, dict(n.tasks)) for n in res.nodes]
    return Resources(nodes, res.job_mode, res.simulated)


def seen(res: Resources) -> tuple:
    """Everything a policy or the launcher can observe."""
    nodes = [(n.index, n.busy, dict(n.tasks)) for n in res.nodes]
    placed = {tid: [n.index for n in res.nodes_of(tid)] for tid in sorted(res.running)}
    return nodes, res.idle_nodes, res.free_share, placed


operation = st.one_of(
    st.tuples(st.just("allocate"), st.integers(0, 7), st.integers(1, 12),
              st.integers(1, 3), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("release"), st.integers(0, 7), st.integers(1, 12)),
    st.tuples(st.just("copy"), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["mpi", "serial"]), ops=st.lists(operation, max_size=60))
def test_copies_are_independent_whatever_happens_to_either_side(mode, ops):
    real = [Resources.on_hosts(["a", "b", "c", "d"], mode)]
    model = [deep_copy(real[0])]
    for op in ops:
        k = op[1] % len(real)
        if op[0] == "allocate":
            _, _, tid, nodes, packing = op
            task = Task(id=tid, num_nodes=nodes, node_packing_count=packing)
            got, want = real[k].allocate(task), model[k].allocate(task)
            assert (got and [n.index for n in got]) == (want and [n.index for n in want])
        elif op[0] == "release":
            real[k].release(op[2])
            model[k].release(op[2])
        else:
            real.append(real[k].copy())
            model.append(deep_copy(model[k]))
        for r, m in zip(real, model, strict=True):
            assert seen(r) == seen(m)


def test_a_copy_clones_only_the_nodes_it_changes():
    res = Resources.on_hosts([f"h{i}" for i in range(1000)], "mpi")
    scratch = res.copy()
    scratch.allocate(Task(id=1, num_nodes=2))
    assert sum(a is not b for a, b in zip(res.nodes, scratch.nodes, strict=True)) == 2
    assert res.idle_nodes == 1000 and scratch.idle_nodes == 998



def test_a_placement_planned_on_a_copy_is_replayed_exactly():
    real = Resources.on_hosts(["a", "b", "c"], "serial")
    t1, t2 = Task(id=1, node_packing_count=2), Task(id=2, node_packing_count=2)
    assert [n.index for n in real.allocate(t1, on=[2])] == [2]
    assert real.allocate(t2, on=[0, 1]) is None  # a serial task takes one node
    assert [n.index for n in real.allocate(t2, on=[2])] == [2]  # two halves
    assert real.allocate(Task(id=5), on=[2]) is None and real.free_share == 2
    mpi = Resources.on_hosts(["a", "b", "c"], "mpi")
    big = Task(id=3, num_nodes=2)
    assert mpi.allocate(big, on=[0, 0]) is None and mpi.allocate(big, on=[1]) is None
    assert [n.index for n in mpi.allocate(big, on=[2, 0])] == [2, 0]
    assert mpi.allocate(Task(id=4), on=[0]) is None and mpi.idle_nodes == 1
