"""PBS Professional: ``qsub``, ``qstat -x -f``, ``qdel``.

``qstat -x`` includes finished jobs while the server keeps their history; jobs it no longer
knows are reconciled from the launchers table by the status sync.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from balsam.errors import SchedulerError
from balsam.scheduler import (
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    JobStatus,
    Scheduler,
    call,
    last_line,
)

#: PBS job_state letters to batch_jobs states (F is finished or failed by its exit status).
STATES = {"Q": QUEUED, "H": QUEUED, "W": QUEUED, "T": QUEUED, "S": QUEUED, "M": QUEUED,
          "R": RUNNING, "E": RUNNING, "B": RUNNING, "F": FINISHED, "X": FINISHED}

_ATTR = re.compile(r"^\s{4}(\w[\w.]*) = (.*)$")


class PBSScheduler(Scheduler):
    name = "pbs"
    template = "pbs.sh"
    nodelist_env = "PBS_NODEFILE"

    def submit(self, script: Path, job: dict[str, Any]) -> str:
        out = self.run(["qsub", script], cwd=self.project.root, what="qsub")
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if not lines:
            message = "qsub printed no job id"
            raise SchedulerError(message)
        return lines[-1]

    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        if not ids:
            return {}
        proc = call(["qstat", "-x", "-f", *ids])
        complaints = [ln for ln in proc.stderr.splitlines()
                      if ln.strip() and "Unknown Job Id" not in ln]
        if proc.returncode != 0 and complaints:
            message = f"qstat failed: {last_line(proc)}"
            raise SchedulerError(message)
        parsed = parse_qstat_full(proc.stdout)
        found = {}
        for sid in ids:
            status = parsed.get(sid) or parsed.get(sid.split(".")[0])
            if status is not None:
                found[sid] = status
        return found

    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        args = ["qdel", "-W", "force", scheduler_id] if force else ["qdel", scheduler_id]
        self.run(args, what="qdel")


def parse_time(value: str) -> datetime | None:
    """PBS's ctime-style local times (``Tue Nov 25 11:37:16 2025``)."""
    try:
        return datetime.strptime(value.strip(), "%a %b %d %H:%M:%S %Y").astimezone()
    except ValueError:
        return None


def parse_qstat_full(text: str) -> dict[str, JobStatus]:
    """Parse ``qstat -f`` blocks (``Job Id: X`` then indented ``key = value`` lines); each job is
    keyed by its full id and by its sequence number."""
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            current = jobs.setdefault(line.split(":", 1)[1].strip(), {})
        elif current is not None and (m := _ATTR.match(line)):
            current[m.group(1)] = m.group(2).strip()
    found = {}
    for job_id, attrs in jobs.items():
        state = STATES.get(attrs.get("job_state", ""))
        if state is None:
            continue
        started = parse_time(attrs.get("stime", "")) if state != QUEUED else None
        ended = None
        message = ""
        if state == FINISHED:
            ended = parse_time(attrs.get("obittime", "") or attrs.get("mtime", ""))
            exit_status = attrs.get("Exit_status", "0")
            if exit_status != "0":
                state, message = FAILED, f"exit status {exit_status}"
        status = JobStatus(state, started, ended, message)
        found[job_id] = found[job_id.split(".")[0]] = status
    return found
