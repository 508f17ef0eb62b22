"""Cobalt (ALCF): ``qsub -O``, ``qstat`` with ``QSTAT_HEADER``, ``qdel``.

Cobalt forgets a job as soon as it ends, so start and end times come from the launchers table
(the status sync fills them in).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balsam.errors import SchedulerError
from balsam.scheduler import FAILED, QUEUED, RUNNING, JobStatus, Scheduler, call, last_line

STATES = {"queued": QUEUED, "starting": QUEUED, "user_hold": QUEUED, "dep_hold": QUEUED,
          "admin_hold": QUEUED, "maxrun_hold": QUEUED, "running": RUNNING, "exiting": RUNNING,
          "killing": RUNNING, "dep_fail": FAILED}


class CobaltScheduler(Scheduler):
    name = "cobalt"
    template = "cobalt.sh"
    nodelist_env = "COBALT_PARTNAME"

    def submit(self, script: Path, job: dict[str, Any]) -> str:
        # -O names the job's .output, .error and .cobaltlog files after the script
        out = self.run(["qsub", "-O", script.with_suffix(""), script], cwd=self.project.root,
                       what="qsub")
        for line in reversed(out.splitlines()):
            if line.strip().isdigit():
                return line.strip()
        message = f"qsub printed no job id: {out.strip()[:200]}"
        raise SchedulerError(message)

    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        if not ids:
            return {}
        env = dict(os.environ, QSTAT_HEADER="JobID:State")
        proc = call(["qstat", *ids], env=env)
        if proc.returncode != 0:
            message = f"qstat failed: {last_line(proc)}"
            raise SchedulerError(message)
        return {sid: st for sid, st in parse_qstat(proc.stdout).items() if sid in ids}

    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        self.run(["qdel", scheduler_id], what="qdel")


def parse_qstat(text: str) -> dict[str, JobStatus]:
    """Parse ``qstat`` with the header ``JobID:State``: a header line, a line of ``=``, then
    one row per job."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        state = STATES.get(parts[1])
        if state is not None:
            found[parts[0]] = JobStatus(state, message="" if state != FAILED else parts[1])
    return found
