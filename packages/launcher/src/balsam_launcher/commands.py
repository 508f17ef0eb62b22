"""``balsam launcher`` (run tasks on this job's nodes) and ``balsam log`` (read their output)."""

from __future__ import annotations

import sys

import click
import pluggy

from balsam import api, claim, monitor
from balsam.db import connect
from balsam.errors import InvalidInput, NotFound
from balsam.plugins import pass_plugin_manager
from balsam.project import Project
from balsam.resources import JOB_MODES
from balsam.states import FINAL, State
from balsam_launcher import batch_jobs, fence, logs, steps
from balsam_launcher.launcher import Launcher, Options

_POSITIVE = click.FloatRange(min=0, min_open=True)
#: The defaults the options show are the launcher's own (written once, in Options).
_DEFAULT = Options()


@click.command("launcher")
@click.option("--job-mode", type=click.Choice(JOB_MODES), default=_DEFAULT.job_mode,
              show_default=True,
              help="mpi: each task through the MPI launcher on whole nodes; serial: single-rank "
                   "tasks started directly, node_packing_count of them per node.")
@click.option("--wf-filter", default="", metavar="WORKFLOW",
              help="Run only tasks of this workflow (exact match).")
@click.option("--wf-substring", is_flag=True,
              help="Legacy matching: --wf-filter selects every workflow containing it.")
@click.option("--consume-all", is_flag=True,
              help="Exit once no task this launcher could run is left (default: wait for more).")
@click.option("--persistent", is_flag=True,
              help="Keep running until killed or out of time, even with no work (the default; "
                   "legacy spelling).")
@click.option("--time-limit-minutes", type=_POSITIVE, metavar="MINUTES",
              help="Stop after this long (running tasks become RUN_TIMEOUT); tasks whose "
                   "wall_time_minutes exceeds the time left are not started. Default: stop "
                   "before the Slurm, PBS or Cobalt job ends, as its scheduler says.")
@click.option("--nodes", type=click.IntRange(min=1), metavar="N",
              help="Use N nodes: the first N of the allocation, or N simulated nodes when the "
                   "allocation is this one host.")
@click.option("--offset-nodes", type=click.IntRange(min=0), default=0, metavar="K",
              help="Skip the allocation's first K nodes (several launchers in one job).")
@click.option("--limit-nodes", type=click.IntRange(min=1), metavar="N",
              help="Use at most N of the allocation's nodes (after --offset-nodes).")
@click.option("--gpus-per-node", type=click.IntRange(min=0, max=1024), default=0, metavar="N",
              help="GPUs on each node, given to tasks by their gpus_per_rank, one task each "
                   "(CUDA_VISIBLE_DEVICES, or a site's gpu_environment hook).")
@click.option("--batch-job-id", type=click.IntRange(min=1), envvar="BALSAM_BATCH_JOB_ID",
              metavar="ID",
              help="The balsam batch job this launcher runs in (default $BALSAM_BATCH_JOB_ID).")
@click.option("--heartbeat-timeout", type=click.FloatRange(min=1),
              default=_DEFAULT.heartbeat_timeout, show_default=True, metavar="SECONDS",
              help="Others presume this launcher dead after this long without a heartbeat and "
                   "restart its tasks; its own tasks are killed a little before (at least 1).")
@click.option("--poll-interval", type=_POSITIVE, default=_DEFAULT.poll_interval, show_default=True,
              metavar="SECONDS",
              help="Look for work this often even if no notification arrives.")
@click.option("--max-retries", type=click.IntRange(min=0), default=_DEFAULT.max_retries,
              show_default=True,
              metavar="N",
              help="Run a task that exits non-zero (and has no error handler) up to this many "
                   "more times before it is FAILED.")
@click.option("--workers", "--num-transition-threads", "workers", type=click.IntRange(min=1),
              default=_DEFAULT.workers, show_default=True, metavar="N",
              help="Threads for stage-in and pre- and post-processing scripts.")
@click.option("--kill-grace", type=click.FloatRange(min=0), default=_DEFAULT.kill_grace,
              show_default=True,
              metavar="SECONDS", help="Between SIGTERM and SIGKILL when stopping a task.")
@click.option("--allow-workdir", multiple=True, metavar="PREFIX",
              help="Let tasks work under this absolute directory outside the project "
                   "(repeatable); others are FAILED instead of run.")
@click.option("--trust", multiple=True, metavar="USER",
              help="Also run the tasks USER owns or changed, and those of apps USER changed "
                   "(repeatable; beside yours, balsam_admin's and those of the users you "
                   "trust with 'balsam trust add').")
