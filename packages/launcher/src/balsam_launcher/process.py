"""Task processes: the launcher's runs, local or on node agents, behind one protocol.

:class:`Processes` keeps every run the launcher started: :meth:`~Processes.start` one (here, in
the task's directory as the launcher opened it, or through the agent of a remote node),
:meth:`~Processes.stop` one (SIGTERM to its process group, SIGKILL after a grace period), and
learn of exits from the loop's selector (a pidfd per local process, a socket per agent):
:meth:`~Processes.ready` and :meth:`~Processes.due` return :class:`Exit` values.

Every program the launcher starts is resolved with the launcher's own PATH (:func:`program`),
never with the task's: a task's ``PATH`` applies to what the task itself runs.

The wire protocol of node agents (newline-delimited JSON) is here too; the agent itself, on the
node, is :mod:`balsam_launcher.agent`.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from balsam.contracts import LauncherInfo
from balsam.errors import BalsamError
from balsam.models import Task
from balsam.resources import Node
from balsam_launcher import fence, workdirs

# --- programs ------------------------------------------------------------------------------------


def program(name: str) -> str:
    """``name`` as an absolute path found on the launcher's own PATH (a name with a slash is
    kept as it is). FileNotFoundError if it is not there."""
    if "/" in name:
        return name
    found = _which(name, os.environ.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, "not found on the launcher's PATH", name)
    return found


@functools.lru_cache(maxsize=1024)
def _found(name: str, path: str) -> str:
    found = shutil.which(name, path=path)
    if found is None:
        raise LookupError(name)
    return os.path.abspath(found)


def _which(name: str, path: str) -> str | None:
    try:
        return _found(name, path)  # found once: cached (a miss is asked again next time)
    except LookupError:
        return None


def kill_group(pgid: int, sig: int) -> None:
    """Signal a process group (its leader may be gone already)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@functools.cache
def _devnull() -> int:
    """One /dev/null for every task's stdin (``subprocess.DEVNULL`` opens one per task)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


# --- one run -------------------------------------------------------------------------------------


class Run(Protocol):
    """A task's run, wherever it is."""

    task_id: int
    output_fd: int

    @property
    def pid(self) -> int: ...

    def signal(self, sig: int) -> None: ...
    def poll(self) -> int | None: ...
    def close(self, *, stopped: bool = False) -> None: ...


@dataclass(eq=False)
class LocalRun:
    """A process on this host, in its own process group, watched through a pidfd."""

    task_id: int
    popen: subprocess.Popen[bytes]
    #: Readable once the process has exited (None where pidfds are unavailable: poll instead).
    pidfd: int | None
    #: The launcher's descriptor of the task's output (its last line says why a run failed).
    output_fd: int = -1

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        kill_group(self.pid, sig)

    def poll(self) -> int | None:
        return self.popen.poll()

    def close(self, *, stopped: bool = False) -> None:
        """Close its descriptors; a run that was ``stopped`` takes the stragglers of its
        process group with it (mpirun's ranks, a wrapper's children)."""
        for fd in (self.pidfd, self.output_fd):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.pidfd, self.output_fd = None, -1
        if stopped:
            kill_group(self.pid, signal.SIGKILL)


def pinned_argv(argv: Sequence[str], slots: Sequence[int], allowed: Sequence[int]) -> list[str]:
    """``argv`` run on the CPUs at positions ``slots`` of ``allowed`` (the CPUs this process may
    use, in order) through ``taskset``: the child is pinned before it runs anything, with no
    code run between fork and exec. Unchanged without slots."""
    if not slots:
        return list(argv)
    if max(slots) >= len(allowed):
        message = (f"CPU slot {max(slots)} is beyond the {len(allowed)} CPU(s) this process may "
                   f"use")
        raise OSError(errno.EINVAL, message, argv[0] if argv else None)
    cpus = ",".join(str(allowed[s]) for s in slots)
    return [program("taskset"), "--cpu-list", cpus, *argv]


