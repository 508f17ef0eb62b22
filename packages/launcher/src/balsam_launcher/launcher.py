"""The launcher: one per batch job, it claims tasks, takes each through its life on the job's
nodes, and records every step in the shared database, surviving server restarts.

One thread owns the database connection and the processes; a small thread pool runs the slow,
database-free steps (stage-in, pre- and post-processing scripts). The main loop sleeps in one
``select`` on task pidfds (a task ended), the connection (NOTIFY: new work or a kill), a wake-up
pipe (signals, finished scripts) and timers (heartbeat, polling fallback, kill deadlines). Only
tasks whose situation changed are looked at, so a launcher of thousands of nodes stays cheap.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import selectors
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import psycopg

from balsam import claim
from balsam.db import Connection, connect, translate
from balsam.errors import BalsamError, ClaimLost, InvalidInput
from balsam.models import App, Task
from balsam.project import Project, current_user
from balsam.queries import query
from balsam.resources import Node, Resources
from balsam.states import State
from balsam_launcher import detect, fence, lease, policy, steps
from balsam_launcher.agent import AgentPool, AgentRun
from balsam_launcher.process import Run, spawn
from balsam_launcher.transitions import after_script, move_times, next_step

S = State
log = logging.getLogger("balsam.launcher")

#: Channels the launcher listens on: runnable work appeared, a user killed tasks.
TASKS_CHANNEL, KILL_CHANNEL = "balsam_tasks", "balsam_kill"
#: How often the launcher compares what it holds with the database (kills without NOTIFY).
RECONCILE_SECONDS = 2.0
#: While starting a large batch, write what is pending at least this often (seconds). Starts
#: come first (a node waiting for a database round trip is idle); the times written are those
#: of the starts, however late they are written.
FLUSH_SECONDS = 0.25
#: ``always``: run serial-mode tasks through node agents even on this host (tests).
AGENTS_VARIABLE = "BALSAM_LAUNCHER_AGENTS"


@dataclass
class Options:
    """What ``balsam launcher`` was asked to do."""

    job_mode: str = "mpi"
    wf_filter: str = ""
    wf_substring: bool = False
    consume_all: bool = False
    time_limit_minutes: float | None = None
    nodes: int | None = None
    batch_job_id: int | None = None
    #: Others presume this launcher dead after this long without a heartbeat.
    heartbeat_timeout: float = 60.0
    #: Look for work this often even when no NOTIFY arrives.
    poll_interval: float = 5.0
    #: Extra runs of a task that exits non-zero and has no error handler.
    max_retries: int = 0
    #: Seconds between SIGTERM and SIGKILL when stopping a task.
    kill_grace: float = 3.0
    #: Threads for stage-in and pre- and post-processing scripts.
    workers: int = 4
    script_timeout: float = steps.SCRIPT_TIMEOUT

    @property
    def heartbeat_interval(self) -> float:
        return max(0.2, min(10.0, self.heartbeat_timeout / 4))


@dataclass
class Held:
    """A task this launcher holds, and where it is in its life."""

    task: Task
    app: App
    parent_ids: list[int]
    nodes: list[Node] = field(default_factory=list)
    run: Run | None = None
    #: State changes to write, in order (to RUNNING: a run was started).
    pending: list[tuple[State, str]] = field(default_factory=list)
    #: Give the claim back once ``pending`` is written (nothing left to do).
    release_after: bool = False
    #: How the run ended; written once the RUNNING state is.
    outcome: tuple[State, str] | None = None
    #: When the last run's process was started and its exit seen (epoch seconds): the times
    #: written with the moves into and out of RUNNING, however late they are written.
    started_at: float | None = None
    ended_at: float | None = None
    #: A script ran: re-read the state, which the script may have changed from this one.
    recheck: State | None = None
    working: bool = False
    #: Why the task is no longer ours to advance (killed, lost, done): its claim is given back.
    dropped: str | None = None


class Launcher:
    """``Launcher(project, options, pm).run()`` returns the exit status."""

    def __init__(self, project: Project, options: Options, pm: pluggy.PluginManager) -> None:
        self.project = project
        self.options = options
        self.pm = pm
        self.wf_filter = claim.WorkflowFilter(options.wf_filter, options.wf_substring)
        self.resources, self.allocation = detect.resources(options.job_mode, options.nodes)
        self.id = 0
        self.conn: Connection | None = None
        self.db_fd: int | None = None
        self.held: dict[int, Held] = {}
        self.runs: dict[int, Run] = {}
        self.apps: dict[int, App] = {}
        self.dirty: set[int] = set()  # to advance
        self.pending: set[int] = set()  # with a state change to write
        self.exited: set[int] = set()  # pidfd readable
        self.to_release: set[int] = set()
        self.rechecks: set[int] = set()  # a script ran: re-read the state
        self.stopping: str | None = None
        self.dead = False
        self.exit_code = 0
        self.want_claim = self.want_post = True
        self.max_packing = 1
        self.results: queue.SimpleQueue[tuple[int, str, Future[Any]]] = queue.SimpleQueue()
        self.cancel = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="step")
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.wake_r = self.wake_w = self.old_wakeup_fd = -1
        self.old_handlers: dict[int, Any] = {}
        self.log_path: Path | None = None
        self.agents: AgentPool | None = None
        self.static_info: dict[str, Any] = {}
        # Private scratch space on the launcher's host, removed at exit (per-task MPI session
        # directories: Open MPI races when several mpiruns of one user share /tmp/ompi.*).
        self.scratch = Path(tempfile.mkdtemp(prefix="balsam-launcher-"))
        now = time.monotonic()
        self.deadline = (now + options.time_limit_minutes * 60
                         if options.time_limit_minutes is not None else None)
        self.next_heartbeat = self.next_reconcile = self.next_poll = now
        self.next_done_check = self.next_reconnect = now
        self.reconnect_delay = 0.2

    # --- life ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Register, work until told to stop (or out of work with ``consume_all``), clean up."""
        os.umask(self.project.umask)
        _raise_fd_limit()
        self._connect()
        try:
            self.id = self._register()
        except BaseException:
            self._close_conn()
            raise
        self._open_log()
        log.info("launcher %s started: %s mode, %d node(s) on %s (%s%s), filter %r", self.id,
                 self.options.job_mode, self.resources.num_nodes, socket.gethostname(),
                 self.allocation.scheduler, ", simulated" if self.resources.simulated else "",
                 self.options.wf_filter)
        try:
            self._setup_wakeups()
            self._start_agents()
            while not self._finished():
                self._iterate()
        except BaseException:
            self.stopping = self.stopping or "crashed"
            log.exception("launcher %s crashed", self.id)
            raise
        finally:
            self._shutdown()
        return self.exit_code

    def stop(self, reason: str) -> None:
        """Stop claiming, stop running tasks (they become RUN_TIMEOUT) and scripts, then exit."""
        if self.stopping is not None:
            return
        self.stopping = reason
        log.info("launcher %s stopping: %s", self.id, reason)
        self.cancel.set()
        for run in self.runs.values():
            run.stop("stop", self.options.kill_grace)

    def _register(self) -> int:
        try:
            row = claim.register_launcher(
                self._db(), job_mode=self.options.job_mode, num_nodes=self.resources.num_nodes,
                wf_filter=self.options.wf_filter, batch_job_id=self.options.batch_job_id,
                heartbeat_timeout=self.options.heartbeat_timeout, pid=fence.host_pid())
        except psycopg.errors.ForeignKeyViolation:
            message = f"no batch job {self.options.batch_job_id} in this project"
            raise InvalidInput(message) from None
        except psycopg.Error as exc:
            raise translate(exc) from exc
        return int(row["id"])

    def _open_log(self) -> None:
        self.log_path = self.project.log_dir / f"launcher_{self.id}.log"
        handler = logging.FileHandler(self.log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    def _setup_wakeups(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.old_wakeup_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.old_handlers = {sig: signal.signal(sig, self._on_signal)
                             for sig in (signal.SIGTERM, signal.SIGINT)}
        self._listen()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _wake(self) -> None:
        try:
            os.write(self.wake_w, b"w")
        except BlockingIOError:
            pass

    def _finished(self) -> bool:
        return self.stopping is not None and not self.runs and not any(
            h.working for h in self.held.values())

    def _shutdown(self) -> None:
        if self.wake_w >= 0:
            signal.set_wakeup_fd(self.old_wakeup_fd)
        for sig, handler in self.old_handlers.items():
            signal.signal(sig, handler)
        self.cancel.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        for run in self.runs.values():  # only after a crash: the loop waits for its runs
            run.stop("stop", 0)
            run.tick(time.monotonic())
            if not run.remote:
                run.popen.wait()
            run.close()
        if self.agents is not None:
            self.agents.close()
        if not self.dead:
            self._record_end()
        log.info("launcher %s ended: %s", self.id, self.stopping)
        self._close_conn()
        self.selector.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        for handler in list(log.handlers):
            if isinstance(handler, logging.FileHandler):
                handler.close()
                log.removeHandler(handler)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _record_end(self) -> None:
        """Write the last state changes, give back every claim and mark the launcher ended;
        retried for a while if the server is down (the reaper recovers the tasks otherwise)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.conn is None:
                    self._connect()
                try:
                    self._progress()
                finally:
                    released = claim.end_launcher(self.conn, self.id, self.stopping or "ended")
                break
            except (psycopg.OperationalError, BalsamError) as exc:
                if isinstance(exc, psycopg.OperationalError) and not (
                        _disconnected(self.conn, exc) or _rolled_back(exc)):
                    log.error("cannot record the end: %s", _first_line(exc))
                    return
                self._close_conn()
                if time.monotonic() > deadline:
                    log.error("database unreachable (%s): leaving the tasks to the reaper",
                              _first_line(exc))
                    return
                log.warning("cannot record the end yet: %s", _first_line(exc))
                time.sleep(1)
        if released:
            log.info("released %d task(s) on exit", len(released))

    # --- one turn of the loop ------------------------------------------------------------------

    def _iterate(self) -> None:
        for key, _ in self.selector.select(self._wait_time()):
            if key.data == "wake":
                _drain(self.wake_r)
            elif isinstance(key.data, int):
                self.exited.add(key.data)
            elif isinstance(key.data, tuple):
                self._agent_message(key.data[1])
        now = time.monotonic()
        self._check_signals()
        if not self.dead and (lease.lapsed() or lease.expired(now)):
            self._fenced()
        if self.deadline is not None and now >= self.deadline:
            self.stop("time limit reached")
        self._collect_exits(now)
        self._collect_work()
        if self.conn is None and now >= self.next_reconnect:
            self._reconnect(now)
        if self.conn is not None and not self.dead:
            try:
                self._sync(now)
            except psycopg.OperationalError as exc:
                if _disconnected(self.conn, exc):
                    self._db_lost(exc)
                elif _rolled_back(exc):
                    # A deadlock with another launcher (both releasing shared children): nothing
                    # was written, and the next turn sends it all again.
                    log.warning("database transaction rolled back, retrying: %s",
                                _first_line(exc))
                else:
                    raise
            except ClaimLost as exc:
                self._presumed_dead(exc)

    def _wait_time(self) -> float:
        if self.conn is not None and (self.pending or self.dirty or self.to_release or (
                self.want_claim and self.stopping is None and self._capacity() > 0)):
            return 0.0
        now = time.monotonic()
        times = [self.next_heartbeat, self.next_reconcile, self.next_poll]
        if self.conn is None:
            times.append(self.next_reconnect)
        if self.deadline is not None:
            times.append(self.deadline)
        for run in self.runs.values():
            if run.kill_at is not None:
                times.append(run.kill_at)
            if run.pidfd is None and not run.remote:
                times.append(now + 0.1)
        return max(0.0, min(times) - now)

    def _check_signals(self) -> None:
        while self.signals:
            name = signal.Signals(self.signals.pop(0)).name
            if self.stopping is None:
                self.stop(f"received {name}")
            else:  # a second signal: no more grace
                for run in self.runs.values():
                    run.kill_at = time.monotonic()

    def _sync(self, now: float) -> None:
        self._drain_notifies()
        if now >= self.next_heartbeat:
            self._heartbeat(now)
        if now >= self.next_reconcile:
            self._reconcile(now)
        # Claim first: nodes freed by tasks that just ended get their next tasks one round trip
        # sooner, and the ends and the starts are written together.
        self._claim(now)
        self._progress()
        if self.options.consume_all and self.stopping is None and not self.held \
                and now >= self.next_done_check:
            self.next_done_check = now + 0.5
            if not claim.work_remaining(self._db(), self.id, self.resources,
                                        wf_filter=self.wf_filter,
                                        max_wall_minutes=self._remaining_minutes()):
                self.stop("no work left")

    # --- the database connection ---------------------------------------------------------------

    def _db(self) -> Connection:
        assert self.conn is not None
        return self.conn

    def _connect(self) -> None:
        """Connect with durable commits, listening on TASKS_CHANNEL and KILL_CHANNEL."""
        self.conn = connect(self.project)
        self.conn.execute(query("balsam", "launcher_session"))

    def _listen(self) -> None:
        self.db_fd = self._db().fileno()
        self.selector.register(self.db_fd, selectors.EVENT_READ, "db")

    def _close_conn(self) -> None:
        if self.db_fd is not None:
            self.selector.unregister(self.db_fd)
            self.db_fd = None
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
            self.conn = None

    def _db_lost(self, exc: Exception) -> None:
        log.warning("database connection lost (%s): tasks keep running; reconnecting",
                    _first_line(exc))
        self._close_conn()
        self.next_reconnect = time.monotonic()
        self.reconnect_delay = 0.2

    def _reconnect(self, now: float) -> None:
        try:
            self._connect()
            self._listen()
        except (BalsamError, psycopg.Error) as exc:
            self._close_conn()
            self.next_reconnect = now + self.reconnect_delay
            self.reconnect_delay = min(5.0, self.reconnect_delay * 2)
            log.debug("reconnect failed: %s", _first_line(exc))
            return
        log.info("reconnected to the database")
        self.want_claim = self.want_post = True
        self.next_heartbeat = self.next_reconcile = now  # prove we live, check what we hold

    def _drain_notifies(self) -> None:
        for note in self._db().notifies(timeout=0):
            if note.channel == TASKS_CHANNEL:
                self.want_claim = self.want_post = True
            elif note.channel == KILL_CHANNEL:
                for word in note.payload.replace(",", " ").split():
                    if word.isdigit() and int(word) in self.held:
                        self._drop(self.held[int(word)], "user")

    def _heartbeat(self, now: float) -> None:
        conn = self._db()
        sent_at = time.monotonic()
        claim.heartbeat(conn, self.id)
        lease.renewed(sent_at)
        if self.agents is not None:
            self.agents.renew(lease.expiry(sent_at, self.options.heartbeat_timeout)
                              - time.monotonic())
        self.next_heartbeat = now + self.options.heartbeat_interval
        reaped = claim.reap_dead(conn)
        if reaped["launchers"]:
            log.warning("reaped launcher(s) %s presumed dead: %d task(s) recovered",
                        reaped["launchers"], len(reaped["tasks"]))
            self.want_claim = self.want_post = True

    def _reconcile(self, now: float) -> None:
        """Compare what we hold with what the database says we hold: stop what was taken from
        us or killed, and give back claims we do not know about (a claim committed just before a
        connection dropped, whose answer we never got)."""
        self.next_reconcile = now + RECONCILE_SECONDS
        owned = claim.owned(self._db(), self.id)
        for tid, held in list(self.held.items()):
            if held.dropped:
                continue
            if tid not in owned:
                self._drop(held, "lost")
            elif owned[tid] == S.USER_KILLED:
                self._drop(held, "user")
        unknown = [tid for tid in owned if tid not in self.held]
        if unknown:
            rows = claim.recover_unknown(self._db(), self.id, unknown)
            log.warning("gave back %d claim(s) this launcher did not know it held: %s",
                        len(rows), ", ".join(f"{r['id']} ({r['state']})" for r in rows))

    def _presumed_dead(self, exc: ClaimLost) -> None:
        log.error("%s", exc)
        self.exit_code = 1
        self.dead = True
        self.stopping = self.stopping or "presumed dead"
        self.cancel.set()
        for held in self.held.values():
            held.dropped = held.dropped or "lost"
        for run in self.runs.values():
            run.stop("lost", 0)

    def _fenced(self) -> None:
        """Our lease ran out (no heartbeat committed in time): our fence is killing our tasks.
        Stop as if presumed dead (no more writes); once the fence says every process is gone,
        give the claims back if they are still ours, as the reaper would."""
        self._presumed_dead(ClaimLost(f"launcher {self.id}: its lease lapsed and its fence "
                                      "killed its tasks"))
        now = time.monotonic()
        for run in self.runs.values():
            run.tick(now)
        if self.conn is None or not lease.confirmed(within=2.0):
            return  # the reaper recovers them
        try:
            recovered = claim.abandon(self.conn, self.id, "lease lapsed")
            log.warning("gave back %d task(s) to run again", len(recovered))
        except ClaimLost as exc:
            log.error("%s", exc)
        except psycopg.Error as exc:
            log.warning("cannot give the tasks back (%s): the reaper will", _first_line(exc))

    # --- claiming ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The launcher settings hooks see."""
        if not self.static_info:
            self.static_info = {
                "id": self.id, "job_mode": self.options.job_mode,
                "wf_filter": self.options.wf_filter, "num_nodes": self.resources.num_nodes,
                "hostname": socket.gethostname(), "simulated": self.resources.simulated,
                "scheduler": self.allocation.scheduler, "owner": current_user(),
                "scratch": str(self.scratch),
            }
        return {**self.static_info, "remaining_minutes": self._remaining_minutes()}

    def _remaining_minutes(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - time.monotonic()) / 60)

    def _policy(self, candidates: list[Task], resources: Resources) -> Sequence[Task]:
        self.max_packing = max([self.max_packing, *(t.node_packing_count for t in candidates)])
        try:
            chosen = self.pm.hook.select_tasks(candidates=candidates, resources=resources,
                                               launcher=self.info())
        except Exception:
            log.exception("a select_tasks plugin failed; using the default policy")
            chosen = None
        if chosen is None:
            chosen = policy.largest_first(candidates, resources.copy())
        return chosen

    def _capacity(self) -> int:
        """How many more tasks could start now, at most."""
        if self.resources.job_mode == "mpi":
            return self.resources.idle_nodes
        return int(self.resources.free_share * self.max_packing)

    def _claim(self, now: float) -> bool:
        if self.stopping is not None:
            return False
        polled = now >= self.next_poll
        if polled:
            self.next_poll = now + self.options.poll_interval
        got = False
        capacity = self._capacity()
        if capacity > 0 and (self.want_claim or polled):
            placed = claim.claim_for_run(
                self._db(), self.id, self.resources, self._policy, wf_filter=self.wf_filter,
                limit=2 * capacity + 16, max_wall_minutes=self._remaining_minutes())
            self.want_claim = bool(placed)
            if placed:
                self._adopt(placed, with_nodes=True)
                got = True
        room = 4 * self.options.workers - sum(1 for h in self.held.values() if not h.nodes)
        if room > 0 and (self.want_post or polled):
            tasks = claim.claim_for_post(self._db(), self.id, limit=room, wf_filter=self.wf_filter)
            self.want_post = bool(tasks)
            if tasks:
                self._adopt(tasks, with_nodes=False)
                got = True
        return got

    def _adopt(self, claimed: list[claim.Claimed], *, with_nodes: bool) -> None:
        missing = sorted({c.task.app_id for c in claimed if c.task.app_id not in self.apps})
        if missing:
            for row in self._db().execute(query("balsam", "apps_by_id"), {"ids": missing}):
                self.apps[row["id"]] = App.from_row(row)
        for c in claimed:
            task = c.task
            assert task.id is not None and task.app_id is not None
            held = Held(task, self.apps[task.app_id], c.parent_ids)
            self.held[task.id] = held
            self.dirty.add(task.id)
            if with_nodes:
                nodes = self.resources.allocate(task)
                if nodes is None:  # cannot happen: the claim planned on a copy of these nodes
                    self._drop(held, "no room")
                else:
                    held.nodes = nodes
        log.info("claimed %d task(s)%s: %s", len(claimed), "" if with_nodes else " to finish",
                 _ids(c.task.id for c in claimed))

    def _parents(self, tid: int) -> list[steps.Parent]:
        """The parents of a task with their working directories (for stage-in)."""
        rows = self._db().execute(query("balsam", "parents_of"), {"ids": [tid]})
        return [steps.Parent(r["id"], self.project.workdir(Task.from_row(r).workdir))
                for r in rows]

    # --- advancing tasks -----------------------------------------------------------------------

    def _progress(self) -> None:
        """Advance every changed task as far as it goes without waiting, then write every step
        in one round trip (and every FLUSH_SECONDS while starting a large batch, so that the
        database learns of each run soon after it began)."""
        for _ in range(8):
            self._recheck()
            todo, self.dirty = list(self.dirty), set()
            flush_at = time.monotonic() + FLUSH_SECONDS
            try:
                while todo:
                    tid = todo.pop()
                    if tid in self.held:
                        self._advance(self.held[tid])
                    if self.pending and time.monotonic() >= flush_at:
                        self._flush()
                        flush_at = time.monotonic() + FLUSH_SECONDS
            finally:  # a failed write (connection lost, rolled back): the rest wait their turn
                self.dirty.update(todo)
            if not self._flush():
                break

    def _advance(self, held: Held) -> None:
        if held.pending or held.working or held.dropped or held.recheck or held.run:
            return
        chain: list[tuple[State, str]] = []
        if held.outcome:  # the run is over: record how, once its start is recorded
            if held.task.state != S.RUNNING:
                return
            chain, held.outcome = [held.outcome], None
        elif self.stopping is not None:
            return
        self._plan(held, chain)

    def _plan(self, held: Held, chain: list[tuple[State, str]]) -> None:
        """Extend ``chain`` with every state change that needs no waiting (they are written
        together); with none to write, take the next step (start, stage-in, a script, release)."""
        state = chain[-1][0] if chain else held.task.state
        step = None
        if self.stopping is None:
            for _ in range(8):
                step = next_step(held.task, held.app, state=state, has_nodes=bool(held.nodes),
                                 has_parents=bool(held.parent_ids),
                                 max_retries=self.options.max_retries)
                if step is None or step[0] != "move":
                    break
                chain.append(step[1])
                state = step[1][0]
        kind = step[0] if step is not None else None
        if kind == "start":  # start now; the chain is written with the start, after it
            self._start(held, chain)
        elif chain:
            self._write(held, chain, release_after=kind == "release")
        elif kind == "release":
            self._drop(held, "done")
        elif kind is not None:
            self._submit(held, kind)

    def _write(self, held: Held, chain: list[tuple[State, str]], *,
               release_after: bool = False) -> None:
        assert held.task.id is not None
        held.pending, held.release_after = chain, release_after
        self.pending.add(held.task.id)

    def _flush(self) -> bool:
        """Write every pending chain of state changes and give back released tasks, in one
        round trip: moves grouped by (position in chain, from, to). True if anything was sent."""
        if not self.pending and not self.to_release:
            return False
        layers: list[dict[tuple[State, State], claim.Move]] = []
        for tid in self.pending:
            held = self.held[tid]
            src = held.task.state
            times = move_times(src, held.pending, held.started_at, held.ended_at)
            for i, ((dst, message), at) in enumerate(zip(held.pending, times, strict=True)):
                if i == len(layers):
                    layers.append({})
                move = layers[i].setdefault((src, dst), claim.Move(src, dst, {}, {}))
                move.messages[tid] = message
                move.at[tid] = at
                src = dst
        moves = [move for layer in layers for move in layer.values()]
        finishing = {tid for tid in self.pending if self.held[tid].release_after}
        releasing = self.to_release | finishing
        done, _ = claim.apply(self._db(), self.id, moves, releasing)
        reached: dict[int, list[State]] = defaultdict(list)
        for move, ids in zip(moves, done, strict=True):
            for tid in ids:
                reached[tid].append(move.to_state)
            if ids:
                log.info("%s -> %s: %s", move.from_state, move.to_state, _ids(ids))
        pending, self.pending = self.pending, set()
        for tid in pending:
            held = self.held[tid]
            wanted = [dst for dst, _ in held.pending]
            got = reached.get(tid, [])
            held.pending = []
            if got:
                held.task.state = got[-1]
                held.task.attempts += S.RUNNING in got
            if got != wanted:
                finishing.discard(tid)
                self._drop(held, "lost")
            else:
                self.dirty.add(tid)
        self.to_release -= releasing
        for tid in releasing:
            self._forget(tid)
        return True

    def _forget(self, tid: int) -> None:
        """The task's claim was given back: it is no longer ours at all."""
        self._free_nodes(tid)
        self.held.pop(tid, None)
        self.dirty.discard(tid)

    def _recheck(self) -> None:
        """After a script ran: adopt the state it set, or apply the default if it set none."""
        waiting = {tid: self.held[tid] for tid in self.rechecks
                   if tid in self.held and not self.held[tid].dropped}
        self.rechecks = set()
        if not waiting:
            return
        rows = self._db().execute(query("balsam", "task_states"), {"ids": list(waiting)})
        current = {r["id"]: r for r in rows}
        for tid, held in waiting.items():
            before, held.recheck = held.recheck, None
            row = current.get(tid)
            if row is None or row["launcher_id"] != self.id:
                self._drop(held, "lost")
            elif row["state"] == before:
                self._plan(held, [after_script(before)])
            else:
                held.task.state = S(row["state"])
                self.dirty.add(tid)
                log.info("task %s: its script set %s", tid, row["state"])

    def _drop(self, held: Held, reason: str) -> None:
        """Stop advancing a task: stop its process, then give the claim back (if still ours)."""
        if held.dropped:
            return
        assert held.task.id is not None
        held.dropped, held.pending = reason, []
        self.pending.discard(held.task.id)
        if reason == "user":
            log.info("task %s was killed by a user: stopping it", held.task.id)
        elif reason == "lost":
            log.warning("task %s is no longer held by this launcher: stopping it", held.task.id)
        if held.run:
            held.run.stop(reason, self.options.kill_grace)
        elif not held.working:
            self.to_release.add(held.task.id)

    # --- processes -----------------------------------------------------------------------------

    def _start(self, held: Held, chain: list[tuple[State, str]]) -> None:
        """Start the task's run, then write ``chain`` (the formal steps before it) and RUNNING."""
        task = held.task
        assert task.id is not None
        workdir = self.project.workdir(task.workdir)
        own_env = self._task_env(held)
        hosts = ",".join(dict.fromkeys(n.name or n.host for n in held.nodes))
        held.started_at = time.time()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            argv = steps.app_command(held.app, task)
            if self.options.job_mode == "mpi":
                argv = self.pm.hook.mpi_command(task=task, command=argv, nodes=held.nodes,
                                                env=own_env, launcher=self.info())
                if not argv:
                    message = "the mpi_command hook returned no command"
                    raise InvalidInput(message)
            if held.app.envscript:
                argv = steps.with_envscript(held.app.envscript, argv)
            output = steps.output_path(workdir, task)
            agents = self.agents
            if agents is not None and held.nodes[0].index in agents.served:
                run: Run | AgentRun = agents.start(task.id, held.nodes[0], argv, workdir,
                                                   own_env, output)
            else:
                run = spawn(task.id, argv, cwd=workdir, env={**os.environ, **own_env},
                            output=output)
        except (OSError, InvalidInput) as exc:
            detail = (f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError)
                      and exc.strerror else str(exc))
            held.outcome, held.ended_at = (S.RUN_ERROR, f"cannot start: {detail}"), time.time()
            self._write(held, [*chain, (S.RUNNING, f"starting on {hosts}")])
            self._free_nodes(task.id)
            return
        held.run = self.runs[task.id] = run  # type: ignore[assignment]
        where = ("through its node agent" if run.remote
                 else f"pid {fence.host_pid_for(run.pid, run.pidfd)}")
        self._write(held, [*chain, (S.RUNNING, f"{where} on {hosts}")])
        if run.pidfd is not None:
            self.selector.register(run.pidfd, selectors.EVENT_READ, task.id)

    def _start_agents(self) -> None:
        """Serial mode on other hosts: one agent per such node, started by one MPI launch."""
        if self.options.job_mode != "serial":
            return
        always = os.environ.get(AGENTS_VARIABLE) == "always"
        if self.resources.simulated and not always:
            return
        where = {host: detect.is_remote(host) for host in {n.host for n in self.resources.nodes}}
        unknown = sorted(h for h, remote in where.items() if remote is None)
        if unknown:
            log.warning("node name(s) %s do not resolve: their tasks run on this host",
                        ", ".join(unknown))
        nodes = [n for n in self.resources.nodes if always or where[n.host]]
        if not nodes:
            return
        self.agents = AgentPool(nodes)
        output = self.project.log_dir / f"agents_{self.id}.out"
        self.agents.launch(self.pm.hook.mpi_command, self.info(), output)
        for sock, agent in self.agents.sockets():
            self.selector.register(sock, selectors.EVENT_READ, ("agent", agent))
        log.info("%d node agent(s) started", len(nodes))

    def _agent_message(self, agent: Any) -> None:
        assert self.agents is not None
        try:
            self.exited.update(self.agents.receive(agent))
        except BalsamError as exc:  # a node died: its tasks are lost, and so is this launcher
            self.selector.unregister(agent.sock)
            for run in list(self.agents.runs.values()):
                if run.agent is agent:
                    run.returncode, run.error = -9, str(exc)
                    self.exited.add(run.task_id)
            log.error("%s", exc)
            self.stop(str(exc))

    def _task_env(self, held: Held, **extra: str) -> dict[str, str]:
        env = steps.task_env(held.task, project_root=self.project.root, launcher=self.id,
                             job_mode=self.options.job_mode, num_nodes=self.resources.num_nodes,
                             parent_ids=held.parent_ids)
        env.update(extra)
        return env

    def _collect_exits(self, now: float) -> None:
        watch = self.exited | {tid for tid, r in self.runs.items()
                               if (r.pidfd is None and not r.remote) or r.kill_at is not None}
        self.exited = set()
        for tid in watch:
            run = self.runs.get(tid)
            if run is None:
                continue
            run.tick(now)
            rc = run.poll()
            if rc is not None:
                self._ended(self.held[tid], run, rc, now)

    def _ended(self, held: Held, run: Run, rc: int, now: float) -> None:
        tid = run.task_id
        if run.pidfd is not None:
            self.selector.unregister(run.pidfd)
        run.close()
        del self.runs[tid]
        held.run, held.ended_at = None, time.time()
        self._free_nodes(tid)
        if held.dropped:
            self.to_release.add(tid)
            return
        elapsed = now - run.started
        if run.stopping == "stop":
            held.outcome = (S.RUN_TIMEOUT, f"stopped after {elapsed:.1f}s: {self.stopping}")
        elif run.error:
            held.outcome = (S.RUN_ERROR, f"cannot start: {run.error}")
        elif rc == 0:
            held.outcome = (S.RUN_DONE, f"exit 0 after {elapsed:.1f}s")
        else:
            why = f"killed by {_signal_name(-rc)}" if rc < 0 else f"exit {rc}"
            detail = steps.tail(run.output)
            held.outcome = (S.RUN_ERROR, f"{why}: {detail}" if detail else why)
        self.dirty.add(tid)

    def _free_nodes(self, tid: int) -> None:
        held = self.held.get(tid)
        if held is not None and held.nodes:
            self.resources.release(tid)
            held.nodes = []
            self.want_claim = True

    # --- scripts and stage-in (worker threads) ---------------------------------------------------

    def _submit(self, held: Held, kind: str) -> None:
        task = held.task
        assert task.id is not None
        workdir = self.project.workdir(task.workdir)
        fn: Callable[[], Any]
        if kind == "stage_in":
            parents = self._parents(task.id)  # before `working`: this may lose the connection

            def fn() -> Any:
                return steps.stage_in(task, workdir, parents)
        else:
            command, header, extra = {
                "preprocess": (held.app.preprocess, "preprocess", {}),
                "postprocess": (held.app.postprocess, "postprocess", {}),
                "error_handler": (held.app.postprocess, "error handler",
                                  {"BALSAM_TASK_ERROR": "1", "BALSAM_JOB_ERROR": "TRUE"}),
                "timeout_handler": (held.app.postprocess, "timeout handler",
                                    {"BALSAM_TASK_TIMEOUT": "1", "BALSAM_JOB_TIMEOUT": "TRUE"}),
            }[kind]
            env = {**os.environ, **self._task_env(held, **extra)}
            logfile = workdir / ("preprocess.log" if kind == "preprocess" else "postprocess.log")

            def fn() -> Any:
                return steps.run_script(command, cwd=workdir, env=env, log=logfile,
                                        header=header, cancel=self.cancel,
                                        timeout=self.options.script_timeout)
        tid = task.id
        held.working = True

        def done(future: Future[Any]) -> None:
            self.results.put((tid, kind, future))
            self._wake()

        self.pool.submit(fn).add_done_callback(done)

    def _collect_work(self) -> None:
        while True:
            try:
                tid, kind, future = self.results.get_nowait()
            except queue.Empty:
                return
            held = self.held[tid]
            held.working = False
            self.dirty.add(tid)
            if held.dropped:
                self.to_release.add(tid)
                continue
            try:
                result = future.result()
            except InvalidInput as exc:
                self._plan(held, [(S.FAILED, str(exc))])
                continue
            except Exception as exc:  # a bug or an OS error in a step: fail the task, not us
                log.exception("task %s: %s failed", tid, kind)
                self._plan(held, [(S.FAILED, f"{kind} failed: {exc}")])
                continue
            if kind == "stage_in":
                self._plan(held, [(S.STAGED_IN, result)])
            elif result.returncode is None:
                self._drop(held, "stopped")
            elif not result.ok:
                self._plan(held, [(S.FAILED, result.detail)])
            elif kind == "preprocess":
                self._plan(held, [(S.PREPROCESSED, result.detail)])
            else:
                held.recheck = held.task.state
                self.rechecks.add(tid)


# --- small helpers -----------------------------------------------------------------------------


def _raise_fd_limit() -> None:
    """One pidfd per running task: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, 65536) if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _ids(ids: Iterable[Any]) -> str:
    ordered = sorted(ids)
    shown = ", ".join(str(i) for i in ordered[:20])
    return shown + (f" ... ({len(ordered)} in all)" if len(ordered) > 20 else "")


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _disconnected(conn: Connection | None, exc: psycopg.OperationalError) -> bool:
    """Whether an error means the connection is gone (not a failed statement)."""
    if conn is None or conn.closed or conn.broken:
        return True
    return (exc.sqlstate or "").startswith(("08", "57P"))


def _rolled_back(exc: psycopg.OperationalError) -> bool:
    """Whether the server rolled the transaction back (SQLSTATE class 40: a deadlock or a
    serialization failure), so that sending it again may well succeed."""
    return (exc.sqlstate or "").startswith("40")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
