"""Serial mode on other nodes: one agent per node, all started by a single MPI launch, runs the
tasks the launcher sends it. No mpirun per task, and the node's processes are its own children.
Each agent is fenced like a launcher (balsam_launcher.fence): its tasks die with it.

The agents connect back to the launcher over TCP (the launcher's address, a port, and a one-time
token on their command line) and speak newline-delimited JSON: the launcher sends ``start``
(argv, cwd, env, output file), ``signal`` and ``lease`` (with each heartbeat: how many seconds
the launcher's lease still runs); an agent answers ``started`` and ``exit``. When the launcher
goes away or stops renewing the lease, each agent kills what it started and exits.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balsam.errors import BalsamError
from balsam.models import Task
from balsam.resources import Node
from balsam_launcher import fence, lease
from balsam_launcher.process import spawn
from balsam_launcher.steps import kill_group

#: Environment variables MPI launchers set to a process's rank (Open MPI, MPICH/PMI, Slurm, ALPS).
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "ALPS_APP_PE")


def rank_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    for name in RANK_VARIABLES:
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


class Lines:
    """Split a byte stream into JSON messages."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


# --- the agent (runs on a compute node) ----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m balsam_launcher.agent HOST PORT TOKEN``.

    The agent runs behind its own fence (see balsam_launcher.fence): its tasks die with it. It
    kills them and exits when the launcher's connection closes or when the launcher stops
    renewing its lease (the ``lease`` message, sent with each heartbeat, says for how long).
    """
    host, port, token = (argv if argv is not None else sys.argv[1:])[:3]
    return fence.run(lambda: _serve(host, int(port), token), lease_timeout=None, name="agent")


def _serve(host: str, port: int, token: str) -> int:
    """The agent's loop, behind its fence."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    sock = socket.create_connection((host, port), timeout=60)
    sock.settimeout(None)
    send(sock, {"op": "hello", "token": token, "host": socket.gethostname(),
                "rank": rank_from_env()})
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, None)
    selector.register(wake_r, selectors.EVENT_READ, "wake")
    children: dict[int, Any] = {}
    lines = Lines()
    try:
        while True:
            for key, _ in selector.select():
                if key.data == "wake":
                    os.read(wake_r, 4096)
                elif key.data is None:
                    data = sock.recv(65536)
                    if not data:
                        return 0  # the launcher is gone
                    for msg in lines.feed(data):
                        _handle(msg, sock, selector, children)
                else:
                    run = children.pop(key.data)
                    selector.unregister(run.pidfd)
                    rc = run.popen.wait()
                    run.close()
                    if lease.expired():
                        break  # the fence killed it, not its own end: say nothing
                    send(sock, {"op": "exit", "id": run.task_id, "rc": rc})
            if lease.lapsed() or lease.expired():
                print(f"balsam agent on {socket.gethostname()}: the launcher's lease lapsed",
                      file=sys.stderr)
                return 1
    finally:
        for run in children.values():
            kill_group(run.pid, signal.SIGKILL)
            run.popen.wait()


def _handle(msg: dict[str, Any], sock: socket.socket, selector: selectors.BaseSelector,
            children: dict[int, Any]) -> None:
    tid = msg.get("id")
    if msg["op"] == "lease":
        lease.extend(float(msg["seconds"]))
    elif msg["op"] == "start":
        try:
            run = spawn(tid, msg["argv"], cwd=Path(msg["cwd"]), env={**os.environ, **msg["env"]},
                        output=Path(msg["output"]))
        except OSError as exc:
            send(sock, {"op": "exit", "id": tid, "rc": 127,
                        "error": f"{exc.strerror}: {exc.filename}"})
            return
        children[tid] = run
        selector.register(run.pidfd, selectors.EVENT_READ, tid)
        send(sock, {"op": "started", "id": tid, "pid": fence.host_pid_for(run.pid, run.pidfd)})
    elif msg["op"] == "signal" and tid in children:
        kill_group(children[tid].pid, msg["sig"])


# --- the launcher's side -------------------------------------------------------------------------


