"""The namespace cluster itself: separate hosts on one machine, and the faults the fault tests
inject (a node losing power, a pulled cable) behaving like a real node's."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.multiuser]

#: Prints the host's view of itself: name, address, default routes, processes, /tmp and /home.
WHOAMI = """
echo "$(hostname) $(hostname -i) routes=$(ip route | grep -c default) pid1=$(cat /proc/1/comm)"
echo "procs=$(ls /proc | grep -c '^[0-9]')"
touch "/tmp/seen-$(hostname)" && ls /tmp | grep -c '^seen-'
test -d /home/bob && echo home
"""

REACH = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("reached")
except OSError as exc:
    print(type(exc).__name__)
"""


def test_every_node_is_a_host_of_its_own(cluster):
    for node in cluster.nodes:
        first, procs, tmp, home = cluster.run(node, ["sh", "-c", WHOAMI]).stdout.splitlines()
        assert first == f"{node} {cluster.address(node)} routes=0 pid1=python3"
        assert int(procs.split("=")[1]) < 30  # its own processes only, not the machine's
        assert (tmp, home) == ("1", "home")  # a node-local /tmp; /home is shared
    hosts = cluster.run("login", ["srun", "-N", str(len(cluster.compute)), "hostname"],
                         user="bob").stdout.split()
    assert sorted(hosts) == sorted(cluster.compute)


def test_a_killed_node_loses_every_process_then_boots_again(healed):
    cluster = healed
    private = Path(tempfile.mkdtemp(dir="/var/tmp"))
    (private / "secret").touch()
    try:
        cluster.hide(private)  # the login node's: compute nodes see it empty
        sleeper = cluster.start("node3", ["sleep", "600"], user="bob")
        assert len(cluster.pids("node3")) >= 4  # init, munged, slurmd, the sleep
        cluster.kill("node3")
        assert cluster.pids("node3") == []
        assert sleeper.wait(timeout=10) != 0
        cluster.boot("node3")
        assert cluster.run("node3", ["hostname"]).stdout.strip() == "node3"
        slurmd = cluster.run("node3", ["pgrep", "-x", "slurmd"]).stdout.split()
        assert len(slurmd) == 1
        for node, seen in (("node3", ""), ("node1", ""), ("login", "secret")):
            assert cluster.run(node, ["ls", str(private)]).stdout.strip() == seen
    finally:
        shutil.rmtree(private)


def test_an_unplugged_node_is_unreachable_until_plugged_back(healed):
    cluster = healed
    probe = ["python3", "-c", REACH, cluster.address("node2"), "6828"]  # slurmd's port
    assert cluster.run("login", probe).stdout.strip() == "reached"
    cluster.link_down("node2")
    assert cluster.run("login", probe).stdout.strip() in ("TimeoutError", "OSError")
    assert cluster.run("node2", ["hostname"]).stdout.strip() == "node2"  # still alive
    cluster.link_up("node2")
    assert cluster.run("login", probe).stdout.strip() == "reached"
