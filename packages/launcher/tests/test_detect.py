"""Resource detection: Slurm hostlists, PBS node files, Cobalt partitions, simulated nodes."""

from __future__ import annotations

import os
import socket

import pytest

from balsam.errors import InvalidInput
from balsam_launcher.detect import detect, expand_hostlist, expand_ranges, resources


@pytest.mark.parametrize(("text", "hosts"), [
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-03,07],gpu2", ["n01", "n02", "n03", "n07", "gpu2"]),
    ("a[1-2]b[8-9]", ["a1b8", "a1b9", "a2b8", "a2b9"]),
    ("x[9-11]", ["x9", "x10", "x11"]),
    ("n[1-2],n[2-3]", ["n1", "n2", "n3"]),
])
def test_slurm_hostlists_expand_in_order(text, hosts):
    assert expand_hostlist(text) == hosts


@pytest.mark.parametrize("text", ["n[1-3", "n[a-b]", "n[1-]x]"])
def test_malformed_hostlists_are_refused(text):
    with pytest.raises(InvalidInput, match="hostlist"):
        expand_hostlist(text)


def test_slurm_allocation():
    alloc = detect({"SLURM_JOB_NODELIST": "nid[0001-0004]", "PBS_NODEFILE": "/nope"})
    assert alloc.scheduler == "slurm"
    assert alloc.hosts == ("nid0001", "nid0002", "nid0003", "nid0004")


def test_pbs_nodefile_lists_each_host_once(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("h1\nh1\nh2\nh2\nh3\n")
    alloc = detect({"PBS_NODEFILE": str(nodefile)})
    assert (alloc.scheduler, alloc.hosts) == ("pbs", ("h1", "h2", "h3"))


def test_unreadable_pbs_nodefile_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read PBS_NODEFILE"):
        detect({"PBS_NODEFILE": str(tmp_path / "missing")})


def test_cobalt_partition_gives_nids():
    alloc = detect({"COBALT_PARTNAME": "3826-3828,3831"})
    assert alloc.scheduler == "cobalt"
    assert alloc.names == ("3826", "3827", "3828", "3831")
    assert alloc.hosts[0] == "nid03826"
    assert expand_ranges("5") == [5]


def test_local_host_without_scheduler():
    alloc = detect({})
    assert (alloc.scheduler, alloc.hosts) == ("local", (socket.gethostname(),))


def test_nodes_option_simulates_nodes_on_one_host():
    res, alloc = resources("serial", 8, env={})
    assert alloc.scheduler == "local" and res.num_nodes == 8 and res.simulated
    assert {n.host for n in res.nodes} == {socket.gethostname()}
    assert len({n.name for n in res.nodes}) == 8


def test_nodes_option_takes_the_first_nodes_of_an_allocation():
    res, _ = resources("mpi", 2, env={"SLURM_JOB_NODELIST": "n[1-4]"})
    assert [n.host for n in res.nodes] == ["n1", "n2"] and not res.simulated
    full, _ = resources("mpi", None, env={"SLURM_JOB_NODELIST": "n[1-4]"})
    assert full.num_nodes == 4


def test_more_nodes_than_a_multi_node_allocation_is_refused():
    with pytest.raises(InvalidInput, match="more than the 4 nodes"):
        resources("mpi", 5, env={"SLURM_JOB_NODELIST": "n[1-4]"})


def test_invalid_job_mode_is_refused():
    with pytest.raises(InvalidInput, match="invalid job mode 'bogus'"):
        resources("bogus", None, env={})


def test_which_nodes_are_other_machines(monkeypatch):
    from balsam_launcher import detect as d

    table = {"vm": {"127.0.0.1"}, "n2": {"10.0.0.2"}, "alias": {"127.0.1.1"}}
    monkeypatch.setattr(d.socket, "gethostname", lambda: "vm")
    monkeypatch.setattr(d, "host_addresses", lambda host: table.get(host))
    assert d.is_remote("vm") is False and d.is_remote("localhost") is False
    assert d.is_remote("alias") is False  # a loopback name of this host
    assert d.is_remote("n2") is True
    assert d.is_remote("nid00007") is None  # cannot be reached by name


def test_offset_and_limit_share_an_allocation_between_launchers():
    env = {"SLURM_JOB_NODELIST": "n[1-5]"}
    first, _ = resources("serial", env=env, limit=1)
    rest, _ = resources("mpi", env=env, offset=1)
    middle, _ = resources("mpi", env=env, offset=1, limit=2)
    assert [n.host for n in first.nodes] == ["n1"]
    assert [n.host for n in rest.nodes] == ["n2", "n3", "n4", "n5"]
    assert [n.host for n in middle.nodes] == ["n2", "n3"]
    with pytest.raises(InvalidInput, match="--offset-nodes 5 leaves none of the 5 node"):
        resources("mpi", env=env, offset=5)
    with pytest.raises(InvalidInput, match="more than the 2 nodes of this slurm allocation left"):
        resources("mpi", 3, env=env, offset=3)


def test_gpus_and_cpus_of_each_node_and_of_simulated_nodes():
    real, _ = resources("serial", env={"SLURM_JOB_NODELIST": "n[1-2]"}, gpus_per_node=4,
                        cpus_per_node=8)
    assert [(n.gpus, len(n.cpus)) for n in real.nodes] == [((0, 1, 2, 3), 8)] * 2
    sim, _ = resources("serial", 2, env={}, gpus_per_node=4, cpus_per_node=2)
    assert [(n.gpus, n.cpus) for n in sim.nodes] == [((0, 1), (0,)), ((2, 3), (1,))]
    mine, _ = resources("serial", env={})
    assert len(mine.nodes[0].cpus) == len(os.sched_getaffinity(0))
