"""Exactly-once claiming: launchers, heartbeats, reaping the dead and claim-checked updates.

A task belongs to the launcher in ``tasks.launcher_id``. Claims lock candidates with
``FOR NO KEY UPDATE SKIP LOCKED`` (concurrent launchers never wait for each other and never get the
same task), let a policy choose, and mark exactly the chosen ones in the same transaction. Every
later update of a task checks the claim, so a launcher presumed dead cannot overwrite a task that
was claimed since by another.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from balsam import liveness
from balsam.db import Connection
from balsam.errors import ClaimLost, InvalidInput
from balsam.models import App, Task, validate_user_name
from balsam.project import ADMIN_ROLE
from balsam.queries import q
from balsam.resources import Node, Resources
from balsam.states import RUNNABLE, State

#: Runnable states that need nodes (stage-in and preprocess happen once the nodes are held).
RUN_STATES: frozenset[State] = frozenset(
    {State.READY, State.STAGED_IN, State.PREPROCESSED, State.RESTART_READY})
#: Runnable states whose run is over: post-processing and error or timeout handling.
POST_STATES: frozenset[State] = RUNNABLE - RUN_STATES

#: Any larger wall time means "no limit" in the claim queries.
NO_LIMIT_MINUTES = 2**31 - 1

Policy = Callable[[list[Task], Resources], Sequence[Task] | None]


@dataclass
class Claimed:
    """A task a claim gave this launcher: the nodes it was placed on (none for post-processing),
    the ids of its parents, and its app as read in the claim's transaction (None if it could
    not be: removed meanwhile)."""

    task: Task
    nodes: list[Node]
    parent_ids: list[int]
    app: App | None = None


@dataclass(frozen=True)
class WorkflowFilter:
    """Which workflows a launcher serves: all, one exactly, or any containing a substring."""

    value: str = ""
    substring: bool = False

    def params(self) -> dict[str, str | None]:
        if not self.value:
            return {"workflow": None, "workflow_part": None}
        if self.substring:
            return {"workflow": None, "workflow_part": self.value}
        return {"workflow": self.value, "workflow_part": None}


# --- launchers ---------------------------------------------------------------------------------


def register_launcher(conn: Connection, *, job_mode: str, num_nodes: int, wf_filter: str = "",
                      batch_job_id: int | None = None, heartbeat_timeout: float = 60.0,
                      hostname: str | None = None, pid: int | None = None,
                      trust: Sequence[str] = (), stops_at: float | None = None
                      ) -> dict[str, Any]:
    """Insert this launcher's row (its heartbeat starts now) and return it. ``trust``: the
    users its ``--trust`` option names, and ``stops_at``: when it stops (epoch seconds; None:
    no limit known), recorded for others to see."""
    row = conn.execute(q("register_launcher"), {
        "batch_job_id": batch_job_id, "hostname": hostname or socket.gethostname(),
        "pid": pid or os.getpid(), "job_mode": job_mode, "wf_filter": wf_filter,
        "num_nodes": num_nodes, "heartbeat_timeout": heartbeat_timeout,
        "trust": sorted(set(trust)), "stops_at": stops_at,
    }).fetchone()
    assert row is not None
    return row


def heartbeat(conn: Connection, launcher: int) -> None:
    """Prove this launcher is alive; ClaimLost if it has been presumed dead (or has ended)."""
    if conn.execute(q("heartbeat"), {"launcher": launcher}).fetchone() is None:
        message = f"launcher {launcher} was presumed dead: its tasks belong to others now"
        raise ClaimLost(message)


def end_launcher(conn: Connection, launcher: int, reason: str) -> list[dict[str, Any]]:
    """Release every task the launcher still holds and mark it ended; returns the released."""
    with conn.transaction():
        released = conn.execute(q("release_all_tasks"), {"launcher": launcher}).fetchall()
        conn.execute(q("end_launcher"), {"launcher": launcher, "reason": reason})
    return released


def abandon(conn: Connection, launcher: int, why: str) -> list[dict[str, Any]]:
    """End a live launcher that gives up every claim (its fence killed its tasks): they are
    recovered as the reaper would (RUNNING tasks restart or time out, "launcher N <why>").
    ClaimLost if it has ended already (others may hold its tasks now)."""
    with conn.transaction():
        ended = conn.execute(q("end_launcher"), {"launcher": launcher, "reason": why})
        if ended.fetchone() is None:
            message = f"launcher {launcher} was presumed dead: its tasks belong to others now"
            raise ClaimLost(message)
        return _recover(conn, {launcher: why})


def _recover(conn: Connection, whys: Mapping[int, str],
             ids: list[int] | None = None) -> list[dict[str, Any]]:
    """recover_claims: the claims of each launcher of ``whys`` (only ``ids`` if given)."""
    return conn.execute(q("recover_claims"), {
        "launchers": list(whys), "whys": list(whys.values()), "ids": ids}).fetchall()


def facts(row: Mapping[str, Any]) -> liveness.Facts:
    """A launcher's liveness facts from a row of ``unended_launchers``."""
    return liveness.Facts(
        heartbeat_age=row["heartbeat_age"], heartbeat_timeout=row["heartbeat_timeout"],
        batch_state=row["batch_state"], batch_over=row["batch_over"],
        batch_message=row["batch_message"], server_uptime=row["server_uptime"])


