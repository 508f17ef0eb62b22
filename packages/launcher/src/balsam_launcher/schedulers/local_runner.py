"""The local scheduler's runner: the "batch job" process, detached from whoever submitted it.

Only the standard library, and run by file path (``python local_runner.py SCRIPT OUTPUT
STATE_DIR WALL_MINUTES``), so that starting a job costs one interpreter start and no imports.
It runs the script with bash, forwards SIGTERM to it, enforces the wall time like a real
scheduler (SIGTERM, then SIGKILL after ``KILL_WAIT``) and records the job's start and end in
``STATE_DIR/<pid>.start`` and ``<pid>.end``. Those are in the shared work zone: written under a
random name (``O_EXCL|O_NOFOLLOW``) and renamed, read without following a symlink; the output is
appended to without following one either.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Seconds between the wall-time SIGTERM and SIGKILL (Slurm's KillWait).
KILL_WAIT = 10.0


def spawn(script: Path, output: Path, state_dir: Path, wall_minutes: float) -> int:
    """Fork the job process into its own session (not the submitter's child, so a long-lived
    service never collects zombies), record its start, print its pid (the job id)."""
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_write)
        os.setsid()
        os.read(go_read, 1)  # wait until the start record exists
        os.close(go_read)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os._exit(run_job(script, output, state_dir, wall_minutes))
    os.close(go_read)
    boot = start_ticks(pid)
    write_json(state_dir / f"{pid}.start",
               {"host": socket.gethostname(), "boot": boot, "started_at": now()})
    os.write(go_write, b"x")
    os.close(go_write)
    print(pid, boot)  # the job id, and what tells this process from a later one with its pid
    return 0


def run_job(script: Path, output: Path, state_dir: Path, wall_minutes: float) -> int:
    """Run ``script`` with bash, forwarding SIGTERM/SIGINT, and record how it ended."""
    out = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o660)
    try:
        child = subprocess.Popen(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
    finally:
        os.close(out)

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        returncode = child.wait(timeout=wall_minutes * 60)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(timeout=KILL_WAIT)
        except subprocess.TimeoutExpired:
            pass
        reason = f"wall time of {wall_minutes:g} min exceeded"
        write_json(state_dir / f"{os.getpid()}.end",
                   {"returncode": 1, "ended_at": now(), "reason": reason})
        os.killpg(os.getpid(), signal.SIGKILL)  # whatever the script left behind, and us
    write_json(state_dir / f"{os.getpid()}.end",
               {"returncode": returncode, "ended_at": now(), "reason": ""})
    return returncode


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (tells a live job from a reused pid); None if
    the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def is_runner(pid: int) -> bool:
    """Whether ``pid`` runs this file (a job runner, not some other process of the user)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(arg.endswith(b"/local_runner.py") for arg in argv[:4])


def now() -> str:
    return now_dt().isoformat()


def now_dt() -> datetime:
    return datetime.now(UTC)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o660)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(spawn(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                   float(sys.argv[4])))
