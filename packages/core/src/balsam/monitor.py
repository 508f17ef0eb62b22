"""What is happening now: launchers and their health, failures by cause, workflow progress.

The status queries the CLI and the web page share (one way to do each thing). Each function takes
an open connection and only reads; results are frozen dataclasses. The rules (when a launcher
looks dead, how long a workflow has left) are pure functions, tested without a database.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row

from balsam import liveness
from balsam.db import Connection, wrap_db_errors
from balsam.queries import q
from balsam.states import FINAL, State

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
    wf_filter: str = ""
    ended_at: datetime | None = None
    end_reason: str = ""
    #: Whose tasks it runs: its owner, balsam_admin, whom its owner trusts, its --trust.
    trusted: frozenset[str] = frozenset()
    #: Minutes until it stops (None: no limit known); it claims tasks of that much wall time.
    minutes_left: float | None = None


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
                    batch_state: str | None, batch_over: bool = True, batch_message: str = "",
                    server_uptime: float = float("inf")) -> tuple[bool, str]:
    """``(alive, suspect)`` of a launcher (the rules of :mod:`balsam.liveness`): alive while its
    row says it runs and it is not dead; ``suspect`` says why a launcher whose row says it runs
    looks dead (or may be), else it is empty."""
    if ended:
        return False, ""
    f = liveness.Facts(heartbeat_age, heartbeat_timeout, batch_state, batch_over, batch_message,
                       server_uptime)
    return not liveness.dead(f), liveness.suspect(f)


def remaining_tasks(counts: Mapping[str, int]) -> int:
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
        return conn.execute(q(name), params or {}).fetchall()


def launchers(conn: Connection, *, alive_only: bool = False) -> list[LauncherStatus]:
    """Every launcher, newest first (only the live ones with ``alive_only``)."""
    found = _statuses(conn, running_only=alive_only)
    return [lc for lc in found if lc.alive] if alive_only else found


def unended(conn: Connection) -> dict[int, LauncherStatus]:
    """The launchers whose rows say they run (alive or not), by id."""
    return {lc.id: lc for lc in _statuses(conn, running_only=True)}


def _statuses(conn: Connection, *, running_only: bool) -> list[LauncherStatus]:
    found = []
    for row in _rows(conn, "launcher_rows", {"running_only": running_only}):
        alive, suspect = launcher_health(
            ended=row["ended"], heartbeat_age=row["heartbeat_age"],
            heartbeat_timeout=row["heartbeat_timeout"], batch_state=row["batch_state"],
            batch_over=row["batch_over"], batch_message=row["batch_message"],
            server_uptime=row["server_uptime"])
        found.append(LauncherStatus(
            id=row["id"], owner=row["owner"], hostname=row["hostname"], pid=row["pid"],
            batch_job_id=row["batch_job_id"], scheduler_id=row["scheduler_id"],
            job_mode=row["job_mode"], num_nodes=row["num_nodes"],
            started_at=row["started_at"], heartbeat_age=row["heartbeat_age"], alive=alive,
            suspect=suspect, running=row["running"], wf_filter=row["wf_filter"],
            ended_at=row["ended_at"], end_reason=row["end_reason"],
            trusted=frozenset(row["trusted"]), minutes_left=row["minutes_left"]))
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


# --- why a task does not run ---------------------------------------------------------------------

#: States a launcher starts from (a task waiting in one of them for nodes).
WAITING_FOR_NODES = (State.READY, State.STAGED_IN, State.PREPROCESSED, State.RESTART_READY)


def unrunnable(workflow: str, num_nodes: int, ranks_per_node: int,
               live: Sequence[LauncherStatus], needs: Sequence[tuple[str, str]] = (), *,
               wall_time_minutes: int = 0) -> str:
    """Why no live launcher can run a task waiting for nodes, or "" if one could. ``needs``:
    the users a launcher must trust to run it, each with why (see :func:`trust_needs`)."""
    live = [lc for lc in live if lc.alive]
    if not live:
        return "no launcher alive"
    serving = [lc for lc in live if not lc.wf_filter or lc.wf_filter in workflow]
    if not serving:
        filters = ", ".join(sorted({lc.wf_filter for lc in live}))
        return f"workflow {workflow or '(none)'}: no live launcher serves it (they run {filters})"
    big = [lc for lc in serving if lc.num_nodes >= num_nodes]
    if not big:
        most = max(lc.num_nodes for lc in serving)
        return f"needs {num_nodes} nodes; the live launchers have at most {most}"
    fit = [lc for lc in big if lc.job_mode == "mpi" or (num_nodes == 1 and ranks_per_node == 1)]
    if not fit:
        return (f"needs MPI ({num_nodes} node(s) x {ranks_per_node} ranks); the live launchers "
                f"serving it run in serial mode")
    lasting = [lc for lc in fit if lc.minutes_left is None
               or wall_time_minutes <= int(lc.minutes_left)]  # as a claim compares them
    if not lasting:
        left = max(lc.minutes_left or 0.0 for lc in fit)
        return (f"needs {wall_time_minutes} min of wall time; the live launchers that could run "
                f"it stop within {left:.1f} min")
    return distrusted(needs, lasting)


def trust_needs(owner: str, changed_by: str, app: str, app_changed_by: str
                ) -> list[tuple[str, str]]:
    """Whom a launcher must trust to run a task (the claims' rule), each with why."""
    return [(owner, f"owned by {owner}"), (changed_by, f"changed by {changed_by}"),
            (app_changed_by, f"its app {app} was changed by {app_changed_by}")]


def distrusted(needs: Sequence[tuple[str, str]], launchers: Sequence[LauncherStatus]) -> str:
    """Why none of ``launchers`` trusts every user of ``needs`` (see :func:`trust_needs`), or
    "" if one does: "no running launcher trusts bob" (with why bob counts when he is not the
    owner), or "no running launcher trusts all of alice, bob"."""
    users = list(dict.fromkeys(user for user, _ in needs))
    if not users or any(set(users) <= lc.trusted for lc in launchers):
        return ""
    nobody = [u for u in users if not any(u in lc.trusted for lc in launchers)]
    if not nobody:
        return f"no running launcher trusts all of {', '.join(users)}"
    text = f"no running launcher trusts {', '.join(nobody)}"
    why = [w for u, w in needs[1:] if u in nobody and u != needs[0][0]]
    return f"{'; '.join(dict.fromkeys(why))}: {text}" if why else text


# --- the rows of balsam ls ------------------------------------------------------------------------

def tasks(conn: Connection, columns: Sequence[str], *, filters: dict[str, Any],
          limit: int | None = None, chunk: int = 2000) -> Generator[tuple[Any, ...]]:
    """The rows of ``balsam ls`` (the given columns of its query ``monitor_tasks``), in id
    order, streamed through a server-side cursor: the first row comes at once and memory holds
    one chunk. ``filters`` are resolved ones (ids, workflow, states, name, app_id). Close the
    generator (``contextlib.closing``) when stopping early: that ends the cursor."""
    select = sql.SQL(", ").join(map(sql.Identifier, columns))
    stmt = sql.SQL(q("monitor_tasks")).format(columns=select)
    params = {"ids": None, "workflow": None, "states": None, "name": None, "app_id": None,
              **filters, "limit": limit}
    with wrap_db_errors(), conn.transaction(), \
            conn.cursor(name="balsam_ls", row_factory=tuple_row) as cur:
        cur.itersize = chunk
        cur.execute(stmt, params)
        yield from cur
