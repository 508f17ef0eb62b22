"""Helpers for tests and benchmarks of launchers: bulk apps and tasks, launcher processes (as
other UNIX users too), waiting for states, and a task that records each of its executions."""

from __future__ import annotations

import contextlib
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from balsam.db import Connection
from balsam.queries import query
from balsam.states import FINAL

#: A task that sleeps ``$1`` seconds and then appends its id to the file ``$2``: counting the
#: lines per id counts the task's completed executions.
RECORD_SCRIPT = """#!/bin/sh
sleep "${1:-0}"
echo "$BALSAM_TASK_ID" >> "$2"
"""

BALSAM = str(Path(sys.executable).parent / "balsam")

#: The start of a stand-in for ssh: reads ssh's command line into ``subsystem`` (``-s``),
#: ``host`` (without ``user@``) and ``words`` (the remote command).
SSH_ARGS = """\
import os, sys
WITH_VALUE = set("bcDEeFIiJLlmOopQRSWw")
args, i, subsystem = sys.argv[1:], 0, False
while i < len(args) and args[i].startswith("-"):
    flag, i = args[i][1:], i + 1
    if flag == "-":
        break
    if flag == "s":
        subsystem = True
    elif len(flag) == 1 and flag in WITH_VALUE:
        i += 1
host, words = args[i].rpartition("@")[2], args[i + 1:]
"""

#: A stand-in for ssh (``BALSAM_TRANSFER_SSH``): runs the remote command, or the sftp subsystem,
#: on this host, so that tests run the real rsync and scp; notes each host asked for in the
#: file ``$FAKE_SSH_LOG`` if set.
FAKE_SSH = SSH_ARGS + """\
if os.environ.get("FAKE_SSH_LOG"):
    with open(os.environ["FAKE_SSH_LOG"], "a") as log:
        log.write(host + "\\n")
if subsystem:
    os.execv("/usr/lib/openssh/sftp-server", ["sftp-server"])
os.execv("/bin/sh", ["sh", "-c", " ".join(words)])
"""


def fake_ssh(directory: Path) -> Path:
    """Write :data:`FAKE_SSH` as an executable ``ssh`` in ``directory``."""
    path = directory / "ssh"
    path.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
    path.chmod(0o755)
    return path


def q(name: str) -> str:
    return query("balsam_testing", name)


def add_app(conn: Connection, name: str, executable: str, *, preprocess: str = "",
            postprocess: str = "", envscript: str = "") -> int:
    row = conn.execute(q("testing_add_app"), {
        "name": name, "executable": executable, "preprocess": preprocess,
        "postprocess": postprocess, "envscript": envscript}).fetchone()
    assert row is not None
    return int(row["id"])