def reap_dead(conn: Connection) -> dict[str, Any]:
    """End the launchers :func:`balsam.liveness.dead` finds dead (silent past their timeout, or
    their batch job ended) and recover their tasks.

    RUNNING tasks become RESTART_READY (or RUN_TIMEOUT when they have a timeout handler or no
    automatic retry); tasks in other states are simply unclaimed. Claims still held by a
    launcher that has ended are recovered the same way. Safe to call from anywhere, any number
    of times at once.
    """
    with conn.transaction():
        verdicts = [(r["id"], why, None if liveness.batch_ended(f) else r["heartbeat_at"])
                    for r in conn.execute(q("unended_launchers")).fetchall()
                    for f in [facts(r)] for why in [liveness.dead(f)] if why]
        whys: dict[int, str] = {}
        if verdicts:
            ids, reasons, seen = (list(c) for c in zip(*verdicts, strict=True))
            whys = {r["id"]: f"presumed dead: {r['reason']}" for r in conn.execute(
                q("mark_dead_launchers"), {"ids": ids, "reasons": reasons, "seen": seen})}
        recovered = _recover(conn, whys) if whys else []
        # Belt and braces: claims an ended launcher still holds (written around the protocol).
        ended = {r["id"]: "had ended"
                 for r in conn.execute(q("ended_launchers_with_claims"), {}).fetchall()}
        if ended:
            recovered += _recover(conn, ended)
    return {"launchers": list(whys), "tasks": recovered}


def reap_if_allowed(conn: Connection) -> dict[str, Any] | None:
    """:func:`reap_dead` for any tool that connects (every command reaps the dead); a viewer,
    who may not write, reaps nothing (None)."""
    try:
        return reap_dead(conn)
    except psycopg.errors.InsufficientPrivilege:
        return None


def trusted_users(conn: Connection, extra: Iterable[str] = ()) -> list[str]:
    """Whose tasks a launcher of this session's user may run: that user, balsam_admin, the users
    they trust in the project (``balsam trust``) and ``extra`` (the launcher's ``--trust``). The
    claim queries apply the list, as does the SQL function ``balsam_untrusted(trusted, owner,
    changed_by, app_id)`` (which says why) and :func:`untrusted` (on rows already read)."""
    names = [validate_user_name(n) for n in extra]
    row = conn.execute(q("trusted_by_session_user")).fetchone()
    assert row is not None
    return sorted({row["me"], ADMIN_ROLE, *row["trustees"], *names})


def unknown_users(conn: Connection, names: Iterable[str]) -> list[str]:
    """Which of ``names`` are no user of the server, sorted (InvalidInput for a malformed
    name)."""
    wanted = sorted({validate_user_name(n) for n in names})
    known = {r["rolname"] for r in conn.execute(q("login_roles"), {"names": wanted})}
    return [n for n in wanted if n not in known]


def require_users(conn: Connection, names: Iterable[str], option: str = "--trust") -> None:
    """InvalidInput (one line, naming ``option``) unless every name is a user of the server."""
    names = list(names)
    unknown = unknown_users(conn, names) if names else []  # no round trip for none
    if unknown:
        message = (f"{option} {unknown[0]}: no such user in this project's database (the owner "
                   f"adds users with: balsam server --add-user NAME)")
        raise InvalidInput(message)


