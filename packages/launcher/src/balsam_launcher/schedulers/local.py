"""The local scheduler: runs the job script as a background process on this host.

It is the default, for laptops, login nodes and tests. The "batch job" is a detached runner
process (:mod:`balsam_launcher.schedulers.local_runner`) that records the job's start and end
in ``qsubmit/.local/``; the scheduler id is its pid. Cancelling sends it SIGTERM, which it
forwards to the job script (the launcher, which the default template ``exec``s).

A pid is a dangerous id: cancelling signals only a process the canceller started, as recorded
in their private record when they submitted it (host, and the process's start time), and only
while it is still a job runner. ``qsubmit/.local/`` is shared and says nothing about that.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from balsam.errors import SchedulerError
from balsam.project import Project
from balsam.scheduler import FAILED, FINISHED, RUNNING, JobStatus, Scheduler
from balsam_launcher import submitted
from balsam_launcher.schedulers import local_runner as runner


class LocalScheduler(Scheduler):
    name = "local"
    template = "local.sh"

    def __init__(self, project: Project) -> None:
        super().__init__(project)
        self._started: dict[str, int] = {}

    @property
    def state_dir(self) -> Path:
        return self.project.qsubmit_dir / ".local"

    def submit(self, script: Path, job: dict[str, Any]) -> str:
        try:
            self.state_dir.mkdir()
            os.chmod(self.state_dir, 0o3770 & ~self.project.umask)  # sticky, like qsubmit/
        except FileExistsError:
            pass
        output = script.with_suffix(".out")
        args = [sys.executable, "-I", runner.__file__, str(script), str(output),
                str(self.state_dir), str(job["wall_time_minutes"])]
        proc = subprocess.run(args, cwd=self.project.root, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        words = proc.stdout.split()
        if proc.returncode != 0 or len(words) != 2 or not all(w.isdigit() for w in words):
            detail = (proc.stderr.strip().splitlines() or ["no job id"])[-1]
            message = f"cannot start {script.name}: {detail}"
            raise SchedulerError(message)
        self._started[words[0]] = int(words[1])
        return words[0]

    def details(self, scheduler_id: str) -> dict[str, Any]:
        return {"host": socket.gethostname(), "boot": self._started.get(scheduler_id)}

    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        found = {}
        for sid in ids:
            status = self._status(sid)
            if status is not None:
                found[sid] = status
        return found

    def _status(self, sid: str) -> JobStatus | None:
        start = runner.read_json(self.state_dir / f"{sid}.start")
        if start is None:
            return None
        started = datetime.fromisoformat(start["started_at"])
        end = runner.read_json(self.state_dir / f"{sid}.end")
        if end is not None:
            ended = datetime.fromisoformat(end["ended_at"])
            if end["returncode"] == 0:
                return JobStatus(FINISHED, started, ended)
            return JobStatus(FAILED, started, ended, end.get("reason") or
                             f"exit status {end['returncode']}")
        if start["host"] != socket.gethostname():
            return JobStatus(RUNNING, started, message=f"on host {start['host']}")
        if runner.start_ticks(int(sid)) == start["boot"]:
            return JobStatus(RUNNING, started)
        return JobStatus(FAILED, started, runner.now_dt(),
                         "the job process died without an exit status")

    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        mine = submitted.lookup(self.project, self.name, scheduler_id)
        if mine is None:
            message = (f"no local job {scheduler_id} was started by you: refusing to signal "
                       f"process {scheduler_id}")
            raise SchedulerError(message)
        if mine.get("host") != socket.gethostname():
            message = f"local job {scheduler_id} runs on {mine.get('host')}: cancel it there"
            raise SchedulerError(message)
        pid = int(scheduler_id)
        if mine.get("boot") is None or runner.start_ticks(pid) != mine["boot"] \
                or not runner.is_runner(pid):
            return  # over (its pid may already be another process's)
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