@dataclass
class AgentRun:
    """A task running under an agent; quacks like :class:`balsam_launcher.process.Run`."""

    task_id: int
    agent: Agent
    output: Path
    started: float = field(default_factory=time.monotonic)
    pid: int = 0
    pidfd: int | None = None
    remote: bool = True
    returncode: int | None = None
    error: str = ""
    stopping: str | None = None
    kill_at: float | None = None

    def poll(self) -> int | None:
        return self.returncode

    def stop(self, reason: str, grace: float) -> None:
        if self.stopping is None:
            self.stopping = reason
            self.kill_at = time.monotonic() + grace
            self.agent.signal(self.task_id, signal.SIGTERM)

    def tick(self, now: float) -> None:
        if self.kill_at is not None and now >= self.kill_at:
            self.agent.signal(self.task_id, signal.SIGKILL)
            self.kill_at = None

    def close(self) -> None:
        pass


@dataclass
class Agent:
    """The launcher's connection to the agent of one node."""

    node: int
    host: str
    sock: socket.socket
    lines: Lines = field(default_factory=Lines)

    def signal(self, task_id: int, sig: int) -> None:
        try:
            send(self.sock, {"op": "signal", "id": task_id, "sig": int(sig)})
        except OSError:
            pass


class AgentPool:
    """Starts one agent per node with one MPI launch and routes tasks to them."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.server = socket.create_server(("", 0))
        self.token = secrets.token_hex(16)
        self.agents: dict[int, Agent] = {}  # by rank
        self.served = {n.index for n in nodes}
        self.runs: dict[int, AgentRun] = {}
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        address = socket.gethostname()
        port = self.server.getsockname()[1]
        return [sys.executable, "-m", "balsam_launcher.agent", address, str(port), self.token]

    def launch(self, mpi_command: Callable[..., list[str]], info: dict[str, Any],
               output: Path, timeout: float = 120) -> None:
        """Start the agents (one rank per node) and wait until each has connected."""
        task = Task(id=0, name="agents", num_nodes=len(self.nodes), ranks_per_node=1)
        argv = mpi_command(task=task, command=self.command(), nodes=self.nodes, env={},
                           launcher=info)
        env = dict(os.environ)
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        with open(output, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env,
                                            process_group=0)
        self.server.settimeout(1)
        deadline = time.monotonic() + timeout
        while len(self.agents) < len(self.nodes):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                message = (f"{len(self.agents)} of {len(self.nodes)} node agents started "
                           f"(see {output})")
                raise BalsamError(message)
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self._greet(conn)

    def _greet(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        lines = Lines()
        messages: list[dict[str, Any]] = []
        try:
            while not messages:
                data = conn.recv(4096)
                if not data:
                    break
                messages = lines.feed(data)
        except (OSError, ValueError):
            messages = []
        hello = messages[0] if messages else {}
        rank = hello.get("rank")
        if hello.get("token") != self.token or not isinstance(rank, int) \
                or not 0 <= rank < len(self.nodes) or rank in self.agents:
            conn.close()
            return
        conn.settimeout(None)
        self.agents[rank] = Agent(self.nodes[rank].index, hello.get("host", ""), conn, lines)

    def renew(self, seconds: float) -> None:
        """Each agent kills its tasks unless renewed within ``seconds`` (see lease.extend)."""
        for agent in self.agents.values():
            try:
                send(agent.sock, {"op": "lease", "seconds": seconds})
            except OSError:
                pass

    def sockets(self) -> list[tuple[socket.socket, Agent]]:
        return [(a.sock, a) for a in self.agents.values()]

    def start(self, task_id: int, node: Node, argv: list[str], cwd: Path, env: dict[str, str],
              output: Path) -> AgentRun:
        agent = next(a for a in self.agents.values() if a.node == node.index)
        run = AgentRun(task_id, agent, output)
        self.runs[task_id] = run
        send(agent.sock, {"op": "start", "id": task_id, "argv": argv, "cwd": str(cwd),
                          "env": env, "output": str(output)})
        return run

    def receive(self, agent: Agent) -> list[int]:
        """Read an agent's messages; returns the ids of tasks that ended."""
        try:
            data = agent.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            message = f"the agent of node {agent.node} ({agent.host}) went away"
            raise BalsamError(message)
        ended = []
        for msg in agent.lines.feed(data):
            run = self.runs.get(msg["id"])
            if run is None:
                continue
            if msg["op"] == "started":
                run.pid = msg["pid"]
            elif msg["op"] == "exit":
                run.returncode, run.error = msg["rc"], msg.get("error", "")
                del self.runs[msg["id"]]
                ended.append(msg["id"])
        return ended

    def close(self) -> None:
        for agent in self.agents.values():
            agent.sock.close()
        self.server.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_group(self.process.pid, signal.SIGKILL)
                self.process.wait()


if __name__ == "__main__":
    sys.exit(main())