def spawn(task_id: int, argv: Sequence[str], *, cwd: Path | int, env: Mapping[str, str],
          output: Path | int, cpus: Sequence[int] = ()) -> LocalRun:
    """Start ``argv`` in its own process group with stdout and stderr appended to ``output``,
    pinned to the CPU slots ``cpus`` (see :func:`pinned_argv`) if any.

    ``cwd`` and ``output`` are descriptors the caller opened (the launcher: without following
    symlinks; the descriptors stay the caller's), or paths (a node agent; the output is opened
    here with ``O_NOFOLLOW``). OSError (no such program, permission denied) propagates.
    """
    argv = pinned_argv(argv, cpus, sorted(os.sched_getaffinity(0)) if cpus else ())
    out = output if isinstance(output, int) else os.open(
        output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        popen = subprocess.Popen(
            list(argv), cwd=f"/proc/self/fd/{cwd}" if isinstance(cwd, int) else cwd,
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=_devnull(), process_group=0)
    finally:
        if not isinstance(output, int):
            os.close(out)
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        pidfd = None
    return LocalRun(task_id, popen, pidfd)


@dataclass(eq=False)
class AgentRun:
    """A process started by the agent of a remote node: exits arrive as messages."""

    task_id: int
    agent: Agent
    output_fd: int = -1
    pid: int = 0
    returncode: int | None = None
    error: str = ""

    def signal(self, sig: int) -> None:
        self.agent.signal(self.task_id, sig)

    def poll(self) -> int | None:
        return self.returncode

    def close(self, *, stopped: bool = False) -> None:
        if self.output_fd >= 0:
            os.close(self.output_fd)
            self.output_fd = -1


@dataclass(frozen=True, slots=True)
class Exit:
    """A run ended: ``signalled`` if the launcher had signalled it, ``error`` if it never
    started (an agent could not start it), ``at`` when the exit was seen (epoch seconds)."""

    task_id: int
    returncode: int
    signalled: bool
    at: float
    error: str = ""
    last_line: str = ""


class _Pid(int):
    """Selector data of a local run's pidfd: its task id."""


# --- every run -----------------------------------------------------------------------------------


class Processes:
    """The launcher's runs. Register the selector keys it adds: pass their data to
    :meth:`ready`."""

    def __init__(self, selector: Any, grace: float) -> None:
        self.selector = selector
        self.grace = grace
        self.runs: dict[int, Run] = {}
        self.agents: AgentPool | None = None
        #: The launcher's environment, under every local run's own variables.
        self.base_env = dict(os.environ)
        self._kill_at: dict[int, float] = {}  # SIGKILL deadlines (monotonic)
        self._signalled: set[int] = set()
        self._unwatched: set[int] = set()  # local runs without a pidfd: polled

    def __len__(self) -> int:
        return len(self.runs)

    def start(self, task_id: int, argv: Sequence[str], *, dir_fd: int, directory: Path,
              env: Mapping[str, str], output_fd: int, output: Path,
              node: Node | None = None, cpus: Sequence[int] = ()) -> str:
        """Start a task's run; returns where it runs (``pid N``, or ``through its node agent``).
        ``dir_fd`` and ``directory`` are its working directory (a descriptor for a local run, the
        path for an agent on another host); ``env`` its own variables (over the launcher's
        environment here, over the agent's there); ``output_fd`` becomes the run's (it is closed
        with it); ``cpus`` the CPU slots it is pinned to. OSError if it cannot start."""
        agents = self.agents
        run: Run
        if agents is not None and node is not None and node.index in agents.served:
            run = agents.start(task_id, node, argv, directory, dict(env), output, cpus)
            where = "through its node agent"
        else:
            full = self.base_env.copy()
            full.update(env)
            local = spawn(task_id, argv, cwd=dir_fd, env=full, output=output_fd, cpus=cpus)
            where = f"pid {fence.host_pid_for(local.pid, local.pidfd)}"
            if local.pidfd is None:
                self._unwatched.add(task_id)
            else:
                self.selector.register(local.pidfd, 1, _Pid(task_id))
            run = local
        run.output_fd = output_fd
        self.runs[task_id] = run
        return where

    def stop(self, task_id: int, *, now: bool = False) -> None:
        """SIGTERM the run's process group now and SIGKILL it after the grace period (at once
        with ``now``). Nothing if it has no run (yet)."""
        run = self.runs.get(task_id)
        if run is None:
            return
        self._signalled.add(task_id)
        if now or self.grace <= 0:
            run.signal(signal.SIGKILL)
            self._kill_at.pop(task_id, None)
        elif task_id not in self._kill_at:
            run.signal(signal.SIGTERM)
            self._kill_at[task_id] = time.monotonic() + self.grace

    def hurry(self) -> None:
        """No more grace: SIGKILL every run being stopped now."""
        for tid in list(self._kill_at):
            self.stop(tid, now=True)

    def stop_all(self) -> None:
        for tid in list(self.runs):
            self.stop(tid, now=True)

    def ready(self, data: Any) -> list[Exit]:
        """Exits announced by a selector key this object registered (None: not one of ours)."""
        if isinstance(data, _Pid):
            return self._reap([int(data)])
        if isinstance(data, Agent) and self.agents is not None:
            try:
                ended = self.agents.receive(data)
            except BalsamError:  # the node is gone, and its runs with it
                self.selector.unregister(data.sock)
                raise
            return self._reap(ended)
        return []

    def agent_lost(self, agent: Agent, why: str) -> list[Exit]:
        """An agent went away: every run it had ended (killed)."""
        assert self.agents is not None
        lost = [r for r in self.agents.runs.values() if r.agent is agent]
        for run in lost:
            run.returncode, run.error = -signal.SIGKILL, why
            del self.agents.runs[run.task_id]
        return self._reap([r.task_id for r in lost])

    def due(self, now: float) -> list[Exit]:
        """SIGKILL runs whose grace is over; poll runs without a pidfd."""
        for tid, at in list(self._kill_at.items()):
            if now >= at:
                self.stop(tid, now=True)
        return self._reap(list(self._unwatched)) if self._unwatched else []

    def next_deadline(self, now: float) -> float | None:
        times = list(self._kill_at.values())
        if self._unwatched:
            times.append(now + 0.1)
        return min(times) if times else None

    def _reap(self, ids: Sequence[int]) -> list[Exit]:
        exits = []
        for tid in ids:
            run = self.runs.get(tid)
            rc = run.poll() if run is not None else None
            if run is None or rc is None:
                continue
            at = time.time()
            del self.runs[tid]
            self._kill_at.pop(tid, None)
            self._unwatched.discard(tid)
            signalled = tid in self._signalled
            self._signalled.discard(tid)
            if isinstance(run, LocalRun) and run.pidfd is not None:
                self.selector.unregister(run.pidfd)
            error = run.error if isinstance(run, AgentRun) else ""
            last = workdirs.last_line(run.output_fd) if rc != 0 and not error else ""
            run.close(stopped=signalled)
            exits.append(Exit(tid, rc, signalled, at, error, last))
        return exits

    def close(self) -> None:
        """Kill what is left (only after a crash: the loop waits for its runs) and the agents."""
        for run in list(self.runs.values()):
            run.signal(signal.SIGKILL)
            if isinstance(run, LocalRun):
                run.popen.wait()
                if run.pidfd is not None:
                    self.selector.unregister(run.pidfd)
            run.close(stopped=True)
        self.runs.clear()
        if self.agents is not None:
            self.agents.close()


# --- node agents: the wire protocol and the launcher's side --------------------------------------


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


@dataclass(eq=False)
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
    """Serial mode on other hosts: one agent per node, all started by one MPI launch, runs the
    tasks the launcher sends it (no mpirun per task; the node's processes are its children).

    The agents connect back to the launcher over TCP (its address, a port and a one-time token on
    their command line) and speak newline-delimited JSON: the launcher sends ``start`` (argv,
    cwd, env, output file) and ``signal``; an agent answers ``started`` and ``exit``. When the
    launcher goes away, each agent kills what it started and exits.
    """

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

    def launch(self, mpi_command: Callable[..., list[str]], info: LauncherInfo,
               output_fd: int, timeout: float = 120) -> None:
        """Start the agents (one rank per node) and wait until each has connected; their output
        goes to ``output_fd`` (closed here)."""
        task = Task(id=0, name="agents", num_nodes=len(self.nodes), ranks_per_node=1)
        argv = mpi_command(task=task, command=self.command(), nodes=self.nodes, env={},
                           launcher=info)
        env = dict(os.environ)
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        try:
            self.process = subprocess.Popen([program(argv[0]), *argv[1:]], stdout=output_fd,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, process_group=0)
        finally:
            os.close(output_fd)
        self.server.settimeout(1)
        deadline = time.monotonic() + timeout
        while len(self.agents) < len(self.nodes):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                message = f"{len(self.agents)} of {len(self.nodes)} node agents started"
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

    def start(self, task_id: int, node: Node, argv: Sequence[str], cwd: Path,
              env: dict[str, str], output: Path, cpus: Sequence[int] = ()) -> AgentRun:
        agent = next(a for a in self.agents.values() if a.node == node.index)
        run = AgentRun(task_id, agent)
        self.runs[task_id] = run
        send(agent.sock, {"op": "start", "id": task_id, "argv": list(argv), "cwd": str(cwd),
                          "env": env, "output": str(output), "cpus": list(cpus)})
        return run

    def receive(self, agent: Agent) -> list[int]:
        """Read an agent's messages; returns the ids of tasks that ended. BalsamError if the
        agent went away."""
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