def add_tasks(conn: Connection, app_id: int, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert tasks in one statement (keys as in the tasks table; READY unless ``state``)."""
    rows = conn.execute(q("testing_add_tasks"), {"app_id": app_id,
                                                 "tasks": Jsonb(list(map(dict, tasks)))})
    return sorted(r["id"] for r in rows)


def add_edges(conn: Connection, edges: Iterable[tuple[int, int]]) -> None:
    pairs = list(edges)
    conn.execute(q("testing_add_edges"), {"parents": [p for p, _ in pairs],
                                          "children": [c for _, c in pairs]})


def hold(conn: Connection, ids: Iterable[int]) -> None:
    """Hold tasks by a stand-in launcher while a test moves them as a launcher would: a RUNNING
    task always has one (core's migration 0011)."""
    conn.execute(q("testing_hold"), {"ids": list(ids)})


def give_back(conn: Connection, ids: Iterable[int]) -> None:
    """Release tasks held by :func:`hold` and end their stand-ins now."""
    conn.execute(q("testing_give_back"), {"ids": list(ids)})


def states(conn: Connection) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in conn.execute(q("testing_states"))}


def events(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute(q("testing_events")).fetchall()


def record_app(conn: Connection, directory: Path, name: str = "record") -> int:
    """An app running :data:`RECORD_SCRIPT` (written to ``directory``)."""
    script = directory / "record.sh"
    script.write_text(RECORD_SCRIPT)
    script.chmod(0o775)
    return add_app(conn, name, f"/bin/sh {script}")


def executions(counts: Path) -> Counter[int]:
    """How many times each task id appended itself to ``counts``."""
    if not counts.exists():
        return Counter()
    return Counter(int(x) for x in counts.read_text().split())


def wait_until_final(conn: Connection, ids: Iterable[int], timeout: float,
                     procs: Sequence[subprocess.Popen[Any]] = ()) -> dict[int, dict[str, Any]]:
    """Poll until every task in ``ids`` is in a final state; AssertionError on timeout (or when
    every launcher in ``procs`` has exited first)."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        current = {i: r for i, r in states(conn).items() if i in wanted}
        if all(r["state"] in FINAL for r in current.values()) and len(current) == len(wanted):
            return current
        if time.monotonic() > deadline or (procs and all(p.poll() is not None for p in procs)):
            left = Counter(r["state"] for r in current.values() if r["state"] not in FINAL)
            message = f"tasks not final after {timeout}s: {dict(left)}"
            raise AssertionError(message)
        time.sleep(0.1)


def launcher_command(*args: str, user: str | None = None,
                     env: Mapping[str, str] | None = None) -> list[str]:
    """``balsam launcher ARGS`` (as ``user`` through runuser with a clean environment)."""
    command = [BALSAM, "launcher", *args]
    if user is None:
        return command
    pw = pwd.getpwnam(user)
    clean = {"PATH": f"{Path(BALSAM).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir,
             "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", **(env or {})}
    return ["runuser", "-u", user, "--", "env", "-i",
            *(f"{k}={v}" for k, v in clean.items()), *command]


def start_launcher(project_root: Path, *args: str, user: str | None = None,
                   env: Mapping[str, str] | None = None,
                   output: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a launcher process in its own session (so that a test can kill it and everything
    it started, like a node failure)."""
    extra = {"BALSAM_DB_PATH": str(project_root), **(env or {})}
    command = launcher_command(*args, user=user, env=extra)
    full_env = None if user else {**os.environ, **extra}
    with open(output, "ab") if output else contextlib.nullcontext(subprocess.DEVNULL) as out:
        return subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in "ZX"


def wait_exited(pids: Iterable[int], timeout: float, what: str) -> float:
    """Wait until every process of ``pids`` that lives now has exited; return how long it took.
    Each is watched through a pidfd, so a pid reused meanwhile cannot pass for a survivor. On
    timeout, fail naming those left (state and command): which one says why."""
    watched: dict[int, int] = {}  # pidfd -> pid
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            watched[os.pidfd_open(pid)] = pid
    started = time.monotonic()
    try:
        poller = select.poll()
        for fd in watched:
            poller.register(fd, select.POLLIN)
        left = set(watched.values())
        while left:
            remaining = started + timeout - time.monotonic()
            if remaining <= 0:
                survivors = "; ".join(f"{pid} {_describe(pid)}" for pid in sorted(left))
                raise AssertionError(f"{what}: still running after {timeout} s: {survivors}")
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                left.discard(watched[fd])
        return time.monotonic() - started
    finally:
        for fd in watched:
            os.close(fd)


def wait_for_processes(find: Callable[[], set[int]], at_least: int, what: str,
                       timeout: float = 10) -> set[int]:
    """Poll ``find()`` (a set of pids) until it holds ``at_least``; return it: a test waits
    for the forks and daemons of its tasks, not for a guessed time."""
    deadline = time.monotonic() + timeout
    while len(found := find()) < at_least:
        if time.monotonic() >= deadline:
            message = f"{what}: {len(found)} of {at_least} processes after {timeout} s"
            raise AssertionError(message)
        time.sleep(0.02)
    return found


def _describe(pid: int) -> str:
    state, ppid = (_stat_fields(pid) or ["?", "?"])[:2]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        command = "?"
    return f"(state {state}, parent {ppid}: {command})"


def parent(pid: int) -> int:
    """The parent of a live process ``pid`` (as /proc numbers them)."""
    fields = _stat_fields(pid)
    assert fields is not None, f"no process {pid}"
    return int(fields[1])


def session_pids(sid: int) -> list[int]:
    """Processes in session ``sid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


def kill_session(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a launcher and every process it started (a node dying under it)."""
    sid = proc.pid
    for _ in range(5):
        pids = session_pids(sid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    proc.wait()
