"""Copy-on-write resources behave exactly like independent deep copies; GPUs and pinned CPUs
are never held by two tasks, and a task that finds no room really has none."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from balsam.models import Task
from balsam.resources import Node, Resources, gpus_needed, split


def deep_copy(res: Resources) -> Resources:
    """The obvious copy: every node rebuilt (the reference the cheap copy must match)."""
    nodes = [Node(n.index, n.host, n.name, n.busy, dict(n.tasks), n.gpus, n.cpus,
                  dict(n.gpu_owner), dict(n.cpu_owner)) for n in res.nodes]
    return Resources(nodes, res.job_mode, res.simulated)


def seen(res: Resources) -> tuple:
    """Everything a policy or the launcher can observe."""
    nodes = [(n.index, n.busy, dict(n.tasks), dict(n.gpu_owner), dict(n.cpu_owner))
             for n in res.nodes]
    placed = {tid: [n.index for n in res.nodes_of(tid)] for tid in sorted(res.running)}
    return nodes, res.idle_nodes, res.free_share, placed


operation = st.one_of(
    st.tuples(st.just("allocate"), st.integers(0, 7), st.integers(1, 12),
              st.integers(1, 3), st.sampled_from([1, 2, 4]), st.integers(0, 2)),
    st.tuples(st.just("release"), st.integers(0, 7), st.integers(1, 12)),
    st.tuples(st.just("copy"), st.integers(0, 7)),
)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["mpi", "serial"]), ops=st.lists(operation, max_size=60))
def test_copies_are_independent_whatever_happens_to_either_side(mode, ops):
    real = [Resources.on_hosts(["a", "b", "c", "d"], mode, gpus_per_node=2, cpus_per_node=2)]
    model = [deep_copy(real[0])]
    for op in ops:
        k = op[1] % len(real)
        if op[0] == "allocate":
            _, _, tid, nodes, packing, gpus = op
            task = Task(id=tid, num_nodes=nodes, node_packing_count=packing, gpus_per_rank=gpus,
                        cpu_affinity="depth" if gpus else "none")
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


# --- GPUs, pinned CPUs and co-scheduled nodes ----------------------------------------------------

task_shape = st.fixed_dictionaries({
    "num_nodes": st.integers(1, 3), "ranks_per_node": st.integers(1, 2),
    "node_packing_count": st.sampled_from([1, 2, 3, 4]), "gpus_per_rank": st.integers(0, 3),
    "threads_per_rank": st.integers(1, 3), "cpu_affinity": st.sampled_from(["none", "depth"]),
    "coschedule_num_nodes": st.integers(0, 2),
})


def check_holdings(res: Resources) -> None:
    """Every device and CPU slot has at most one holder, a running task of that node, and each
    task holds exactly what it asked for on each of its nodes."""
    for n in res.nodes:
        assert set(n.gpu_owner) <= set(n.gpus) and set(n.cpu_owner) <= set(n.cpus)
        assert set(n.gpu_owner.values()) | set(n.cpu_owner.values()) <= set(n.tasks)
        assert n.busy == sum(n.tasks.values()) <= 1
    for tid in res.running:
        task = placed_tasks[id(res)][tid]
        for n in res.nodes_of(tid):
            assert len(n.gpus_of(tid)) == gpus_needed(task)
            assert len(n.cpus_of(tid)) == res.cpus_needed(task, n)


placed_tasks: dict[int, dict[int, Task]] = {}


def room_exists(res: Resources, task: Task) -> bool:
    """The brute-force answer: some node set where the task fits now (its share, its GPUs; CPUs
    never stop it)."""
    share = res.share(task)

    def fits(n: Node) -> bool:
        return n.free >= share and n.free_gpus >= gpus_needed(task)

    if not res.can_ever_run(task):
        return False
    if res.job_mode == "serial":
        return any(fits(n) for n in res.nodes)
    return sum(1 for n in res.nodes if n.idle and fits(n)) >= res.nodes_needed(task)


@settings(max_examples=300, deadline=None)
@given(mode=st.sampled_from(["mpi", "serial"]), gpus=st.integers(0, 4), cpus=st.integers(0, 4),
       simulated=st.booleans(),
       ops=st.lists(st.one_of(st.tuples(st.just("allocate"), task_shape),
                              st.tuples(st.just("release"), st.integers(0, 30))), max_size=50))
def test_no_device_is_held_twice_and_a_task_without_room_has_none(mode, gpus, cpus, simulated,
                                                                  ops):
    hosts = ["h"] * 4 if simulated else ["a", "b", "c", "d"]
    res = Resources.on_hosts(hosts, mode, simulated=simulated, gpus_per_node=gpus,
                             cpus_per_node=cpus)
    if simulated:  # one host's devices shared out: no two simulated nodes have the same
        assert sorted(d for n in res.nodes for d in n.gpus) == list(range(gpus))
        assert sorted(c for n in res.nodes for c in n.cpus) == list(range(cpus))
    placed_tasks[id(res)] = {}
    for i, (op, arg) in enumerate(ops):
        if op == "allocate":
            task = Task(id=i, **arg)
            room = room_exists(res, task)
            got = res.allocate(task)
            assert (got is not None) == room
            if got is not None:
                placed_tasks[id(res)][i] = task
                assert len(got) == res.nodes_needed(task)
        else:
            res.release(arg)
        check_holdings(res)
    del placed_tasks[id(res)]


def test_devices_go_to_one_task_each_and_come_back():
    res = Resources.on_hosts(["a"], "serial", gpus_per_node=4, cpus_per_node=4)
    one = Task(id=1, gpus_per_rank=2, node_packing_count=4, cpu_affinity="depth")
    two = Task(id=2, gpus_per_rank=1, node_packing_count=4, cpu_affinity="depth")
    three = Task(id=3, gpus_per_rank=1, node_packing_count=4, cpu_affinity="depth")
    assert res.allocate(one) and res.allocate(two)
    node = res.nodes[0]
    assert (node.gpus_of(1), node.gpus_of(2), node.cpus_of(1), node.cpus_of(2)) == (
        (0, 1), (2,), (0,), (1,))
    assert res.allocate(Task(id=4, gpus_per_rank=1, node_packing_count=4)).__len__() == 1
    assert node.gpus_of(4) == (3,) and node.cpus_of(4) == ()  # unpinned: no CPU of its own
    assert res.allocate(three) is None  # a quarter of the node is left, but no GPU
    assert res.allocate(Task(id=5, node_packing_count=4, cpu_affinity="depth"))
    assert node.cpus_of(5) == (2,)
    res.release(1)
    assert res.allocate(three) and node.gpus_of(3) == (0,) and node.cpus_of(3) == (0,)
    assert not res.can_ever_run(Task(id=9, gpus_per_rank=5))


def test_a_pinned_task_gets_its_share_of_the_cpus_at_most():
    res = Resources.on_hosts(["h"], "serial", cpus_per_node=4)
    wide = Task(id=1, threads_per_rank=8, cpu_affinity="depth", node_packing_count=2)
    assert res.allocate(wide) and res.nodes[0].cpus_of(1) == (0, 1)  # half the node: 2 CPUs
    alone = Task(id=2, threads_per_rank=8, cpu_affinity="depth")
    assert res.allocate(alone) is None  # the node is half taken
    res.release(1)
    assert res.allocate(alone) and res.nodes[0].cpus_of(2) == (0, 1, 2, 3)  # all it has
    crowd = Resources.on_hosts(["h"], "serial", cpus_per_node=2)
    for i in range(4):  # four on two CPUs: less than a CPU each, so none is pinned
        assert crowd.allocate(Task(id=i, cpu_affinity="depth", node_packing_count=4))
    assert crowd.nodes[0].cpu_owner == {}


def test_simulated_nodes_split_the_host():
    res = Resources.on_hosts(["h", "h"], "serial", simulated=True, gpus_per_node=3,
                             cpus_per_node=2)
    assert [(n.gpus, n.cpus) for n in res.nodes] == [((0, 1), (0,)), ((2,), (1,))]
    assert split(5, 3) == [(0, 1), (2, 3), (4,)] and split(1, 2) == [(0,), ()]


def test_coscheduled_nodes_are_held_beside_the_task_in_mpi_mode():
    res = Resources.on_hosts(["a", "b", "c"], "mpi")
    task = Task(id=1, num_nodes=1, coschedule_num_nodes=2)
    assert [n.index for n in res.allocate(task)] == [0, 1, 2] and res.idle_nodes == 0
    assert not res.can_ever_run(Task(id=2, num_nodes=2, coschedule_num_nodes=2))
    serial = Resources.on_hosts(["a", "b"], "serial")
    assert not serial.can_ever_run(Task(id=3, coschedule_num_nodes=1))
