"""Batch-job commands: ``balsam submit-launch``, ``balsam queue``, ``balsam service``."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import click
import pluggy

from balsam import claim
from balsam.config import load_settings
from balsam.db import connect, wrap_db_errors
from balsam.durations import wall_time_type
from balsam.output import Column, Listing, Output, options
from balsam.plugins import pass_plugin_manager
from balsam.project import Project
from balsam_launcher import batch_jobs, submit
from balsam_launcher.service import Policy, Service
from balsam_launcher.submit import JOB_MODES, JobRequest

SCHEDULER_HELP = ("Batch scheduler (default: 'scheduler' of 'balsam config', else the "
                  "project's server-info, else local).")


def _setting(key: str) -> Any:
    """A default from the site configuration (``balsam config``), read when the option is."""
    return lambda: load_settings().get(key)


@click.command("submit-launch")
@click.option("-A", "--account", "--project", "account", default=_setting("account"),
              help="Account (project, allocation) to charge (legacy: --project).")
@click.option("-q", "--queue", default=_setting("queue"),
              help="Queue (Slurm partition) to submit to.")
@click.option("-t", "--wall-time", "--time-minutes", "time_minutes", type=wall_time_type(),
              required=True, help="Wall time: minutes (90), 1:30:00 or 2h.")
@click.option("-n", "--nodes", type=int, required=True, help="Number of nodes.")
@click.option("--job-mode", type=click.Choice(JOB_MODES), default=_setting("job_mode"),
              show_default=True, help="How the launcher runs tasks.")
@click.option("--wf-filter", default="", help="Run only tasks of this workflow.")
@click.option("--scheduler", default=_setting("scheduler"), help=SCHEDULER_HELP)
@click.option("--template", help="Job template name (default: the scheduler's).")
@click.option("--dry-run", is_flag=True, help="Print the job script; submit nothing.")
@pass_plugin_manager
def submit_launch(pm: pluggy.PluginManager, account: str, queue: str, time_minutes: int,
                  nodes: int, job_mode: str, wf_filter: str, scheduler: str | None,
                  template: str | None, dry_run: bool) -> None:
    """Submit a batch job that runs a launcher on the project's tasks.

    Renders qsubmit/qlaunchID.sh from the job template and submits it.
    """
    project = Project.from_env()
    request = JobRequest(nodes, time_minutes, job_mode, account, queue, wf_filter)
    if dry_run:
        text = submit.dry_run(project, pm, request, scheduler=scheduler,
                              template=template)
        click.echo(text, nl=False)
        return
    job = submit.submit(project, pm, request, scheduler=scheduler,
                        template=template)
    click.echo(f"Submitted batch job {job['id']} ({job['scheduler']} job "
               f"{job['scheduler_id']}): {job['script_path']}")


@click.command("queue")
@click.option("--all", "show_all", is_flag=True, help="Include finished, failed and cancelled.")
@click.option("--kill", "kill", type=int, multiple=True, metavar="ID",
              help="Cancel this batch job (repeatable): its launcher marks running tasks "
                   "RUN_TIMEOUT and exits.")
@click.option("--now", "--force", "force", is_flag=True,
              help="With --kill: kill outright, no grace (legacy: --force).")
@click.option("--no-sync", is_flag=True, help="Show the recorded states without asking the "
              "scheduler.")
@options
@pass_plugin_manager
def queue(pm: pluggy.PluginManager, show_all: bool, kill: Sequence[int], force: bool,
          no_sync: bool, out: Output) -> None:
    """List the project's batch jobs (synced with the scheduler), or cancel some."""
    if force and not kill:
        message = "--now says how to cancel: give the jobs with --kill ID"
        raise click.UsageError(message)
    project = Project.from_env()
    with connect(project) as conn:
        if kill:
            for job_id in kill:
                row = batch_jobs.cancel(conn, project, pm, job_id, force=force)
                click.echo(f"batch job {row['id']}: {row['state']} ({row['state_message']})")
            return
        if not no_sync:
            batch_jobs.sync(conn, project, pm)
        with wrap_db_errors():
            claim.reap_if_allowed(conn)  # the launchers of jobs that ended are dead
            rows = batch_jobs.list_jobs(conn, include_ended=show_all)
    out.records(BATCH_JOBS, rows)


BATCH_JOBS = Listing(tuple(Column(*c.split(":")) for c in (
    "id:id", "owner:text", "scheduler:state", "scheduler_id:id", "project:text", "queue:text",
    "num_nodes:number", "wall_time_minutes:number", "job_mode:state", "wf_filter:text",
    "state:state", "submitted_at:time", "started_at:time", "ended_at:time",
    "state_message:text", "script_path:text")),
    ("id", "owner", "scheduler", "scheduler_id", "project", "queue", "num_nodes",
     "wall_time_minutes", "job_mode", "wf_filter", "state", "submitted_at", "started_at",
     "ended_at", "state_message"))


@click.command("service")
@click.option("--max-queued", type=int, default=1, show_default=True,
              help="Most jobs waiting in the queue at once.")
@click.option("--max-nodes", type=int, default=1, show_default=True,
              help="Largest job, in nodes.")
@click.option("--min-nodes", type=int, default=1, show_default=True,
              help="Smallest job, in nodes.")
@click.option("-t", "--wall-time", "wall_time", type=wall_time_type(), default=60,
              show_default=True, help="Wall time of each job: minutes (90), 1:30:00 or 2h.")
@click.option("-q", "--queue", default=_setting("queue"), help="Queue to submit to.")
@click.option("-A", "--account", "--project", "account", default=_setting("account"),
              help="Account (project, allocation) to charge (legacy: --project).")
@click.option("--job-mode", type=click.Choice(JOB_MODES), default=_setting("job_mode"),
              show_default=True)
@click.option("--wf-filter", default="", help="Only count and run tasks of this workflow.")
@click.option("--interval", type=float, default=60.0, show_default=True,
              help="Seconds between rounds.")
@click.option("--scheduler", default=_setting("scheduler"), help=SCHEDULER_HELP)
@click.option("--once", is_flag=True, help="Run one round and exit.")
@pass_plugin_manager
def service(pm: pluggy.PluginManager, max_queued: int, max_nodes: int, min_nodes: int,
            wall_time: int, queue: str, account: str, job_mode: str, wf_filter: str,
            interval: float, scheduler: str | None, once: bool) -> None:
    """Keep launchers queued while runnable tasks exist; stops cleanly on SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    project = Project.from_env()
    policy = Policy(max_queued, max_nodes, min_nodes, wall_time, queue, account, job_mode,
                    wf_filter, interval)
    stop = threading.Event()
    svc = Service(project, pm, policy, scheduler, stop)
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
