"""What is happening now: launchers and their health, failures by cause, workflow progress.

The status queries the CLI and the web page share (one way to do each thing). Each function takes
an open connection and only reads; results are frozen dataclasses. The rules (when a launcher
looks dead, how long a workflow has left) are pure functions, tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from balsam.db import Connection, wrap_db_errors
from balsam.queries import query
from balsam.states import FINAL, State

#: Batch job states after which none of its launchers can still be running.
BATCH_ENDED = ("finished", "failed", "cancelled")
#: A heartbeat older than this fraction of the launcher's timeout is reported as late.
LATE_FRACTION = 0.5
#: Throughput behind the time-to-finish estimate: tasks finished over this many seconds.
RATE_WINDOW = 3600
#: How many task ids each failure group gives as examples.
SAMPLE = 5
_ORDER = {s.value: i for i, s in enumerate(State)}


@dataclass(frozen=True)
class LauncherStatus:
    """One launcher as a monitor sees it; ``suspect`` says why a running one looks dead."""

    id: int
    owner: str
    hostname: str
    pid: int
    batch_job_id: int | None
    scheduler_id: str | None
    job_mode: str
    num_nodes: int
    started_at: datetime
    heartbeat_age: float
    alive: bool
    suspect: str
    running: int


@dataclass(frozen=True)
class FailureGroup:
    """Failures with the same cause (exit code or signal, and the last line of output)."""

    cause: str
    count: int
    latest_at: datetime
    task_ids: tuple[int, ...]


@dataclass(frozen=True)
class WorkflowProgress:
    """A workflow's tasks per state, its recent throughput and when it should be done."""

    workflow: str
    counts: dict[str, int]
    finished_last_hour: int
    eta_seconds: float | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def remaining(self) -> int:
        """Tasks not yet in a final state (finished, failed or killed)."""
        return remaining_tasks(self.counts)


def launcher_health(*, ended: bool, heartbeat_age: float, heartbeat_timeout: float,
                    batch_state: str | None) -> tuple[bool, str]:
    """``(alive, suspect)`` of a launcher: alive while its row says it runs, its heartbeat is
    within its timeout and its batch job has not ended; ``suspect`` says why a launcher whose row
    says it runs looks dead (or is about to), else it is empty."""
    if ended:
        return False, ""
    if batch_state in BATCH_ENDED:
        return False, f"its batch job is {batch_state} but the launcher never recorded its end"
    if heartbeat_age > heartbeat_timeout:
        return False, (f"no heartbeat for {heartbeat_age:.0f}s "
                       f"(timeout {heartbeat_timeout:.0f}s): presumed dead")
    if heartbeat_age > LATE_FRACTION * heartbeat_timeout:
        return True, (f"heartbeat late: {heartbeat_age:.0f}s ago "
                      f"(timeout {heartbeat_timeout:.0f}s)")
    return True, ""


def remaining_tasks(counts: dict[str, int]) -> int:
    """How many of these tasks are not in a final state."""
    return sum(n for state, n in counts.items() if state not in FINAL)


def eta_seconds(remaining: int, finished_recently: int,
                window: float = RATE_WINDOW) -> float | None:
    """Seconds to finish ``remaining`` tasks at the pace of the last ``window`` seconds: 0 when
    nothing remains, None when nothing finished lately (no pace to go by)."""
    if remaining <= 0:
        return 0.0
    if finished_recently <= 0:
        return None
    return remaining * window / finished_recently


def _rows(conn: Connection, name: str,
          params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with wrap_db_errors():
        return conn.execute(query("balsam", name), params or {}).fetchall()  # type: ignore[arg-type]


def launchers(conn: Connection, *, alive_only: bool = False) -> list[LauncherStatus]:
    """Every launcher, newest first (only the live ones with ``alive_only``)."""
    found = []
    for row in _rows(conn, "launcher_rows", {"running_only": alive_only}):
        alive, suspect = launcher_health(ended=row["ended"], heartbeat_age=row["heartbeat_age"],
                                         heartbeat_timeout=row["heartbeat_timeout"],
                                         batch_state=row["batch_state"])
        if alive or not alive_only:
            found.append(LauncherStatus(
                id=row["id"], owner=row["owner"], hostname=row["hostname"], pid=row["pid"],
                batch_job_id=row["batch_job_id"], scheduler_id=row["scheduler_id"],
                job_mode=row["job_mode"], num_nodes=row["num_nodes"],
                started_at=row["started_at"], heartbeat_age=row["heartbeat_age"], alive=alive,
                suspect=suspect, running=row["running"]))
    return found


def failures_by_cause(conn: Connection, *, since: datetime | None = None,
                      workflow: str | None = None) -> list[FailureGroup]:
    """Failures since ``since`` (ever if None), of one workflow or all, most frequent cause
    first. See ``monitor.sql`` for what counts as a failure and how its cause is read."""
    params = {"since": since, "workflow": workflow, "sample": SAMPLE}
    return [FailureGroup(r["cause"], r["count"], r["latest_at"], tuple(r["task_ids"]))
            for r in _rows(conn, "failures_by_cause", params)]


def workflow_progress(conn: Connection) -> list[WorkflowProgress]:
    """Each workflow's tasks per state, tasks finished in the last hour and the time left at
    that pace, by workflow name."""
    counts: dict[str, dict[str, int]] = {}
    for row in _rows(conn, "workflow_state_counts"):
        counts.setdefault(row["workflow"], {})[row["state"]] = row["tasks"]
    finished = {r["workflow"]: r["finished"]
                for r in _rows(conn, "workflow_finished_recently", {"seconds": RATE_WINDOW})}
    return [WorkflowProgress(wf, dict(sorted(by_state.items(), key=lambda kv: _ORDER[kv[0]])),
                             finished.get(wf, 0),
                             eta_seconds(remaining_tasks(by_state), finished.get(wf, 0)))
            for wf, by_state in sorted(counts.items())]
