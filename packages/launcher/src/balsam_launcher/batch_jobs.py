"""The batch_jobs rows: creating them, and keeping their state in step with the scheduler.

A batch job moves pending -> submitted -> queued -> running -> finished | failed, or to
cancelled when a user kills it. The sync never moves a job backwards and never changes an ended
one; it only fills in the end time of a cancelled job once the scheduler confirms it is over.
Sources, best first: the scheduler's status command, then the launchers table (a launcher that
registered with ``--batch-job-id`` proves the job ran, and when it ended).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pluggy

from balsam.db import Connection, wrap_db_errors
from balsam.errors import InvalidInput, NotFound, PermissionDenied, SchedulerError
from balsam.project import Project
from balsam.queries import query
from balsam.scheduler import CANCELLED, ENDED, FAILED, FINISHED, QUEUED, RUNNING, JobStatus
from balsam_launcher import submitted
from balsam_launcher.schedulers import available

log = logging.getLogger(__name__)

PENDING, SUBMITTED = "pending", "submitted"
#: Order of the states a job passes through; a sync only moves forward.
RANK = {PENDING: 0, SUBMITTED: 1, QUEUED: 2, RUNNING: 3, FINISHED: 4, FAILED: 4, CANCELLED: 4}


def _q(name: str) -> str:
    """One named query of balsam-launcher (``sql/batch.sql``)."""
    return query("balsam_launcher", name)


# --- rows -------------------------------------------------------------------------------------


def try_service_lock(conn: Connection, key: str) -> bool:
    """Take the session lock of one service (per project, queue and filter); False if another
    service holds it."""
    row = conn.execute(_q("service_lock"), {"key": key}).fetchone()
    return bool(row and row["locked"])


def waiting(conn: Connection, scheduler: str, queue: str, wf_filter: str) -> tuple[int, int]:
    """``(jobs, nodes)`` of this queue and filter whose launcher has not started claiming."""
    row = conn.execute(_q("batch_waiting"), {"scheduler": scheduler, "queue": queue,
                                             "wf_filter": wf_filter}).fetchone()
    return (int(row["jobs"]), int(row["nodes"])) if row else (0, 0)


def create(conn: Connection, scheduler: str, fields: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(_q("batch_create"), {"scheduler": scheduler, **fields}).fetchone()
    assert row is not None
    return row


def set_script(conn: Connection, job_id: int, script_path: str) -> None:
    conn.execute(_q("batch_set_script"), {"id": job_id, "script_path": script_path})


def delete(conn: Connection, job_id: int) -> None:
    conn.execute(_q("batch_delete_pending"), {"id": job_id})


def mark_submitted(conn: Connection, job_id: int, scheduler_id: str) -> dict[str, Any]:
    row = conn.execute(_q("batch_mark_submitted"),
                       {"id": job_id, "scheduler_id": scheduler_id}).fetchone()
    assert row is not None
    return row


def get(conn: Connection, job_id: int) -> dict[str, Any]:
    row = conn.execute(_q("batch_get"), {"id": job_id}).fetchone()
    if row is None:
        message = f"no batch job {job_id}"
        raise NotFound(message)
    return row


def list_jobs(conn: Connection, *, include_ended: bool = False) -> list[dict[str, Any]]:
    """Batch jobs in id order: unfinished ones, or all with ``include_ended``."""
    return conn.execute(_q("batch_list"), {"all": include_ended}).fetchall()


# --- reconciling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Launchers:
    """What the launchers table says about one batch job."""

    count: int = 0
    alive: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None


@dataclass(frozen=True)
class Update:
    state: str
    message: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


def reconcile(row: dict[str, Any], status: JobStatus | None, launchers: Launchers,
              now: datetime) -> Update | None:
    """The change a sync makes to one batch job row, or None.

    :param row: the batch_jobs row (state, state_message, started_at, ended_at, scheduler_id).
    :param status: what the scheduler says, or None if it does not know the job.
    :param launchers: what the launchers of this job recorded.
    """
    state = row["state"]
    started: datetime | None
    ended: datetime | None
    if state in (FINISHED, FAILED):
        return None
    if state == CANCELLED:
        if row["ended_at"] is not None:
            return None
        if status is not None and status.state in ENDED:
            ended = status.ended_at or launchers.last_end or now
        elif status is None and row["scheduler_id"] and not launchers.alive:
            ended = launchers.last_end or now
        else:
            return None
        return Update(CANCELLED, row["state_message"], status.started_at if status else None,
                      ended)
    if status is not None:
        new = status.state
        message = status.message
        started = status.started_at
        ended = status.ended_at
        if new == QUEUED and launchers.count:
            new, message = RUNNING, ""  # the scheduler's view lags the launcher's
        if new in ENDED and ended is None:
            ended = launchers.last_end or now
    elif launchers.alive:
        new, message, started, ended = RUNNING, "", None, None
    elif launchers.count:  # forgotten by the scheduler, its launchers all done
        new, message, started, ended = FINISHED, "", None, launchers.last_end
    elif row["scheduler_id"]:
        new = FAILED
        message = f"the scheduler no longer knows job {row['scheduler_id']} and no launcher ran"
        started, ended = None, now
    else:
        return None  # still being submitted, or its submission crashed before any record
    if new in (RUNNING, *ENDED) and started is None:
        started = launchers.first_start
    if RANK[new] < RANK[state] or (new == state and message == row["state_message"]
                                   and (started is None or row["started_at"] is not None)):
        return None
    return Update(new, message, started, ended)


def sync(conn: Connection, project: Project, pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Bring every unfinished batch job's state up to date; return the rows that changed.

    A scheduler that cannot be asked (command missing, server down) is skipped with a warning,
    so its jobs keep their state rather than being taken for vanished.
    """
    with wrap_db_errors():
        rows = conn.execute(_q("batch_to_sync")).fetchall()
        if not rows:
            return []
        summary = {r["batch_job_id"]: Launchers(r["launchers"], r["alive"], r["first_start"],
                                                r["last_end"])
                   for r in conn.execute(_q("batch_launchers"),
                                         {"ids": [r["id"] for r in rows]}).fetchall()}
    by_scheduler: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_scheduler[row["scheduler"]].append(row)
    schedulers = available(pm)
    changed = []
    for name, jobs in by_scheduler.items():
        try:
            if name not in schedulers:
                message = f"scheduler {name!r} is not installed"
                raise SchedulerError(message)
            ids = [j["scheduler_id"] for j in jobs if j["scheduler_id"]]
            statuses = schedulers[name](project).status(ids)
        except SchedulerError as exc:
            log.warning("cannot update %d %s job(s): %s", len(jobs), name, exc)
            continue
        now = datetime.now(UTC)
        for row in jobs:
            update = reconcile(row, statuses.get(row["scheduler_id"] or ""),
                               summary.get(row["id"], Launchers()), now)
            if update is None:
                continue
            with wrap_db_errors():
                new = conn.execute(_q("batch_update_state"), {
                    "id": row["id"], "old_state": row["state"], "state": update.state,
                    "message": update.message, "started_at": update.started_at,
                    "ended_at": update.ended_at}).fetchone()
            if new is not None:
                changed.append(new)
    return changed


