"""Batch jobs: template rendering, submission latency and status sync, with the local scheduler.

A throwaway cluster (run as an unprivileged user when root) holds a project in external-DSN mode.
``render`` times the default job template; ``submit`` times ``submit-launch``'s work (row, script,
detached runner started, row marked submitted) with a trivial project template so that the
measured jobs end at once; ``sync`` times one status sync over many unfinished batch jobs.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

from balsam.contracts import InitOptions
from balsam.db import connect
from balsam.lifecycle import init_project
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_launcher import batch_jobs
from balsam_launcher.schedulers import get_scheduler
from balsam_launcher.submit import JobRequest, render, submit
from balsam_testing.pg import throwaway_cluster


def _row(benchmark: str, metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"benchmark": benchmark, "metric": metric, "value": round(value, 3), "unit": unit}


def bench_render(project: Project, count: int) -> list[dict[str, Any]]:
    sched = get_scheduler(project, get_plugin_manager(), "slurm")
    job = {"id": 1, "owner": "bench", "scheduler": "slurm", "project": "P", "queue": "debug",
           "num_nodes": 128, "wall_time_minutes": 60, "job_mode": "mpi", "wf_filter": "wf"}
    render(project, sched, job)  # warm the Jinja2 cache as a long-lived service would
    start = time.perf_counter()
    for i in range(count):
        render(project, sched, {**job, "id": i})
    per = (time.perf_counter() - start) / count
    return [_row("batch", "render slurm template", per * 1e3, "ms")]


def bench_submit(project: Project, count: int) -> list[dict[str, Any]]:
    (project.root / "job-templates").mkdir(exist_ok=True)
    (project.root / "job-templates" / "local.sh").write_text("#!/bin/bash\ntrue\n")
    pm = get_plugin_manager()
    times = []
    with connect(project) as conn:
        for _ in range(count):
            start = time.perf_counter()
            submit(project, pm, JobRequest(1, 5, "serial"), scheduler="local", conn=conn)
            times.append(time.perf_counter() - start)
    times.sort()
    return [_row("batch", "submit-launch (local), median", times[len(times) // 2] * 1e3, "ms"),
            _row("batch", "submit-launch (local), max", times[-1] * 1e3, "ms")]


def bench_sync(project: Project, count: int) -> list[dict[str, Any]]:
    """``count`` submitted local jobs whose runners have ended: one sync finishes them all."""
    state_dir = project.qsubmit_dir / ".local"
    state_dir.mkdir(exist_ok=True)
    now = datetime.now(UTC).isoformat()
    pm = get_plugin_manager()
    with connect(project) as conn:
        for i in range(count):
            sid = str(10_000_000 + i)
            (state_dir / f"{sid}.start").write_text(json.dumps(
                {"host": "bench", "boot": 0, "started_at": now}))
            (state_dir / f"{sid}.end").write_text(json.dumps(
                {"returncode": 0, "ended_at": now, "reason": ""}))
            job = batch_jobs.create(conn, "local", asdict(JobRequest(1, 5)))
            batch_jobs.mark_submitted(conn, job["id"], sid)
        start = time.perf_counter()
        changed = batch_jobs.sync(conn, project, pm)
        elapsed = time.perf_counter() - start
    assert len(changed) == count, (len(changed), count)
    return [_row("batch", f"sync {count} ended jobs", elapsed, "s"),
            _row("batch", "sync per job", elapsed / count * 1e3, "ms")]


def run(quick: bool) -> list[dict[str, Any]]:
    renders, submits, syncs = (200, 10, 200) if quick else (2000, 50, 2000)
    with (throwaway_cluster(prefix="balsam-bench-batch-", dbname="bench") as pg,
          tempfile.TemporaryDirectory() as tmp,
          patch.dict(os.environ, {"BALSAM_HOME": str(Path(tmp) / "home")})):
        os.environ.pop("BALSAM_SCHEDULER", None)
        project = init_project(Path(tmp) / "project", InitOptions(dsn=pg.dsn("bench")),
                               get_plugin_manager())
        rows = bench_render(project, renders)
        rows += bench_sync(project, syncs)
        rows += bench_submit(project, submits)
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(f"{r['metric']:<40} {r['value']:>10} {r['unit']}")
