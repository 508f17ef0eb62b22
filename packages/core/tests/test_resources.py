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