# --- cancelling -------------------------------------------------------------------------------


def cancel(conn: Connection, project: Project, pm: pluggy.PluginManager, job_id: int, *,
           force: bool = False) -> dict[str, Any]:
    """Ask the scheduler to stop a batch job and mark it cancelled.

    Only the (database) user who submitted a job can cancel it, and only a scheduler id in their
    private record of what the scheduler gave them (:mod:`balsam_launcher.submitted`): the row
    is shared, the record is not. A graceful cancel lets the launcher mark its running tasks
    RUN_TIMEOUT; ``force`` kills outright.
    """
    with wrap_db_errors():
        row = get(conn, job_id)
        me = conn.execute(_q("batch_whoami")).fetchone()
    user = me["user"] if me else ""
    if row["owner"] != user:
        message = f"batch job {job_id} belongs to {row['owner']}; only they can cancel it"
        raise PermissionDenied(message)
    if row["state"] not in (PENDING, SUBMITTED, QUEUED, RUNNING):
        message = f"batch job {job_id} is already {row['state']}"
        raise InvalidInput(message)
    if row["scheduler_id"]:
        submitted.require(project, row["scheduler"], row["scheduler_id"], job_id)
        schedulers = available(pm)
        if row["scheduler"] not in schedulers:
            message = f"batch job {job_id} uses scheduler {row['scheduler']!r}, not installed"
            raise InvalidInput(message)
        schedulers[row["scheduler"]](project).cancel(row["scheduler_id"], force=force)
    how = "killed" if force else "cancelled"
    with wrap_db_errors():
        new = conn.execute(_q("batch_cancel"),
                           {"id": job_id, "message": f"{how} by {user}"}).fetchone()
    return new or get(conn, job_id)
