"""The node agent of serial mode on other hosts: started (one per node) by a single MPI launch,
it runs the tasks its launcher sends. The launcher's side and the wire protocol are in
:mod:`balsam_launcher.process` (``AgentPool``).

The agent connects back to the launcher over TCP (the launcher's address, a port, and a one-time
token on its command line) and speaks newline-delimited JSON: the launcher sends ``start``
(argv, cwd, env, output file) and ``signal``; the agent answers ``started`` and ``exit``. When
the launcher goes away, the agent kills what it started and exits.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from balsam_launcher.process import Lines, kill_group, send, spawn

#: Environment variables MPI launchers set to a process's rank (Open MPI, MPICH/PMI, Slurm, ALPS).
RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "ALPS_APP_PE")


def rank_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    for name in RANK_VARIABLES:
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


# --- the agent (runs on a compute node) ----------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m balsam_launcher.agent HOST PORT TOKEN``."""
    host, port, token = (argv if argv is not None else sys.argv[1:])[:3]
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.settimeout(None)
    send(sock, {"op": "hello", "token": token, "host": socket.gethostname(),
                "rank": rank_from_env()})
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, None)
    children: dict[int, Any] = {}
    lines = Lines()
    try:
        while True:
            for key, _ in selector.select():
                if key.data is None:
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
                    send(sock, {"op": "exit", "id": run.task_id, "rc": rc})
    finally:
        for run in children.values():
            kill_group(run.pid, signal.SIGKILL)
            run.popen.wait()


def _handle(msg: dict[str, Any], sock: socket.socket, selector: selectors.BaseSelector,
            children: dict[int, Any]) -> None:
    tid = msg["id"]
    if msg["op"] == "start":
        try:
            run = spawn(tid, msg["argv"], cwd=Path(msg["cwd"]), env={**os.environ, **msg["env"]},
                        output=Path(msg["output"]))
        except OSError as exc:
            send(sock, {"op": "exit", "id": tid, "rc": 127,
                        "error": f"{exc.strerror}: {exc.filename}"})
            return
        children[tid] = run
        selector.register(run.pidfd, selectors.EVENT_READ, tid)
        send(sock, {"op": "started", "id": tid, "pid": run.pid})
    elif msg["op"] == "signal" and tid in children:
        kill_group(children[tid].pid, msg["sig"])


if __name__ == "__main__":
    sys.exit(main())
