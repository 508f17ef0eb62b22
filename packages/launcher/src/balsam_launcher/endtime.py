"""When the batch scheduler will end this job: the launcher's time limit when
``--time-limit-minutes`` is not given, so that tasks become RUN_TIMEOUT (and the launcher exits
cleanly) before the scheduler kills the job.

Slurm: ``SLURM_JOB_END_TIME`` (Slurm 23.02 and later) or ``squeue -h -j $SLURM_JOB_ID -o %e``;
PBS: ``qstat -f $PBS_JOBID`` (``stime`` plus ``Resource_List.walltime``); Cobalt:
``COBALT_ENDTIME``. The parsers are pure; :func:`job_end` asks the scheduler.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

#: Seconds a query of the scheduler may take.
QUERY_TIMEOUT = 20.0
#: The most a launcher keeps back (seconds) to stop its tasks before the scheduler's end.
MAX_MARGIN = 120.0

Run = Callable[[Sequence[str]], str]


def _run(argv: Sequence[str]) -> str:
    """A scheduler command's output ("" if it fails or is missing)."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=QUERY_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _epoch(text: str) -> float | None:
    text = text.strip()
    return float(text) if text.isdigit() and int(text) > 0 else None


def parse_squeue_end(text: str) -> float | None:
    """``squeue -o %e``: a local time like ``2026-11-30T15:30:00`` (None for ``N/A``,
    ``Unknown`` or anything else)."""
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        return None


_PBS_FIELD = re.compile(r"^\s*([\w.]+)\s*=\s*(.*?)\s*$", re.MULTILINE)


def parse_qstat_end(text: str) -> float | None:
    """``qstat -f JOBID`` (PBS): when it started plus its wall time."""
    fields = dict(_PBS_FIELD.findall(text))
    start, walltime = fields.get("stime"), fields.get("Resource_List.walltime")
    if not start or not walltime:
        return None
    try:
        started = time.mktime(time.strptime(start, "%a %b %d %H:%M:%S %Y"))
        parts = [int(p) for p in walltime.split(":")]
    except ValueError:
        return None
    seconds = 0
    for p in parts:
        seconds = seconds * 60 + p
    return started + seconds


def job_end(scheduler: str, env: Mapping[str, str] | None = None,
            run: Run = _run) -> float | None:
    """When the scheduler ends the current job (epoch seconds), or None if it does not say."""
    env = os.environ if env is None else env
    if scheduler == "slurm":
        end = _epoch(env.get("SLURM_JOB_END_TIME", ""))
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        if end is None and job:
            end = parse_squeue_end(run(["squeue", "-h", "-j", job, "-o", "%e"]))
        return end
    if scheduler == "pbs":
        job = env.get("PBS_JOBID")
        return parse_qstat_end(run(["qstat", "-f", job])) if job else None
    if scheduler == "cobalt":
        return _epoch(env.get("COBALT_ENDTIME", ""))
    return None


def stop_after(end: float, now: float, kill_grace: float) -> float:
    """Seconds from ``now`` until the launcher should stop to be done before ``end``: it keeps
    back a quarter of what is left, at most :data:`MAX_MARGIN`, and the grace its tasks get
    between SIGTERM and SIGKILL (never less than nothing)."""
    left = end - now
    return max(0.0, left - min(MAX_MARGIN, left / 4) - kill_grace)
