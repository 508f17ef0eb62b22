"""``balsam service``: keep launchers queued while runnable work exists, within a policy.

Each round syncs batch job states, measures the unclaimed runnable work (in nodes) and submits
jobs for the part of it that the jobs already waiting in the queue will not cover, never holding
more than ``max_queued`` waiting jobs per queue, each sized to the work between ``min_nodes`` and
``max_nodes``, with the policy's wall time. One service per project, queue and filter (a
PostgreSQL advisory lock); SIGTERM ends it after the current round.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pluggy

from balsam import claim
from balsam.claim import Work, unclaimed_work
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import AlreadyExists, BalsamError, InvalidInput, ServerDown
from balsam.project import Project
from balsam_launcher import batch_jobs
from balsam_launcher.schedulers import get_scheduler
from balsam_launcher.submit import JobRequest, submit

log = logging.getLogger(__name__)

#: The longest --interval (seconds): a day; more is a typo, and waits cannot be endless.
MAX_INTERVAL = 86_400


@dataclass(frozen=True)
class Policy:
    """Limits for the jobs one service submits to one queue."""

    max_queued: int = 1
    max_nodes: int = 1
    min_nodes: int = 1
    wall_time_minutes: int = 60
    queue: str = ""
    project: str = ""
    job_mode: str = "mpi"
    wf_filter: str = ""
    interval: float = 60.0

    def validate(self) -> None:
        if self.max_queued < 1:
            message = f"--max-queued must be at least 1 (got {self.max_queued})"
            raise InvalidInput(message)
        if not 1 <= self.min_nodes <= self.max_nodes:
            message = (f"need 1 <= --min-nodes <= --max-nodes (got {self.min_nodes} and "
                       f"{self.max_nodes})")
            raise InvalidInput(message)
        if self.wall_time_minutes < 1:
            message = f"--wall-time must be at least 1 minute (got {self.wall_time_minutes})"
            raise InvalidInput(message)
        if not (math.isfinite(self.interval) and 0 < self.interval <= MAX_INTERVAL):  # not NaN
            message = (f"--interval must be positive and at most {MAX_INTERVAL:,} seconds "
                       f"(got {self.interval:g})")
            raise InvalidInput(message)
        self.request(self.min_nodes).validate()

    def request(self, nodes: int) -> JobRequest:
        return JobRequest(nodes, self.wall_time_minutes, self.job_mode, self.project,
                          self.queue, self.wf_filter)


def nodes_needed(work: Sequence[Work], job_mode: str, max_nodes: int) -> tuple[int, int]:
    """Nodes the runnable work would occupy (serial tasks share nodes by their packing count),
    and how many tasks can never fit a job of ``max_nodes``."""
    total = 0.0
    too_big = 0
    for w in work:
        if w.num_nodes > max_nodes:
            too_big += w.tasks
        elif job_mode == "serial":
            total += w.tasks * w.num_nodes / w.node_packing_count
        else:
            total += w.tasks * w.num_nodes
    return math.ceil(total), too_big


def plan(policy: Policy, work: Sequence[Work], waiting_jobs: int,
         waiting_nodes: int) -> list[JobRequest]:
    """The jobs to submit now (pure: no database, no scheduler)."""
    need, _ = nodes_needed(work, policy.job_mode, policy.max_nodes)
    need -= waiting_nodes
    requests: list[JobRequest] = []
    while need > 0 and waiting_jobs + len(requests) < policy.max_queued:
        nodes = min(max(need, policy.min_nodes), policy.max_nodes)
        requests.append(policy.request(nodes))
        need -= nodes
    return requests


class Service:
    """The service loop; :meth:`round` is one pass (also ``balsam service --once``)."""

    def __init__(self, project: Project, pm: pluggy.PluginManager, policy: Policy,
                 scheduler: str | None = None, stop: threading.Event | None = None) -> None:
        policy.validate()
        self.project, self.pm, self.policy = project, pm, policy
        self.scheduler = get_scheduler(project, pm, scheduler).name
        self.stop = stop or threading.Event()
        self._warned_too_big = 0

    def run(self) -> None:
        """Loop until ``stop`` is set; a lost database connection is retried each interval."""
        conn: Connection | None = None
        log.info("service started: %s", self.describe())
        try:
            while not self.stop.is_set():
                try:
                    if conn is None or conn.closed:
                        self.project.reload()  # the server may have moved (server-info)
                        conn = self._connect()
                    self.round(conn)
                except AlreadyExists:
                    raise  # another service holds this queue: not ours to retry
                except ServerDown as exc:
                    log.warning("%s; retrying in %gs", exc, self.policy.interval)
                    if conn is not None:
                        conn.close()
                except BalsamError as exc:
                    log.warning("round failed: %s", exc)
                self.stop.wait(self.policy.interval)
        finally:
            if conn is not None:
                conn.close()
        log.info("service stopped")

    def describe(self) -> str:
        p = self.policy
        return (f"scheduler={self.scheduler} queue={p.queue or '-'} project={p.project or '-'} "
                f"max_queued={p.max_queued} nodes={p.min_nodes}..{p.max_nodes} "
                f"wall_time={p.wall_time_minutes}min mode={p.job_mode} "
                f"filter={p.wf_filter or '-'} interval={p.interval:g}s")

    def _connect(self) -> Connection:
        conn = connect(self.project)
        key = f"balsam service {self.scheduler} {self.policy.queue} {self.policy.wf_filter}"
        with wrap_db_errors():
            locked = batch_jobs.try_service_lock(conn, key)
        if not locked:
            conn.close()
            message = (f"a balsam service already runs for queue {self.policy.queue or '-'!r} "
                       f"and filter {self.policy.wf_filter or '-'!r} of this project")
            raise AlreadyExists(message)
        return conn

    def round(self, conn: Connection) -> list[dict[str, Any]]:
        """Sync, then submit what the policy allows; return the submitted batch job rows."""
        batch_jobs.sync(conn, self.project, self.pm)
        with wrap_db_errors():
            claim.reap_if_allowed(conn)  # the launchers of jobs that ended are dead
        p = self.policy
        with wrap_db_errors():
            work = unclaimed_work(conn, p.wf_filter)
            waiting_jobs, waiting_nodes = batch_jobs.waiting(conn, self.scheduler, p.queue,
                                                             p.wf_filter)
        _, too_big = nodes_needed(work, p.job_mode, p.max_nodes)
        if too_big and too_big != self._warned_too_big:
            log.warning("%d runnable task(s) need more than --max-nodes %d: not submitting for "
                        "them", too_big, p.max_nodes)
        self._warned_too_big = too_big
        submitted = []
        for request in plan(p, work, waiting_jobs, waiting_nodes):
            row = submit(self.project, self.pm, request, scheduler=self.scheduler, conn=conn)
            log.info("submitted batch job %d (%s %s): %d node(s), %d min", row["id"],
                     self.scheduler, row["scheduler_id"], row["num_nodes"],
                     row["wall_time_minutes"])
            submitted.append(row)
        return submitted