def untrusted(task: Task, app: App, trusted: Collection[str]) -> str | None:
    """Why a launcher trusting ``trusted`` must not run ``task`` with ``app`` (as read), or None
    if it may: the rule of the claim queries, applied again to what the launcher would execute
    (an app may have changed between the claim and its reading, a trust may have been
    withdrawn since). Says it as ``balsam_untrusted`` does."""
    if task.owner not in trusted:
        return f"owned by {task.owner}"
    if task.changed_by not in trusted:
        return f"changed by {task.changed_by}"
    if app.changed_by not in trusted:
        return f"its app {app.name} was changed by {app.changed_by}"
    return None


# --- claiming ----------------------------------------------------------------------------------


def _check_live(cursor: Any, launcher: int) -> None:
    if cursor.fetchone() is None:
        message = f"launcher {launcher} has ended or was presumed dead: it cannot claim tasks"
        raise ClaimLost(message)


def claim_for_run(conn: Connection, launcher: int, resources: Resources, policy: Policy, *,
                  wf_filter: WorkflowFilter = WorkflowFilter(), limit: int = 64,
                  max_wall_minutes: float | None = None,
                  trusted: Sequence[str] | None = None) -> list[Claimed]:
    """Claim tasks to start now on the free ``resources`` (which this call does not change).

    Only tasks whose owner, last changer and app's last changer are all in ``trusted`` are
    candidates (default: :func:`trusted_users` of the session's user, one more round trip; a
    launcher passes the list it holds). Locks up to ``limit`` unclaimed candidates, asks
    ``policy`` which to start (in start order),
    places them first-fit on a copy of the free nodes, and claims exactly those that fit with
    their apps, all in one transaction (two round trips: lock and read, then claim, read the
    apps and commit). Allocate the returned tasks in this order on the real resources to get the
    same nodes. ClaimLost if the launcher has ended or was presumed dead.
    """
    max_nodes = resources.idle_nodes if resources.job_mode == "mpi" else (
        1 if resources.free_share > 0 else 0)
    if max_nodes == 0 or limit <= 0:
        return []
    max_wall = NO_LIMIT_MINUTES if max_wall_minutes is None else int(max(0, max_wall_minutes))
    trusted = trusted_users(conn) if trusted is None else list(trusted)
    with conn.pipeline(), conn.transaction():
        live = conn.execute(q("lock_live_launcher"), {"launcher": launcher})
        found = conn.execute(q("lock_run_candidates"), {
            **wf_filter.params(), "max_nodes": max_nodes, "limit": limit,
            "serial": resources.job_mode == "serial", "max_wall_minutes": max_wall,
            "trusted": trusted,
            "max_gpus": resources.max_gpus,
        })
        _check_live(live, launcher)
        rows = found.fetchall()
        if not rows:
            return []
        candidates = [Task.from_row(r) for r in rows]
        parents = {r["id"]: r["parent_ids"] for r in rows}
        chosen = policy(list(candidates), resources.copy()) or []
        by_id = {t.id: t for t in candidates}
        unique = list({t.id: by_id[t.id] for t in chosen if t.id in by_id}.values())
        placed = resources.copy().pack(unique)
        if not placed:
            return []
        marked = _mark(conn, launcher, [t for t, _ in placed])
    claimed, apps = marked()
    return [Claimed(t, nodes, parents[t.id], apps.get(t.app_id))  # type: ignore[arg-type]
            for t, nodes in placed if t.id in claimed]


def claim_for_post(conn: Connection, launcher: int, *, limit: int,
                   wf_filter: WorkflowFilter = WorkflowFilter(),
                   trusted: Sequence[str] | None = None) -> list[Claimed]:
    """Claim up to ``limit`` unclaimed tasks whose run is over (post-processing, error and
    timeout handling); no nodes are needed. Only trusted tasks, as :func:`claim_for_run`."""
    if limit <= 0:
        return []
    trusted = trusted_users(conn) if trusted is None else list(trusted)
    with conn.pipeline(), conn.transaction():
        live = conn.execute(q("lock_live_launcher"), {"launcher": launcher})
        found = conn.execute(q("lock_post_candidates"), {**wf_filter.params(), "limit": limit,
                                                         "trusted": trusted})
        _check_live(live, launcher)
        rows = found.fetchall()
        if not rows:
            return []
        tasks = [Task.from_row(r) for r in rows]
        marked = _mark(conn, launcher, tasks)
    claimed, apps = marked()
    parents = {r["id"]: r["parent_ids"] for r in rows}
    return [Claimed(t, [], parents[t.id], apps.get(t.app_id))  # type: ignore[arg-type]
            for t in tasks if t.id in claimed]


