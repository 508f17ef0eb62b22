"""The node agent of serial mode on other hosts: started (one per node) by a single MPI launch,
it runs the tasks its launcher sends. The launcher's side and the wire protocol are in
:mod:`balsam_launcher.process` (``AgentPool``).

The agent connects back to the launcher over TCP (the launcher's address, a port, and a one-time
token on its command line) and speaks newline-delimited JSON: the launcher sends ``start``
(argv, cwd, env, output file, CPU slots), ``signal`` and ``lease`` (with each heartbeat: how
many seconds the launcher's lease still runs); the agent answers ``started`` and ``exit``. Each
agent is fenced like a launcher (balsam_launcher.fence): when the launcher goes away or stops
renewing the lease, the agent's tasks die with it.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from balsam_launcher import fence, lease
from balsam_launcher.process import Lines, LocalRun, kill_group, send, spawn

#: Environment variables MPI launchers set to a process's rank (Open MPI, MPICH/PMI, Slurm, ALPS).
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "ALPS_APP_PE")


def rank_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    for name in RANK_VARIABLES:
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


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
    children: dict[int, LocalRun] = {}
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
                    selector.unregister(key.fd)
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
            children: dict[int, LocalRun]) -> None:
    tid = int(msg.get("id", -1))
    if msg["op"] == "lease":
        lease.extend(float(msg["seconds"]))
    elif msg["op"] == "start":
        try:
            run = spawn(tid, msg["argv"], cwd=Path(msg["cwd"]), env={**os.environ, **msg["env"]},
                        output=Path(msg["output"]), cpus=msg.get("cpus", ()))
        except OSError as exc:
            send(sock, {"op": "exit", "id": tid, "rc": 127,
                        "error": f"{exc.strerror}: {exc.filename}"})
            return
        if run.pidfd is None:  # pidfds came with Linux 5.3: an agent watches its runs by them
            run.close(stopped=True)
            send(sock, {"op": "exit", "id": tid, "rc": 127, "error": "no pidfd on this host"})
            return
        children[tid] = run
        selector.register(run.pidfd, selectors.EVENT_READ, tid)
        send(sock, {"op": "started", "id": tid, "pid": fence.host_pid_for(run.pid, run.pidfd)})
    elif msg["op"] == "signal" and tid in children:
        kill_group(children[tid].pid, msg["sig"])


if __name__ == "__main__":
    sys.exit(main())
