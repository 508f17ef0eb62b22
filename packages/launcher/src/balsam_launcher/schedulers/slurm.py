"""Slurm: ``sbatch``, ``squeue``/``sacct``, ``scancel``.

Status comes from ``squeue -t all`` (which still lists jobs that ended less than ``MinJobAge``
ago), then, for jobs it no longer knows, from accounting (``sacct -X``) or, without an accounting
database, from the job-completion log (``sacct -c``, readable when the site allows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from balsam.errors import SchedulerError
from balsam.scheduler import (
    CANCELLED,
    ENDED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    JobStatus,
    Scheduler,
    call,
    last_line,
)

#: Slurm job states (long names) to batch_jobs states.
STATES = {
    "PENDING": QUEUED, "CONFIGURING": QUEUED, "REQUEUED": QUEUED, "REQUEUE_HOLD": QUEUED,
    "REQUEUE_FED": QUEUED, "RESV_DEL_HOLD": QUEUED,
    "RUNNING": RUNNING, "COMPLETING": RUNNING, "SUSPENDED": RUNNING, "STOPPED": RUNNING,
    "SIGNALING": RUNNING, "STAGE_OUT": RUNNING, "RESIZING": RUNNING,
    "COMPLETED": FINISHED, "CANCELLED": CANCELLED,
    "FAILED": FAILED, "TIMEOUT": FAILED, "NODE_FAIL": FAILED, "OUT_OF_MEMORY": FAILED,
    "BOOT_FAIL": FAILED, "DEADLINE": FAILED, "PREEMPTED": FAILED, "REVOKED": FAILED,
    "SPECIAL_EXIT": FAILED,
}


class SlurmScheduler(Scheduler):
    name = "slurm"
    template = "slurm.sh"
    nodelist_env = "SLURM_JOB_NODELIST"

    def submit(self, script: Path, job: dict[str, Any]) -> str:
        out = self.run(["sbatch", "--parsable", script], cwd=self.project.root, what="sbatch")
        # --parsable prints "jobid" or "jobid;cluster"
        return out.strip().splitlines()[-1].split(";")[0]

    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        if not ids:
            return {}
        found = self._squeue(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            found.update(self._sacct(missing))
        return found

    def _squeue(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        args = ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%S|%e|%r"]
        proc = call(args)
        if proc.returncode != 0:
            # every id unknown: squeue says "Invalid job id specified" and exits 1
            if "Invalid job id" in proc.stderr:
                return {}
            message = f"squeue failed: {last_line(proc)}"
            raise SchedulerError(message)
        return parse_squeue(proc.stdout)

    def _sacct(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        fields = ["-X", "-P", "-n", "-j", ",".join(ids), "-o", "JobID,State,ExitCode,Start,End"]
        for extra in ([], ["-c"]):  # accounting database, then the job-completion log
            proc = call(["sacct", *extra, *fields])
            if proc.returncode == 0:
                return parse_sacct(proc.stdout)
        return {}

    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        # Graceful: SIGTERM to the batch shell only (the script execs the launcher), which marks
        # its running tasks RUN_TIMEOUT and exits. Force: Slurm's own cancel (TERM, then KILL).
        args = ["scancel", scheduler_id] if force else \
            ["scancel", "--batch", "--signal=TERM", scheduler_id]
        self.run(args, what="scancel")


def parse_time(value: str) -> datetime | None:
    """Slurm's local ISO times; ``N/A``, ``Unknown`` and ``None`` are None."""
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        return None


def _status(slurm_state: str, start: str, end: str, reason: str = "") -> JobStatus | None:
    word = slurm_state.split()[0].rstrip("+") if slurm_state.strip() else ""
    state = STATES.get(word)
    if state is None:
        return None
    started = parse_time(start) if state != QUEUED else None
    ended = parse_time(end) if state in ENDED else None
    message = "" if word in ("RUNNING", "COMPLETED", "PENDING") else word
    if reason and reason != "None" and state == QUEUED:
        message = reason
    return JobStatus(state, started, ended, message)


def parse_squeue(text: str) -> dict[str, JobStatus]:
    """Parse ``squeue -h -o '%i|%T|%S|%e|%r'`` lines."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        status = _status(parts[1], parts[2], parts[3], parts[4])
        if status is not None:
            found[parts[0]] = status
    return found


def parse_sacct(text: str) -> dict[str, JobStatus]:
    """Parse ``sacct -X -P -n -o JobID,State,ExitCode,Start,End`` lines."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        status = _status(parts[1], parts[3], parts[4])
        if status is None:
            continue
        if status.state == FAILED and parts[2] not in ("", "0:0"):
            status = JobStatus(status.state, status.started_at, status.ended_at,
                               f"{status.message} (exit code {parts[2]})".strip())
        found[parts[0]] = status
    return found