def _mark(conn: Connection, launcher: int,
          tasks: Sequence[Task]) -> Callable[[], tuple[set[int], dict[int, App]]]:
    """Send the claim of ``tasks`` and the read of their apps (in a pipeline: no round trip of
    their own); the returned call gives the ids claimed and the apps, once the pipeline synced."""
    marked = conn.execute(q("claim_tasks"), {"launcher": launcher, "ids": [t.id for t in tasks]})
    apps = conn.execute(q("apps_by_id"), {"ids": list({t.app_id for t in tasks})})

    def result() -> tuple[set[int], dict[int, App]]:
        return ({r["id"] for r in marked.fetchall()},
                {r["id"]: App.from_row(r) for r in apps.fetchall()})

    return result


# --- claim-checked updates ---------------------------------------------------------------------


def move(conn: Connection, launcher: int, from_state: State, to_state: State,
         messages: dict[int, str], at: Mapping[int, float | None] | None = None) -> set[int]:
    """Move the launcher's tasks ``from_state -> to_state`` (one message each; ``at``: when
    each change happened, in epoch seconds, where the database's clock would be wrong).

    Returns the ids moved. A task missing from the result is no longer this launcher's, or is no
    longer in ``from_state`` (a user killed it): the caller must drop it. See :func:`require`.
    """
    if not messages:
        return set()
    return apply(conn, launcher, [Move(from_state, to_state, messages, dict(at or {}))])[0][0]


@dataclass(frozen=True)
class Move:
    """One batched, claim-checked transition: ``from_state -> to_state`` with a message each,
    and, for some tasks, when it happened (epoch seconds; the others get the database's clock)."""

    from_state: State
    to_state: State
    messages: dict[int, str]
    at: dict[int, float | None] = field(default_factory=dict)

    def params(self, launcher: int) -> dict[str, Any]:
        ids = list(self.messages)
        return {"launcher": launcher, "ids": ids, "messages": [self.messages[i] for i in ids],
                "ats": [self.at.get(i) for i in ids], "from_state": self.from_state.value,
                "to_state": self.to_state.value}


def apply(conn: Connection, launcher: int, moves: Sequence[Move],
          release_ids: Iterable[int] = ()) -> tuple[list[set[int]], set[int]]:
    """Write ``moves`` in order, then release ``release_ids``, in one round trip and one
    transaction: all or nothing, so a retry after an error resends the whole batch. Moves into
    RUNNING count an attempt (:func:`mark_running`).

    Returns the ids each move reached and the ids released; see :func:`move` for what a missing
    id means.
    """
    release_ids = list(release_ids)
    with conn.pipeline(), conn.transaction():
        cursors = []
        for m in moves:
            name = "mark_running" if m.to_state == State.RUNNING else "move_tasks"
            cursors.append(conn.execute(q(name), m.params(launcher)))
        released = (conn.execute(q("release_tasks"), {"launcher": launcher, "ids": release_ids})
                    if release_ids else None)
    done = [{r["id"] for r in c.fetchall()} for c in cursors]
    return done, ({r["id"] for r in released.fetchall()} if released else set())


def mark_running(conn: Connection, launcher: int, messages: dict[int, str],
                 at: Mapping[int, float | None] | None = None) -> set[int]:
    """Claim-checked PREPROCESSED/RESTART_READY -> RUNNING, counting one attempt per run."""
    if not messages:
        return set()
    start = Move(State.PREPROCESSED, State.RUNNING, messages, dict(at or {}))
    return apply(conn, launcher, [start])[0][0]


def release(conn: Connection, launcher: int, ids: Iterable[int]) -> set[int]:
    """Give up the claim on tasks (their state is left as it is); returns those released. A
    RUNNING task is never released: its run ends with its outcome or by the recovery rule
    (:func:`recover_unknown`, :func:`reap_dead`)."""
    ids = list(ids)
    if not ids:
        return set()
    return {r["id"] for r in conn.execute(q("release_tasks"), {"launcher": launcher, "ids": ids})}


