"""The local scheduler: runs the job script as a background process on this host.

It is the default, for laptops, login nodes and tests. A detached runner process (this module
run with ``python -m``) is the "batch job": it runs the script, forwards SIGTERM to it, enforces
the wall time like a real scheduler (SIGTERM, then SIGKILL after a grace period) and records the
exit status in ``qsubmit/.local/<id>.end``. The scheduler id is the runner's pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from balsam_launcher.schedulers import (
    FAILED,
    FINISHED,
    RUNNING,
    JobStatus,
    Scheduler,
    SchedulerError,
)

#: Seconds between the wall-time SIGTERM and SIGKILL (Slurm's KillWait).
KILL_WAIT = 10.0


class LocalScheduler(Scheduler):
    name = "local"
    template = "local.sh"

    @property
    def state_dir(self) -> Path:
        return self.project.qsubmit_dir / ".local"

    def submit(self, script: Path, job: dict[str, Any]) -> str:
        self.state_dir.mkdir(exist_ok=True)
        output = script.with_suffix(".out")
        args = [sys.executable, "-m", "balsam_launcher.schedulers.local", str(script),
                str(output), str(self.state_dir), str(job["wall_time_minutes"])]
        proc = subprocess.run(args, cwd=self.project.root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not proc.stdout.strip().isdigit():
            detail = (proc.stderr.strip().splitlines() or ["no job id"])[-1]
            message = f"cannot start {script.name}: {detail}"
            raise SchedulerError(message)
        return proc.stdout.strip()

    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        found = {}
        for sid in ids:
            status = self._status(sid)
            if status is not None:
                found[sid] = status
        return found

    def _status(self, sid: str) -> JobStatus | None:
        start = _read_json(self.state_dir / f"{sid}.start")
        if start is None:
            return None
        started = datetime.fromisoformat(start["started_at"])
        end = _read_json(self.state_dir / f"{sid}.end")
        if end is not None:
            ended = datetime.fromisoformat(end["ended_at"])
            if end["returncode"] == 0:
                return JobStatus(FINISHED, started, ended)
            return JobStatus(FAILED, started, ended, end.get("reason") or
                             f"exit status {end['returncode']}")
        if start["host"] != socket.gethostname():
            return JobStatus(RUNNING, started, message=f"on host {start['host']}")
        if _start_ticks(int(sid)) == start["boot"]:
            return JobStatus(RUNNING, started)
        return JobStatus(FAILED, started, _now_dt(), "the job process died without an exit status")

    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        start = _read_json(self.state_dir / f"{scheduler_id}.start")
        if start is None:
            message = f"no local job {scheduler_id} in {self.state_dir}"
            raise SchedulerError(message)
        if start["host"] != socket.gethostname():
            message = f"local job {scheduler_id} runs on {start['host']}: cancel it there"
            raise SchedulerError(message)
        pid = int(scheduler_id)
        if _start_ticks(pid) != start["boot"]:
            return  # already over
        try:
            if force:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            message = f"not allowed to signal local job {scheduler_id} (another user's?)"
            raise SchedulerError(message) from None


# --- the runner (python -m balsam_launcher.schedulers.local) -----------------------------------


def spawn(script: Path, output: Path, state_dir: Path, wall_minutes: float) -> int:
    """Start the runner detached (its own session, not our child: the service never collects
    zombies), record its start, print its pid."""
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
    record = {"host": socket.gethostname(), "boot": _start_ticks(pid), "started_at": _now()}
    _write_json(state_dir / f"{pid}.start", record)
    os.write(go_write, b"x")
    os.close(go_write)
    print(pid)
    return 0


def run_job(script: Path, output: Path, state_dir: Path, wall_minutes: float) -> int:
    """Run ``script`` with bash, forwarding SIGTERM/SIGINT, and record how it ended."""
    with open(output, "ab") as out:
        child = subprocess.Popen(["bash", str(script)], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)

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
        _write_json(state_dir / f"{os.getpid()}.end",
                    {"returncode": 1, "ended_at": _now(), "reason": reason})
        os.killpg(os.getpid(), signal.SIGKILL)  # whatever the script left behind, and us
    _write_json(state_dir / f"{os.getpid()}.end",
                {"returncode": returncode, "ended_at": _now(), "reason": ""})
    return returncode


def _start_ticks(pid: int) -> int | None:
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


def _now() -> str:
    return _now_dt().isoformat()


def _now_dt() -> datetime:
    return datetime.now(UTC)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(spawn(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]),
                     float(sys.argv[4])))
