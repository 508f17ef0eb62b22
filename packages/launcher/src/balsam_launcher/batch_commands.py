"""Batch-job commands: ``balsam submit-launch``, ``balsam queue``, ``balsam service``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from balsam.db import connect, wrap_db_errors
from balsam.plugins import plugin_manager
from balsam.project import Project
from balsam_launcher import batch_jobs, submit
from balsam_launcher.service import Policy, Service
from balsam_launcher.submit import JOB_MODES, JobRequest

SCHEDULER_HELP = ("Batch scheduler (default: $BALSAM_SCHEDULER, else 'scheduler' in the "
                  "project's server-info, else local).")


@click.command("submit-launch")
@click.option("-A", "--project", "account", default="", help="Project (allocation) to charge.")
@click.option("-q", "--queue", default="", help="Queue (Slurm partition) to submit to.")
@click.option("-t", "--time-minutes", type=int, required=True, help="Wall time in minutes.")
@click.option("-n", "--nodes", type=int, required=True, help="Number of nodes.")
@click.option("--job-mode", type=click.Choice(JOB_MODES), default="mpi", show_default=True,
              help="How the launcher runs tasks.")
@click.option("--wf-filter", default="", help="Run only tasks of this workflow.")
@click.option("--scheduler", help=SCHEDULER_HELP)
@click.option("--template", help="Job template name (default: the scheduler's).")
@click.option("--dry-run", is_flag=True, help="Print the job script; submit nothing.")
def submit_launch(account: str, queue: str, time_minutes: int, nodes: int, job_mode: str,
                  wf_filter: str, scheduler: str | None, template: str | None,
                  dry_run: bool) -> None:
    """Submit a batch job that runs a launcher on the project's tasks.

    Renders qsubmit/qlaunchID.sh from the job template and submits it.
    """
    project = Project.from_env()
    request = JobRequest(nodes, time_minutes, job_mode, account, queue, wf_filter)
    if dry_run:
        text = submit.dry_run(project, plugin_manager(), request, scheduler=scheduler,
                              template=template)
        click.echo(text, nl=False)
        return
    job = submit.submit(project, plugin_manager(), request, scheduler=scheduler,
                        template=template)
    click.echo(f"Submitted batch job {job['id']} ({job['scheduler']} job "
               f"{job['scheduler_id']}): {job['script_path']}")


@click.command("queue")
@click.option("--all", "show_all", is_flag=True, help="Include finished, failed and cancelled.")
@click.option("--kill", "kill", type=int, multiple=True, metavar="ID",
              help="Cancel this batch job (repeatable): its launcher marks running tasks "
                   "RUN_TIMEOUT and exits.")
@click.option("--force", is_flag=True, help="With --kill: kill outright, no grace.")
@click.option("--no-sync", is_flag=True, help="Show the recorded states without asking the "
              "scheduler.")
def queue(show_all: bool, kill: Sequence[int], force: bool, no_sync: bool) -> None:
    """List the project's batch jobs (synced with the scheduler), or cancel some."""
    project = Project.from_env()
    pm = plugin_manager()
    with connect(project) as conn:
        if kill:
            for job_id in kill:
                row = batch_jobs.cancel(conn, project, pm, job_id, force=force)
                click.echo(f"batch job {row['id']}: {row['state']} ({row['state_message']})")
            return
        if not no_sync:
            batch_jobs.sync(conn, project, pm)
        with wrap_db_errors():
            rows = batch_jobs.list_jobs(conn, include_ended=show_all)
    print_batch_jobs(rows)


def print_batch_jobs(rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """A table of batch_jobs rows (also used by ``balsam ls --batch-jobs``)."""
    table = Table("id", "owner", "scheduler", "project", "queue", "nodes", "min", "mode",
                  "filter", "state", "submitted", "started", "ended", "message")
    for r in rows:
        table.add_row(str(r["id"]), r["owner"], f"{r['scheduler']} {r['scheduler_id'] or ''}",
                      r["project"], r["queue"], str(r["num_nodes"]),
                      str(r["wall_time_minutes"]), r["job_mode"], r["wf_filter"], r["state"],
                      _when(r["submitted_at"]), _when(r["started_at"]), _when(r["ended_at"]),
                      r["state_message"])
    (console or Console()).print(table)


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%m-%d %H:%M:%S") if value else ""


@click.command("service")
@click.option("--max-queued", type=int, default=1, show_default=True,
              help="Most jobs waiting in the queue at once.")
@click.option("--max-nodes", type=int, default=1, show_default=True,
              help="Largest job, in nodes.")
@click.option("--min-nodes", type=int, default=1, show_default=True,
              help="Smallest job, in nodes.")
@click.option("--wall-time", "wall_time", type=int, default=60, show_default=True,
              help="Wall time of each job, in minutes.")
@click.option("-q", "--queue", default="", help="Queue to submit to.")
@click.option("-A", "--project", "account", default="", help="Project (allocation) to charge.")
@click.option("--job-mode", type=click.Choice(JOB_MODES), default="mpi", show_default=True)
@click.option("--wf-filter", default="", help="Only count and run tasks of this workflow.")
@click.option("--interval", type=float, default=60.0, show_default=True,
              help="Seconds between rounds.")
@click.option("--scheduler", help=SCHEDULER_HELP)
@click.option("--once", is_flag=True, help="Run one round and exit.")
def service(max_queued: int, max_nodes: int, min_nodes: int, wall_time: int, queue: str,
            account: str, job_mode: str, wf_filter: str, interval: float,
            scheduler: str | None, once: bool) -> None:
    """Keep launchers queued while runnable tasks exist; stops cleanly on SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    project = Project.from_env()
    policy = Policy(max_queued, max_nodes, min_nodes, wall_time, queue, account, job_mode,
                    wf_filter, interval)
    stop = threading.Event()
    svc = Service(project, plugin_manager(), policy, scheduler, stop)
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if once:
            with connect(project) as conn:
                svc.round(conn)
        else:
            svc.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


COMMANDS = (submit_launch, queue, service)