def recover_unknown(conn: Connection, launcher: int, ids: Iterable[int]) -> list[dict[str, Any]]:
    """Give back claims the launcher holds in the database but not in memory, as the reaper
    would (a RUNNING one becomes RESTART_READY or RUN_TIMEOUT); returns the recovered rows."""
    ids = list(ids)
    if not ids:
        return []
    return _recover(conn, {launcher: "lost track of the run"}, ids)


def require(done: set[int], wanted: Iterable[int], launcher: int) -> None:
    """Raise ClaimLost naming the tasks of ``wanted`` that an update did not reach."""
    lost = sorted(set(wanted) - done)
    if lost:
        shown = ", ".join(str(i) for i in lost[:10]) + (" ..." if len(lost) > 10 else "")
        message = f"launcher {launcher} no longer holds task(s) {shown}"
        raise ClaimLost(message)


def held_states(conn: Connection, launcher: int,
                ids: Iterable[int]) -> dict[int, tuple[State, str, int]]:
    """Claim-checked re-read: (state, message, attempts) of the tasks of ``ids`` the launcher
    still holds (the others are missing)."""
    rows = conn.execute(q("held_states"), {"launcher": launcher, "ids": list(ids)}).fetchall()
    return {r["id"]: (State(r["state"]), r["state_message"], r["attempts"]) for r in rows}


def open_session(conn: Connection, *, listen: bool = True) -> None:
    """Make ``conn`` a launcher's: durable commits, and (``listen``) LISTEN for new work and
    kills (a connection that never reads notifications must not listen: they would pile up)."""
    conn.execute(q("launcher_session" if listen else "claim_session"))


def parents(conn: Connection, task_id: int) -> list[Task]:
    """A task's parents (id, name, workflow, user_workdir: where their files are)."""
    rows = conn.execute(q("parents_of"), {"ids": [task_id]}).fetchall()
    return [Task.from_row(r) for r in rows]


def owned(conn: Connection, launcher: int) -> dict[int, State]:
    """The tasks the database says this launcher holds, with their states."""
    rows = conn.execute(q("owned_tasks"), {"launcher": launcher}).fetchall()
    return {r["id"]: State(r["state"]) for r in rows}


@dataclass(frozen=True, order=True)
class Work:
    """Unclaimed runnable tasks of one size: what a new batch job would find."""

    num_nodes: int
    node_packing_count: int
    tasks: int


def unclaimed_work(conn: Connection, wf_filter: str = "") -> list[Work]:
    """Unclaimed runnable tasks by size, of the workflow ``wf_filter`` (``""``: every one)."""
    rows = conn.execute(q("unclaimed_work"), {"wf_filter": wf_filter}).fetchall()
    return [Work(r["num_nodes"], r["node_packing_count"], r["tasks"]) for r in rows]


def work_remaining(conn: Connection, launcher: int, resources: Resources, *,
                   wf_filter: WorkflowFilter = WorkflowFilter(),
                   max_wall_minutes: float | None = None,
                   trusted: Sequence[str] | None = None,
                   idle_for: float = float("inf")) -> bool:
    """Whether this launcher, without work for ``idle_for`` seconds, may still get work: work
    it could take now (the ``work_remaining`` query), or tasks it could take held by launchers
    not proved alive since, which may be reaped (:func:`balsam.liveness.out_of_work`). Tasks it
    does not trust are not work for it (``trusted`` as :func:`claim_for_run`)."""
    max_wall = NO_LIMIT_MINUTES if max_wall_minutes is None else int(max(0, max_wall_minutes))
    trusted = trusted_users(conn) if trusted is None else list(trusted)
    params = {**wf_filter.params(), "launcher": launcher, "max_nodes": resources.num_nodes,
              "serial": resources.job_mode == "serial", "max_wall_minutes": max_wall,
              "trusted": trusted, "max_gpus": resources.max_gpus}
    row = conn.execute(q("work_remaining"), params).fetchone()
    if row and row["remaining"]:
        return True
    with conn.pipeline():
        holding = conn.execute(q("held_elsewhere"), params)
        unended = conn.execute(q("unended_launchers"))
    held = {r["id"] for r in holding.fetchall()}
    holders = [facts(r) for r in unended.fetchall() if r["id"] in held]
    return not liveness.out_of_work(False, holders, idle_for)