@pass_plugin_manager
def launcher(pm: pluggy.PluginManager, job_mode: str, wf_filter: str, wf_substring: bool,
             consume_all: bool, persistent: bool, time_limit_minutes: float | None,
             nodes: int | None, offset_nodes: int, limit_nodes: int | None, gpus_per_node: int,
             batch_job_id: int | None, heartbeat_timeout: float, poll_interval: float,
             max_retries: int, workers: int, kill_grace: float,
             allow_workdir: tuple[str, ...], trust: tuple[str, ...]) -> None:
    """Run the active project's tasks on this batch job's nodes.

    Nodes come from Slurm, PBS or Cobalt, or the local host. SIGTERM or SIGINT (the scheduler
    ending the job) stops running tasks, marks them RUN_TIMEOUT and exits cleanly. The log goes
    to log/launcher_<id>.log in the project.

    No task process outlives the launcher: it runs in its own PID namespace (BALSAM_FENCE=
    subreaper where namespaces are refused, none to turn this off), and if it cannot heartbeat
    in time its tasks are killed before others may run them again.
    """
    if wf_substring and not wf_filter:
        message = "--wf-substring needs --wf-filter"
        raise click.UsageError(message)
    options = Options(job_mode=job_mode, wf_filter=wf_filter, wf_substring=wf_substring,
                      consume_all=consume_all, time_limit_minutes=time_limit_minutes,
                      nodes=nodes, batch_job_id=batch_job_id, heartbeat_timeout=heartbeat_timeout,
                      poll_interval=poll_interval, max_retries=max_retries, workers=workers,
                      kill_grace=kill_grace, allow_workdir=allow_workdir, trust=trust,
                      persistent=persistent, offset_nodes=offset_nodes, limit_nodes=limit_nodes,
                      gpus_per_node=gpus_per_node)
    fence.mode()  # a bad BALSAM_FENCE is refused here, before anything starts
    project = Project.from_env()
    runner = Launcher(project, options, pm)
    with connect(project) as conn:  # the server is up, the batch job exists: before the fence
        claim.require_users(conn, trust)
        if batch_job_id is not None:
            try:
                batch_jobs.get(conn, batch_job_id)
            except NotFound:
                message = f"no batch job {batch_job_id} in this project"
                raise InvalidInput(message) from None

    def launch() -> int:  # behind the fence, in its own process
        code = runner.run()
        if runner.log_path is not None:
            click.echo(f"launcher {runner.id} ended ({runner.stopping}); log: "
                       f"{runner.log_path}", err=True)
        return code

    sys.exit(fence.run(launch, lease_timeout=heartbeat_timeout))


@click.command("log")
@click.argument("task_id", type=click.IntRange(min=1), required=False)
@click.option("--launcher", "launcher_id", type=click.IntRange(min=1), metavar="ID",
              help="Show this launcher's log (default: the most recent launcher's).")
@click.option("-n", "--lines", type=click.IntRange(min=0), metavar="N",
              help="Only the last N lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what is appended.")
@click.option("--list", "list_logs", is_flag=True, help="List the launcher logs.")
def log(task_id: int | None, launcher_id: int | None, lines: int | None, follow: bool,
        list_logs: bool) -> None:
    """Show a task's output (TASK_ID) or a launcher's log.

    A task's stdout and stderr are in <name>.out in its working directory; with --follow the
    output is followed until the task reaches a final state, a launcher's log until the
    launcher has ended.
    """
    given = [o for o, v in (("TASK_ID", task_id), ("--launcher", launcher_id), ("-n", lines),
                            ("--follow", follow)) if v]
    if list_logs and given:
        message = f"--list lists the logs: {given[0]} goes with showing one"
        raise click.UsageError(message)
    project = Project.from_env()
    if list_logs:
        for lid, path in logs.launcher_logs(project).items():
            click.echo(f"{lid}\t{path}")
        return
    if task_id is not None and launcher_id is not None:
        message = "give a TASK_ID or --launcher, not both"
        raise click.UsageError(message)
    if task_id is None:
        lid, path = logs.launcher_log(project, launcher_id)

        def done() -> bool:  # the launcher has ended, or may be presumed dead
            with connect(project) as conn:
                return lid not in {lc.id for lc in monitor.launchers(conn, alive_only=True)}
    else:
        with connect(project) as conn:
            task = api.get_task(task_id, conn=conn)
        path = steps.output_path(project.workdir(task.workdir), task)
        if not path.exists():
            message = f"task {task_id} ({task.state}) has no output yet: no {path}"
            raise NotFound(message)

        def done() -> bool:
            with connect(project) as conn:
                return State(api.get_task(task_id, conn=conn).state) in FINAL

    for line in logs.last_lines(path, lines):
        click.echo(line)
    if follow:
        try:
            logs.follow(path, lambda chunk: click.echo(chunk, nl=False), until=done)
        except KeyboardInterrupt:
            pass
