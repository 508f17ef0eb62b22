"""Every database call of the launcher: the session (a thread with its own connection) and the
claims (the loop's own connection).

The session thread serves the loop's requests first in, first out, so that an answer reflects
every write sent before it, and posts each request back answered (or failed, ``error`` set), in
the order it served them. Between requests it heartbeats (after each committed heartbeat the
lease is renewed; dead launchers are reaped) and hears NOTIFY (new work, kill hints), which it
posts as events. Writes are batched and off the loop: while they are in flight, the loop starts
processes.

Claims are not: a free node waits for its claim, so the loop makes them itself
(:class:`Claims`, synchronous, on a connection of its own), like the recovery of claims the
ledger does not know (serialised with the claims, it never gives back a task just claimed). A
request whose answer judges what the launcher holds (a reconcile) therefore carries what the
launcher knew when it was sent: a claim committed since is not in the answer, and is not judged.

Faults: a lost connection is reconnected with backoff, re-reading ``server-info`` so that a
server restarted on another port is found, and requests wait meanwhile; a transaction the server
rolled back (SQLSTATE class 40) fails its request at once, for the loop to send again; other
server errors (a full disk, too many connections...) fail it too and the session backs off;
anything else is a bug and ends the launcher (:class:`Crashed`). A launcher found presumed dead
(:class:`PresumedDead`) stops heart-beating.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pluggy
import psycopg

from balsam import claim
from balsam.claim import Policy
from balsam.contracts import LauncherInfo
from balsam.db import Connection, connect, translate
from balsam.errors import BalsamError, ClaimLost, InvalidInput
from balsam.models import Task
from balsam.project import Project
from balsam.resources import Resources
from balsam.states import State
from balsam_launcher import fence, lease, policy
from balsam_launcher.ledger import Batch, Known

log = logging.getLogger("balsam.launcher")

#: Channels the launcher listens on: runnable work appeared, a user killed tasks.
TASKS_CHANNEL, KILL_CHANNEL = "balsam_tasks", "balsam_kill"

Post = Callable[[object], None]


# --- the session's requests: each carries its answer back --------------------------------------


@dataclass(eq=False)
class Request:
    """A database call. ``error`` says why it failed ("" once answered)."""

    error: str = field(default="", init=False)

    def run(self, conn: Connection, s: Session) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Write(Request):
    """Write a batch of moves and releases (one transaction): ``reached`` the states each
    task's moves reached, ``released`` the claims given back."""

    batch: Batch
    reached: dict[int, list[State]] = field(default_factory=dict, init=False)
    released: set[int] = field(default_factory=set, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        moves = [claim.Move(*g) for g in self.batch.groups()]
        done, self.released = claim.apply(conn, s.launcher, moves, self.batch.release)
        for move, ids in zip(moves, done, strict=True):
            for tid in ids:
                self.reached.setdefault(tid, []).append(move.to_state)
            if ids:
                log.info("%s -> %s: %s", move.from_state, move.to_state, ids_text(ids))


@dataclass(eq=False)
class ReadStates(Request):
    """Re-read tasks, claim-checked: ``found`` has those still ours."""

    ids: tuple[int, ...]
    found: dict[int, Known] = field(default_factory=dict, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        self.found = {tid: Known(*row)
                      for tid, row in claim.held_states(conn, s.launcher, self.ids).items()}


@dataclass(eq=False)
class Reconcile(Request):
    """What the database says this launcher holds; ``known``: the tasks the launcher knew when
    it asked (the only ones the answer can judge)."""

    known: frozenset[int]
    owned: dict[int, State] = field(default_factory=dict, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        self.owned = claim.owned(conn, s.launcher)


@dataclass(eq=False)
class Parents(Request):
    """A task's parents, for its stage-in."""

    task_id: int
    parents: list[Task] = field(default_factory=list, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        self.parents = claim.parents(conn, self.task_id)


@dataclass(eq=False)
class WorkLeft(Request):
    """Whether this launcher may still get work (``--consume-all``): tasks it trusts."""

    resources: Resources
    max_wall_minutes: float | None
    trusted: tuple[str, ...]
    #: How long the launcher has held no task (see :func:`balsam.liveness.out_of_work`).
    idle_for: float = float("inf")
    remaining: bool = field(default=True, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        self.remaining = claim.work_remaining(conn, s.launcher, self.resources,
                                              wf_filter=s.wf_filter,
                                              max_wall_minutes=self.max_wall_minutes,
                                              trusted=self.trusted,
                                              idle_for=self.idle_for)


@dataclass(eq=False)
class End(Request):
    """Give back every claim (a RUNNING task becomes RUN_TIMEOUT) and mark the launcher ended.
    Waits for a lost connection to come back."""

    reason: str
    released: list[dict[str, Any]] = field(default_factory=list, init=False)

    def run(self, conn: Connection, s: Session) -> None:
        self.released = claim.end_launcher(conn, s.launcher, self.reason)


# --- events the session posts --------------------------------------------------------------------


@dataclass(frozen=True)
class Notified:
    channel: str
    payload: str


@dataclass(frozen=True)
class Reaped:
    launchers: list[int]
    tasks: int


@dataclass(frozen=True)
class Renewed:
    """A heartbeat committed: the lease runs from ``sent_at`` (monotonic time it was sent)."""

    sent_at: float


@dataclass(frozen=True)
class PresumedDead:
    message: str


@dataclass(frozen=True)
class Disconnected:
    pass


@dataclass(frozen=True)
class Reconnected:
    pass


@dataclass(frozen=True)
class Crashed:
    error: BaseException


# --- the session ---------------------------------------------------------------------------------


class Session:
    """The launcher's session connection and the thread that owns it."""

    def __init__(self, project: Project, post: Post, *, wf_filter: claim.WorkflowFilter,
                 heartbeat_interval: float) -> None:
        self.project = project
        self.post = post
        self.wf_filter = wf_filter
        self.heartbeat_interval = heartbeat_interval
        self.launcher = 0
        self.conn: Connection | None = None
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._dead = False
        self._next_heartbeat = 0.0
        self._reconnect_delay = 0.2
        self._backoff = 0.0

    # --- the loop's side -----------------------------------------------------------------------

    def start(self, launcher: int) -> None:
        """Serve requests from now on, after a first heartbeat (which reaps dead launchers: a
        first claim may then find their tasks)."""
        self.launcher = launcher
        self.conn = _connect(self.project, listen=True)
        self._next_heartbeat = time.monotonic()
        self._thread = threading.Thread(target=self._main, name="database", daemon=True)
        self._thread.start()

    def send(self, request: Request) -> None:
        self._requests.put(request)
        try:
            os.write(self._wake_w, b"r")
        except BlockingIOError:
            pass

    def close(self, timeout: float = 10) -> None:
        """Stop the thread (after the request it is serving) and close the connection."""
        self._closing.set()
        try:
            os.write(self._wake_w, b"c")
        except BlockingIOError:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            _close(self.conn)
            self.conn = None
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            self._wake_r = self._wake_w = -1

    # --- the thread ----------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            while not self._closing.is_set():
                if self.conn is None:
                    self._reconnect()
                elif self._backoff:
                    self._closing.wait(self._backoff)
                    self._backoff = 0.0
                elif not self._dead and time.monotonic() >= self._next_heartbeat:
                    self._guarded(self._heartbeat)
                else:
                    request = self._next_request()
                    if request is not None:
                        self._serve(request)
        except BaseException as exc:  # a bug: the launcher ends
            log.exception("the database session failed")
            self.post(Crashed(exc))

    def _next_request(self) -> Request | None:
        """The next request, waiting until one comes, a notification arrives or it is time to
        heartbeat."""
        assert self.conn is not None
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            pass
        timeout = max(0.0, self._next_heartbeat - time.monotonic()) if not self._dead else 1.0
        with selectors.DefaultSelector() as sel:
            sel.register(self._wake_r, selectors.EVENT_READ)
            sel.register(self.conn.fileno(), selectors.EVENT_READ)
            sel.select(timeout)
        _drain(self._wake_r)
        self._guarded(self._notifies)
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            return None

    def _serve(self, request: Request) -> None:
        assert self.conn is not None
        conn = self.conn
        ok = self._guarded(lambda: request.run(conn, self), request)
        if not ok and isinstance(request, End) and self.conn is None:
            self._requests.put(request)  # waits for the connection to come back
            return
        self.post(request)
        if ok:
            self._guarded(self._notifies)

    def _guarded(self, call: Callable[[], None], request: Request | None = None) -> bool:
        """Run ``call``; on a database error, say why in one line, set ``request.error`` and
        act: reconnect, back off, or (a bug) raise. True if it succeeded."""
        try:
            call()
            self._reconnect_delay = 0.2
            return True
        except ClaimLost as exc:
            if request is not None:
                request.error = str(exc)
            if not self._dead:
                self._dead = True
                self.post(PresumedDead(str(exc)))
            return False
        except psycopg.Error as exc:
            why = first_line(exc)
            if request is not None:
                request.error = why
            kind = classify(self.conn, exc)
            if kind == "lost":
                log.warning("database connection lost (%s): tasks keep running; reconnecting",
                            why)
                _close(self.conn)
                self.conn = None
                self.post(Disconnected())
            elif kind == "rolled back":
                # A deadlock with another launcher (both releasing shared children): nothing
                # was written; the loop sends it again.
                log.warning("database transaction rolled back, retrying: %s", why)
            elif kind == "server":
                self._backoff = min(10.0, max(0.5, 2 * self._backoff))
                log.warning("database error (SQLSTATE %s: %s): retrying in %.1fs", exc.sqlstate,
                            why, self._backoff)
            else:
                raise
            return False

    def _heartbeat(self) -> None:
        assert self.conn is not None
        sent = time.monotonic()
        self._next_heartbeat = sent + self.heartbeat_interval
        claim.heartbeat(self.conn, self.launcher)
        lease.renewed(sent)
        self.post(Renewed(sent))
        reaped = claim.reap_dead(self.conn)
        if reaped["launchers"]:
            self.post(Reaped(reaped["launchers"], len(reaped["tasks"])))

    def _notifies(self) -> None:
        assert self.conn is not None
        for note in self.conn.notifies(timeout=0):
            self.post(Notified(note.channel, note.payload))

    def _reconnect(self) -> None:
        try:
            # server-info again: the server may have come back on another port
            self.conn = _connect(Project.load(self.project.root), listen=True)
        except (BalsamError, psycopg.Error) as exc:
            log.debug("reconnect failed: %s", first_line(exc))
            self._closing.wait(self._reconnect_delay)
            self._reconnect_delay = min(5.0, self._reconnect_delay * 2)
            return
        log.info("reconnected to the database")
        self._next_heartbeat = time.monotonic()  # prove we live at once
        self.post(Reconnected())


# --- claims: the loop's own connection -----------------------------------------------------------


class Claims:
    """Claims and the recovery of unknown claims, made by the loop on its own connection. When
    the connection fails, claims wait (each attempt to reconnect is spaced by a backoff, and
    made only once the session is connected again: a dead server must not stall the loop).

    Claims take only the tasks of the users this launcher trusts (``trusted``: its user,
    balsam_admin, the users its user trusts in the project and those of ``--trust``), read at
    registration and again by :meth:`refresh_trust` (each poll, and after a reconnection)."""

    def __init__(self, project: Project, pm: pluggy.PluginManager, *,
                 wf_filter: claim.WorkflowFilter, trust: Sequence[str] = ()) -> None:
        self.project, self.pm, self.wf_filter = project, pm, wf_filter
        self.trust = tuple(trust)
        self.trusted: tuple[str, ...] = ()
        self.launcher = 0
        self.conn: Connection | None = None
        #: The largest node_packing_count among the candidates seen (serial mode's capacity).
        self.max_packing = 1
        self._retry_at = 0.0
        self._delay = 0.2

    def register(self, *, job_mode: str, num_nodes: int, wf_filter: str,
                 batch_job_id: int | None, heartbeat_timeout: float,
                 stops_at: float | None = None) -> int:
        """Connect and register the launcher (``stops_at``: when it stops, epoch seconds)."""
        self.conn = _connect(self.project, listen=False)
        try:
            claim.require_users(self.conn, self.trust)
            self.trusted = tuple(claim.trusted_users(self.conn, self.trust))
            row = claim.register_launcher(
                self.conn, job_mode=job_mode, num_nodes=num_nodes, wf_filter=wf_filter,
                batch_job_id=batch_job_id, heartbeat_timeout=heartbeat_timeout,
                pid=fence.host_pid(), trust=self.trust, stops_at=stops_at)
        except psycopg.errors.ForeignKeyViolation:
            self.close()
            message = f"no batch job {batch_job_id} in this project"
            raise InvalidInput(message) from None
        except psycopg.Error as exc:
            self.close()
            raise translate(exc) from exc
        except BalsamError:
            self.close()
            raise
        self.launcher = int(row["id"])
        return self.launcher

    def refresh_trust(self) -> tuple[str, ...]:
        """Read the users this launcher trusts again (a trust withdrawn since stops the next
        claims); keeps the last list if the database cannot say."""
        try:
            self.trusted = tuple(claim.trusted_users(self._conn(), self.trust))
        except (psycopg.Error, BalsamError) as exc:
            self._failed(exc)
        return self.trusted

    def ready(self, now: float) -> bool:
        """Whether a claim may be made now (connected, or time to try again)."""
        return self.conn is not None or now >= self._retry_at

    def lost(self) -> None:
        """The session lost its connection: so has this one, most likely."""
        _close(self.conn)
        self.conn = None
        self._retry_at = float("inf")

    def resume(self) -> None:
        """The session is connected again: reconnect at the next claim."""
        self._retry_at = 0.0

    def claim(self, resources: Resources, info: LauncherInfo, *, limit: int, post_limit: int,
              max_wall_minutes: float | None) -> tuple[list[claim.Claimed], list[claim.Claimed]]:
        """Claim tasks to run on ``resources`` (through the ``select_tasks`` hook, which sees
        ``info``) and tasks to post-process, each with its app as read in its claim (the ledger
        judges it again before it runs). ClaimLost if the launcher was presumed dead; nothing
        (and a backoff) if the database fails."""
        runs: list[claim.Claimed] = []
        posts: list[claim.Claimed] = []
        try:
            conn = self._conn()
            if limit > 0:
                runs = claim.claim_for_run(conn, self.launcher, resources, self._policy(info),
                                           wf_filter=self.wf_filter, limit=limit,
                                           max_wall_minutes=max_wall_minutes,
                                           trusted=self.trusted)
            if post_limit > 0:
                posts = claim.claim_for_post(conn, self.launcher, limit=post_limit,
                                             wf_filter=self.wf_filter, trusted=self.trusted)
        except (psycopg.Error, BalsamError) as exc:
            if isinstance(exc, ClaimLost):
                raise
            self._failed(exc)
        # what was claimed before a failure is kept
        return runs, posts

    def abandon(self, why: str) -> list[dict[str, Any]]:
        """Give every claim back at once (the fence killed our tasks); ClaimLost if we were
        presumed dead already."""
        try:
            return claim.abandon(self._conn(), self.launcher, why)
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def recover(self, ids: Iterable[int]) -> list[dict[str, Any]]:
        """Give back, by the recovery rule, claims the database says we hold and the ledger
        does not know (the caller leaves out any it learned of since asking)."""
        try:
            return claim.recover_unknown(self._conn(), self.launcher, ids)
        except (psycopg.Error, BalsamError) as exc:
            self._failed(exc)
            return []

    def close(self) -> None:
        _close(self.conn)
        self.conn = None

    def _conn(self) -> Connection:
        if self.conn is None:
            self.conn = _connect(Project.load(self.project.root), listen=False)
            self._delay = 0.2
        return self.conn

    def _failed(self, exc: BaseException) -> None:
        """Claims wait a while: the connection is gone (the session says when it is back),
        the transaction was rolled back, or the server cannot do it now."""
        kind = classify(self.conn, exc) if isinstance(exc, psycopg.Error) else "lost"
        if kind == "bug":
            raise exc
        if kind == "server":
            log.warning("database error (SQLSTATE %s: %s): claims wait %.1fs",
                        getattr(exc, "sqlstate", ""), first_line(exc), self._delay)
        elif kind == "lost":
            log.debug("claims wait: %s", first_line(exc))
            self.close()
        self._retry_at = time.monotonic() + (self._delay if kind != "rolled back" else 0.0)
        self._delay = min(5.0, 2 * self._delay)

    def _policy(self, info: LauncherInfo) -> Policy:
        def choose(candidates: list[Task], resources: Resources) -> Sequence[Task]:
            """The select_tasks hook; the default policy if a plugin fails."""
            self.max_packing = max([self.max_packing,
                                    *(t.node_packing_count for t in candidates)])
            try:
                chosen = self.pm.hook.select_tasks(candidates=candidates, resources=resources,
                                                   launcher=info)
            except Exception:
                log.exception("a select_tasks plugin failed; using the default policy")
                chosen = None
            if chosen is None:
                chosen = policy.largest_first(candidates, resources.copy())
            return chosen

        return choose


# --- helpers -------------------------------------------------------------------------------------


def _connect(project: Project, *, listen: bool) -> Connection:
    """A launcher connection: durable commits; the session's also LISTENs."""
    conn = connect(project)
    try:
        claim.open_session(conn, listen=listen)
    except BaseException:
        conn.close()
        raise
    return conn


def _close(conn: Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except psycopg.Error:
            pass


def classify(conn: Connection | None, exc: psycopg.Error) -> str:
    """``lost`` (the connection is gone), ``rolled back`` (SQLSTATE class 40: sending it again
    may well work), ``server`` (the server cannot do it now: a full disk, too many connections,
    an I/O error...) or ``bug``."""
    state = exc.sqlstate or ""
    if conn is None or conn.closed or conn.broken or state.startswith(("08", "57P")):
        return "lost"
    if state.startswith("40"):
        return "rolled back"
    if state.startswith(("53", "54", "55", "57", "58", "XX")) or (
            not state and isinstance(exc, psycopg.OperationalError)):
        return "server"
    return "bug"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def ids_text(ids: Sequence[int] | set[int]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(str(i) for i in ordered[:20])
    return shown + (f" ... ({len(ordered)} in all)" if len(ordered) > 20 else "")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
