"""A node agent's side of the fence: a real agent process, driven by the test as its launcher
would (hello, lease, start), kills its tasks when the launcher stops renewing its lease or
closes the connection."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from balsam_launcher import fence
from balsam_testing import launchers as lt

pytestmark = pytest.mark.slow

#: A task that forks a daemon in its own session; either would append to the file after 30 s.
TASK = "setsid sh -c 'sleep 30; echo daemon >> {out}' & sleep 30; echo task >> {out}"


class FakeLauncher:
    """The launcher's end of one agent's connection."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        self.agent = subprocess.Popen(
            [sys.executable, "-m", "balsam_launcher.agent", "127.0.0.1", str(port), "tok"],
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.server.settimeout(20)
        self.sock, _ = self.server.accept()
        self.sock.settimeout(20)
        self.buffer = b""
        assert self.receive()["op"] == "hello"

    def send(self, **message: object) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return {}
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def start_task(self) -> int:
        """Start TASK; returns its host pid once the agent says it started."""
        self.send(op="start", id=7, argv=["sh", "-c", TASK.format(out=self.tmp / "ran")],
                  cwd=str(self.tmp), env={}, output=str(self.tmp / "task.out"))
        started = self.receive()
        assert started["op"] == "started" and started["id"] == 7
        return int(started["pid"])

    def everything(self) -> set[int]:
        return fence.descendants(self.agent.pid) | {self.agent.pid}

    def close(self) -> None:
        self.sock.close()
        self.server.close()
        if self.agent.poll() is None:
            fence.sweep(self.agent.pid)
            self.agent.kill()
        self.agent.communicate()


@pytest.fixture
def launcher(tmp_path):
    fake = FakeLauncher(tmp_path)
    yield fake
    fake.close()


def test_an_agent_whose_lease_lapses_kills_its_tasks(launcher):
    launcher.send(op="lease", seconds=1.0)
    pid = launcher.start_task()
    # P, C, agent; sh, sleep, daemon
    everything = lt.wait_for_processes(launcher.everything, 3 + 3, "the agent's processes")
    assert pid in everything
    lt.wait_exited(everything, 3, "the agent's processes")
    assert launcher.receive() == {}  # no exit reported for what the fence killed: it hung up
    _, err = launcher.agent.communicate(timeout=10)
    assert launcher.agent.returncode == 1
    assert "the launcher's lease lapsed" in err and "lapsed: killed" in err


def test_a_renewed_lease_keeps_the_tasks_running(launcher):
    launcher.send(op="lease", seconds=1.0)
    pid = launcher.start_task()
    for _ in range(10):
        time.sleep(0.25)
        launcher.send(op="lease", seconds=1.0)
    assert lt.alive(pid)
    launcher.send(op="signal", id=7, sig=15)
    assert launcher.receive() == {"op": "exit", "id": 7, "rc": -15}


def test_an_agent_whose_launcher_hangs_up_kills_its_tasks(launcher):
    launcher.send(op="lease", seconds=60.0)
    launcher.start_task()
    everything = lt.wait_for_processes(launcher.everything, 3 + 3, "the agent's processes")
    launcher.sock.close()
    lt.wait_exited(everything, 3, "the agent's processes")  # its lease had 60 s to run
    assert launcher.agent.wait(timeout=5) == 0
