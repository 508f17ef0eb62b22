"""The launcher: one per batch job, it claims tasks, takes each through its life on the job's
nodes, and records every step in the shared database, surviving server restarts.

Decide, then do. The :class:`~balsam_launcher.ledger.Ledger` decides (pure: events in, intents
out); around it, thin I/O: the database :class:`~balsam_launcher.session.Session` (a thread with
its own connection, requests served first in, first out) and the loop's own
:class:`~balsam_launcher.session.Claims`, the task :class:`~balsam_launcher.process.Processes`
(local and on node agents), the :class:`~balsam_launcher.steps.ScriptPool` (stage-in and
scripts in worker threads), and :class:`~balsam_launcher.runs.Runs`, which carries out a task's
steps (a run started in its working directory, a script handed to the pool). This loop feeds
their events to the ledger and carries its intents out. It claims (a free node waits for nothing
else), starts and reaps processes and runs the ledger; writes, reads and heartbeats are the
session's: while they are in flight, it starts the next tasks.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import secrets
import selectors
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pluggy

from balsam import claim, config
from balsam.contracts import LauncherInfo
from balsam.errors import BalsamError, ClaimLost, InvalidInput
from balsam.project import Project, current_user
from balsam.states import State
from balsam_launcher import detect, endtime, lease, ledger, progress, scratch, steps, workdirs
from balsam_launcher.options import Options
from balsam_launcher.process import AgentPool, Processes
from balsam_launcher.runs import Runs
from balsam_launcher.session import (
    Claims,
    Crashed,
    Disconnected,
    End,
    Notified,
    Parents,
    PresumedDead,
    ReadStates,
    Reaped,
    Reconcile,
    Reconnected,
    Renewed,
    Session,
    WorkLeft,
    Write,
    ids_text,
)

__all__ = ["Launcher", "Options"]

log = logging.getLogger("balsam.launcher")

#: How often the launcher compares what it holds with the database (kills without NOTIFY).
RECONCILE_SECONDS = 2.0
#: Writes that only record what happened (a run started, a task finished and given back) wait
#: up to this long (seconds) or until this many tasks have some, to go in one batch; writes a
#: task waits for go at once. For short tasks, a run's start and end then go in one write.
WRITE_DELAY, WRITE_BATCH = 0.1, 256
#: How long a stopping launcher waits for its last writes when the database is unreachable.
DRAIN_SECONDS = 30.0
#: ``always``: run serial-mode tasks through node agents even on this host (tests).
AGENTS_VARIABLE = "BALSAM_LAUNCHER_AGENTS"
class Launcher:
    """``Launcher(project, options, pm).run()`` returns the exit status."""

    def __init__(self, project: Project, options: Options, pm: pluggy.PluginManager) -> None:
        options.check()
        self.project = project
        self.options = options
        self.pm = pm
        self.wf_filter = claim.WorkflowFilter(options.wf_filter, options.wf_substring)
        self.resources, self.allocation = detect.resources(
            options.job_mode, options.nodes, offset=options.offset_nodes,
            limit=options.limit_nodes, gpus_per_node=options.gpus_per_node)
        # trusts nobody until registered (then: whom its user trusts, read by the claims)
        self.ledger = ledger.Ledger(max_retries=options.max_retries, trusted=())
        self.id = 0
        self.exit_code = 0
        self.log_path: Path | None = None
        self.inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.selector = selectors.DefaultSelector()
        self.processes = Processes(self.selector, options.kill_grace)
        self.pool = steps.ScriptPool(options.workers, self._post)
        self.session = Session(project, self._post, wf_filter=self.wf_filter,
                               heartbeat_interval=options.heartbeat_interval)
        self.claims = Claims(project, pm, wf_filter=self.wf_filter, trust=options.trust)
        self.todo: deque[ledger.Intent] = deque()
        self.signals: list[int] = []
        self.wake_r = self.wake_w = self.old_wakeup_fd = -1
        self.old_handlers: dict[int, Any] = {}
        self.static_info: LauncherInfo | None = None
        #: The site's MPI command line (balsam config mpi_command), read once.
        self.mpi_template: str = config.load_settings(project.root).get("mpi_command")
        # What is asked of the session and not yet answered (one of each at a time).
        self.reconciling = self.checking = False
        self.want_claim = self.want_post = True
        now = time.monotonic()
        self.limit_note = ""
        self.deadline = self._deadline(now)
        self.next_reconcile = self.next_poll = self.next_done_check = now
        #: Since when (monotonic) the launcher has held no task: ``--consume-all`` exits only
        #: once the launchers holding tasks it could take have heartbeat since.
        self.idle_since: float | None = None
        self.drain_until: float | None = None
        self.gave_up = False
        self.records_since: float | None = None  # records waiting for a batch since then
        self.trust_due = False  # read the trusted users again before the next claim
        self.ticker = progress.Ticker(terminal=sys.stderr.isatty(), start=now)
        # Private scratch space on the launcher's host, removed at exit (per-task MPI session
        # directories: Open MPI races when several mpiruns of one user share /tmp/ompi.*), and
        # those of this user's launchers that were killed here, removed now (before the first
        # heartbeat is due). Made last: nothing after it can fail.
        self.stale_scratch = scratch.remove_stale()
        self.scratch, self.scratch_lock = scratch.make()
        self.runs = Runs(options=options, pm=pm, root=os.path.normpath(str(project.root)),
                         book=self.ledger, resources=self.resources, processes=self.processes,
                         pool=self.pool, ask=self.session.send, info=self.info,
                         scratch=self.scratch)

    def _deadline(self, now: float) -> float | None:
        """When to stop (monotonic): after --time-limit-minutes, else before the scheduler ends
        the job (see balsam_launcher.endtime), else never."""
        if self.options.time_limit_minutes is not None:
            return now + self.options.time_limit_minutes * 60
        end = endtime.job_end(self.allocation.scheduler)
        if end is None:
            return None
        after = endtime.stop_after(end, time.time(), self.options.kill_grace)
        self.limit_note = (f"the {self.allocation.scheduler} job ends at {time.ctime(end)}: "
                           f"stopping {after / 60:.1f} min from now")
        return now + after

    @property
    def stopping(self) -> str | None:
        """Why the launcher stops (None while it works)."""
        return self.ledger.stopping

    # --- life ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Register, work until told to stop (or out of work with ``consume_all``), clean up."""
        os.umask(self.project.umask)
        _raise_fd_limit()
        self.id = self.claims.register(
            job_mode=self.options.job_mode, num_nodes=self.resources.num_nodes,
            wf_filter=self.options.wf_filter, batch_job_id=self.options.batch_job_id,
            heartbeat_timeout=self.options.heartbeat_timeout,
            stops_at=None if self.deadline is None
            else time.time() + self.deadline - time.monotonic())
        self.ledger.trusted = frozenset(self.claims.trusted)
        self.runs.open(steps.launcher_env(
            project_root=self.project.root, launcher=self.id, job_mode=self.options.job_mode,
            num_nodes=self.resources.num_nodes))
        self._open_log()
        log.info("launcher %s started: %s mode, %d node(s) on %s (%s%s), filter %r", self.id,
                 self.options.job_mode, self.resources.num_nodes, socket.gethostname(),
                 self.allocation.scheduler, ", simulated" if self.resources.simulated else "",
                 self.options.wf_filter)
        log.info("runs the tasks of: %s", ", ".join(self.claims.trusted))
        if self.stale_scratch:
            log.info("removed the scratch directories of %d launcher(s) of yours that died here",
                     self.stale_scratch)
        if self.limit_note:
            log.info("%s", self.limit_note)
        try:
            self._setup_wakeups()
            self.session.start(self.id)  # heartbeats from now on, even while agents start
            self._start_agents()
            while not self._finished():
                self._turn()
        except BaseException:
            self.ledger.stopping = self.ledger.stopping or "crashed"
            log.exception("launcher %s crashed", self.id)
            raise
        finally:
            self._shutdown()
        return self.exit_code

    def stop(self, reason: str) -> None:
        """Stop claiming, stop running tasks (they become RUN_TIMEOUT) and scripts, then exit."""
        if self.ledger.stopping is None:
            log.info("launcher %s stopping: %s", self.id, reason)
            self.pool.cancel()
            self._do(self.ledger.stop(reason))

    def _finished(self) -> bool:
        if self.ledger.stopping is None or self.ledger.active() or len(self.processes):
            return False
        if self.ledger.dead or self.ledger.settled():
            return True
        # No process or script left: the last writes, unless the database stays away.
        now = time.monotonic()
        if self.drain_until is None:
            self.drain_until = now + DRAIN_SECONDS
        if now < self.drain_until:
            return False
        log.error("database unreachable: leaving %d task(s) to the reaper", len(self.ledger))
        self.gave_up = True
        return True

    def _shutdown(self) -> None:
        if self.wake_w >= 0:
            signal.set_wakeup_fd(self.old_wakeup_fd)
        for sig, handler in self.old_handlers.items():
            signal.signal(sig, handler)
        self.pool.shutdown()
        self.processes.close()
        last = self.ticker.last(self._counts())
        if last is not None:
            sys.stderr.write(progress.terminal_line(last))
        if self.ticker.shown:
            print(file=sys.stderr)  # the progress line stays
        if self.id and not self.ledger.dead and not self.gave_up:
            self._end()
        log.info("launcher %s ended: %s", self.id, self.ledger.stopping)
        self.session.close()
        self.claims.close()
        self.selector.close()
        self.runs.close()
        for fd in (self.wake_r, self.wake_w):
            if fd >= 0:
                os.close(fd)
        for handler in list(log.handlers):
            if isinstance(handler, _LogFile):
                log.removeHandler(handler)
                handler.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        os.close(self.scratch_lock)

    def _end(self) -> None:
        """Give back every claim and mark the launcher ended (waiting a while for a database
        that is away: the reaper recovers the tasks otherwise)."""
        request = End(self.ledger.stopping or "ended")
        self.session.send(request)
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            try:
                event = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if event is request:
                if request.error:
                    log.error("cannot record the end: %s", request.error)
                elif request.released:
                    log.info("released %d task(s) on exit", len(request.released))
                return
        log.error("database unreachable: leaving the tasks to the reaper")

    def _open_log(self) -> None:
        name = f"launcher_{self.id}.log"
        try:
            fd = workdirs.create_log(self.project.log_dir, name)
        except FileExistsError:  # planted in advance: never written to
            planted, name = name, f"launcher_{self.id}-{secrets.token_hex(3)}.log"
            fd = workdirs.create_log(self.project.log_dir, name)
            print(f"warning: log/{planted} was there before this launcher: logging to log/{name}",
                  file=sys.stderr)
        self.log_path = self.project.log_dir / name
        handler = _LogFile(open(fd, "a", encoding="utf-8"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    def _setup_wakeups(self) -> None:
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.old_wakeup_fd = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        self.old_handlers = {sig: signal.signal(sig, self._on_signal)
                             for sig in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _post(self, event: object) -> None:
        """From any thread: an event for the loop."""
        self.inbox.put(event)
        try:
            os.write(self.wake_w, b"e")
        except (BlockingIOError, OSError):
            pass

    # --- one turn of the loop ------------------------------------------------------------------

    def _turn(self) -> None:
        for key, _ in self.selector.select(self._wait_time()):
            if key.data == "wake":
                _drain(self.wake_r)
            else:
                self._exits_from(key.data)
        now = time.monotonic()
        self._check_signals()
        if not self.ledger.dead and (lease.lapsed() or lease.expired(now)):
            self._fenced()
        if self.deadline is not None and now >= self.deadline:
            self.stop("time limit reached")
        for ended in self.processes.due(now):
            self._do(self._exited(ended))
        self._read_inbox()
        self._do()
        self._ask(now)
        self._progress(now)

    def _counts(self) -> progress.Progress:
        r, done = self.resources, self.ledger.outcomes
        return progress.Progress(
            running=self.ledger.count(*ledger.RUNS), finished=done[State.RUN_DONE],
            failed=done[State.RUN_ERROR] + done[State.RUN_TIMEOUT],
            busy_nodes=r.num_nodes - r.idle_nodes, nodes=r.num_nodes)

    def _progress(self, now: float) -> None:
        """The progress line on a terminal, and a line in the log every minute."""
        if not self.ticker.terminal and now < self.ticker.next_time():
            return  # nothing to write: no need to count
        out = self.ticker.tick(now, self._counts())
        if out.show is not None:
            sys.stderr.write(progress.terminal_line(out.show))
            sys.stderr.flush()
        if out.log is not None:
            log.info("progress: %s", out.log)

    def _wait_time(self) -> float:
        if self.todo or not self.inbox.empty():
            return 0.0
        now = time.monotonic()
        times = [self.next_reconcile, self.next_poll, self.ticker.next_time()]
        if self.deadline is not None:
            times.append(self.deadline)
        if self.drain_until is not None:
            times.append(self.drain_until)
        kill = self.processes.next_deadline(now)
        if kill is not None:
            times.append(kill)
        if self.options.consume_all and not self.ledger.tasks:
            times.append(self.next_done_check)
        if self.records_since is not None:
            times.append(self.records_since + WRITE_DELAY)
        return max(0.0, min(times) - now)

    def _check_signals(self) -> None:
        while self.signals:
            name = signal.Signals(self.signals.pop(0)).name
            if self.ledger.stopping is None:
                self.stop(f"received {name}")
            else:  # a second signal: no more grace
                self.processes.hurry()

    def _exits_from(self, data: Any) -> None:
        try:
            exits = self.processes.ready(data)
        except BalsamError as exc:  # a node agent went away: its runs are lost, and we stop
            log.error("%s", exc)
            exits = self.processes.agent_lost(data, str(exc))
            self.stop(str(exc))
        for ended in exits:
            self._do(self._exited(ended))

    def _exited(self, ended: Any) -> list[ledger.Intent]:
        return self.ledger.exited(ended.task_id, ended.at, ended.returncode,
                                  signalled=ended.signalled, error=ended.error,
                                  last_line=ended.last_line)

    def _read_inbox(self) -> None:
        """Apply each event to the ledger whole, then carry out what it asks (carrying out a
        start reads the inbox again: an event half applied would be seen half done)."""
        while True:
            try:
                event = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._do(self._event(event))

    def _ask(self, now: float) -> None:
        """Claim for free nodes (first: a node waits for nothing else), then send the session
        what is due: the queued writes, a reconcile, a check for work left."""
        self._do(self._claim(now))
        self._send_writes()
        if now >= self.next_reconcile and not self.reconciling and not self.ledger.dead:
            self.next_reconcile = now + RECONCILE_SECONDS
            self.reconciling = True
            self.session.send(Reconcile(frozenset(self.ledger.tasks)))
        if self.ledger.tasks:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        if self.options.consume_all and self.ledger.stopping is None and not self.ledger.tasks \
                and not self.checking and now >= self.next_done_check:
            self.next_done_check = now + 0.5
            self.checking = True
            self.session.send(WorkLeft(self.resources, self._remaining_minutes(),
                                       self.claims.trusted,
                                       now - (self.idle_since or now)))

    def _send_writes(self) -> None:
        """Send the queued writes as one batch if none is in flight: at once if a task waits
        for them, the launcher stops or no process runs, else once records have waited
        WRITE_DELAY or fill WRITE_BATCH."""
        ledger = self.ledger
        if ledger.in_flight is not None or not ledger.queued():
            return
        if not ledger.waiting() and ledger.stopping is None and ledger.queued() < WRITE_BATCH \
                and len(self.processes):  # with nothing running, nothing to wait for
            now = time.monotonic()
            if self.records_since is None:
                self.records_since = now
            if now < self.records_since + WRITE_DELAY:
                return
        batch = ledger.next_batch()
        if batch is not None:
            self.records_since = None
            self.session.send(Write(batch))

    # --- events --------------------------------------------------------------------------------

    def _event(self, event: object) -> list[ledger.Intent]:
        """Apply an event; returns the intents to carry out."""
        if isinstance(event, Write):
            if event.error:
                return self.ledger.write_failed(event.batch)
            return self.ledger.committed(event.batch, event.reached, event.released)
        if isinstance(event, steps.Done):
            return self.ledger.work_done(event.task_id, event.kind, event.ok, event.detail)
        if isinstance(event, ReadStates):
            return (self.ledger.read_failed(event.ids) if event.error
                    else self.ledger.states_read(event.ids, event.found))
        if isinstance(event, Reconcile):
            self.reconciling = False
            return [] if event.error else self.ledger.reconciled(event.owned, event.known)
        if isinstance(event, Notified):
            return self._notified(event)
        if isinstance(event, Parents):
            return self.runs.stage_in(event)
        if isinstance(event, WorkLeft):
            self.checking = False
            if not event.error and not event.remaining and not self.ledger.tasks \
                    and self.ledger.stopping is None:
                log.info("launcher %s stopping: no work left", self.id)
                self.pool.cancel()
                return self.ledger.stop("no work left")
        elif isinstance(event, Reaped):
            log.warning("reaped launcher(s) %s presumed dead: %d task(s) recovered",
                        event.launchers, event.tasks)
            self.want_claim = self.want_post = True
        elif isinstance(event, Disconnected):
            self.claims.lost()
        elif isinstance(event, Reconnected):
            self.claims.resume()
            self.want_claim = self.want_post = self.trust_due = True
            self.next_reconcile = time.monotonic()
        elif isinstance(event, Renewed):
            if self.processes.agents is not None:  # the agents' lease follows ours
                timeout = self.options.heartbeat_timeout
                self.processes.agents.renew(lease.expiry(event.sent_at, timeout)
                                            - time.monotonic())
        elif isinstance(event, PresumedDead):
            log.error("%s", event.message)
            self.exit_code = 1
            self.pool.cancel()
            return self.ledger.presumed_dead()
        elif isinstance(event, Crashed):
            raise event.error
        return []

    def _fenced(self) -> None:
        """Our lease ran out (no heartbeat committed in time): our fence is killing our tasks.
        Stop as if presumed dead (no more writes); once the fence says every process is gone,
        give the claims back if they are still ours, as the reaper would."""
        log.error("launcher %s: its lease lapsed and its fence killed its tasks", self.id)
        self.exit_code = 1
        self.pool.cancel()
        self._do(self.ledger.presumed_dead())
        if not lease.confirmed(within=2.0):
            return  # the reaper recovers them
        try:
            recovered = self.claims.abandon("lease lapsed")
            log.warning("gave back %d task(s) to run again", len(recovered))
        except ClaimLost as exc:
            log.error("%s", exc)
        except BalsamError as exc:
            log.warning("cannot give the tasks back (%s): the reaper will", exc)

    def _notified(self, event: Notified) -> list[ledger.Intent]:
        if event.channel == "balsam_tasks":
            self.want_claim = self.want_post = True
        elif event.channel == "balsam_kill":
            # Anyone may send this: it is a hint to ask the database, never an order.
            ids = {int(w) for w in event.payload.replace(",", " ").split() if w.isdigit()}
            return self.ledger.kill_hint(ids)
        return []

    # --- intents -------------------------------------------------------------------------------

    def _do(self, intents: Sequence[ledger.Intent] = ()) -> None:
        """Carry out intents (and those they lead to). While starting many tasks, answers from
        the database are read and the next writes sent between starts: a batch of writes is
        always in flight while processes start."""
        self.todo.extend(intents)
        if len(self.todo) > len(intents):
            return  # an outer call is carrying them out
        while self.todo:
            intent = self.todo[0]
            if isinstance(intent, ledger.Start):
                more = self.runs.start(intent.task_id)
                if not self.inbox.empty():
                    self._read_inbox()
                self._send_writes()
            elif isinstance(intent, ledger.Stop):
                more = []
                self.processes.stop(intent.task_id, now=intent.now)
            elif isinstance(intent, ledger.Free):
                more = []
                self.resources.release(intent.task_id)
                self.want_claim = True
            elif isinstance(intent, ledger.Work):
                more = self.runs.work(intent.task_id, intent.kind)
            elif isinstance(intent, ledger.Read):
                more = []
                self.session.send(ReadStates(intent.ids))
            elif isinstance(intent, ledger.Recover):
                more = []
                self._recover(intent.ids)
            else:
                more = []
                assert isinstance(intent, ledger.Note)
                log.log(logging.WARNING if intent.level == "warning" else logging.INFO,
                        "%s", intent.text)
            self.todo.popleft()
            self.todo.extend(more)

    # --- claims --------------------------------------------------------------------------------

    def info(self) -> LauncherInfo:
        """The launcher as hooks see it."""
        if self.static_info is None:
            self.static_info = LauncherInfo(
                id=self.id, owner=current_user(), hostname=socket.gethostname(),
                job_mode=self.options.job_mode, wf_filter=self.options.wf_filter,
                num_nodes=self.resources.num_nodes, simulated=self.resources.simulated,
                scheduler=self.allocation.scheduler, scratch=str(self.scratch),
                gpus_per_node=self.options.gpus_per_node, mpi_command=self.mpi_template)
        return replace(self.static_info, remaining_minutes=self._remaining_minutes())

    def _remaining_minutes(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, (self.deadline - time.monotonic()) / 60)

    def _capacity(self) -> int:
        """How many more tasks could start now, at most."""
        if self.resources.job_mode == "mpi":
            return self.resources.idle_nodes
        return int(self.resources.free_share * self.claims.max_packing)

    def _claim(self, now: float) -> list[ledger.Intent]:
        """Claim tasks for the free nodes, and tasks to post-process."""
        if self.ledger.stopping is not None or not self.claims.ready(now):
            return []
        polled = now >= self.next_poll
        if polled:
            self.next_poll = now + self.options.poll_interval
        if polled or self.trust_due:
            self._refresh_trust()
        capacity = self._capacity()
        limit = 2 * capacity + 16 if capacity > 0 and (self.want_claim or polled) else 0
        room = 4 * self.options.workers - self.ledger.count(
            ledger.Phase.WORKING, ledger.Phase.RECHECKING)
        post_limit = room if room > 0 and (self.want_post or polled) else 0
        if not limit and not post_limit:
            return []
        try:
            runs, posts = self.claims.claim(
                self.resources, self.info(), limit=limit, post_limit=post_limit,
                max_wall_minutes=self._remaining_minutes())
        except ClaimLost as exc:
            return self._event(PresumedDead(str(exc)))
        if limit:
            self.want_claim = bool(runs)
        if post_limit:
            self.want_post = bool(posts)
        intents: list[ledger.Intent] = []
        for claimed, with_nodes in ((runs, True), (posts, False)):
            if claimed:
                log.info("claimed %d task(s)%s: %s", len(claimed),
                         "" if with_nodes else " to finish",
                         ids_text([c.task.id for c in claimed]))  # type: ignore[misc]
            for c in claimed:
                intents += self._adopt(c, with_nodes=with_nodes)
        return intents

    def _refresh_trust(self) -> None:
        """Read whom this launcher trusts again: a trust withdrawn stops the next claims, and
        the starts and scripts of tasks held (the ledger judges them again)."""
        before = self.claims.trusted
        trusted = self.claims.refresh_trust()
        self.trust_due = False
        if trusted != before:
            log.info("runs the tasks of: %s", ", ".join(trusted))
            self.ledger.trusted = frozenset(trusted)

    def _adopt(self, c: claim.Claimed, *, with_nodes: bool) -> list[ledger.Intent]:
        task, app = c.task, c.app
        if app is None:  # its app could not be read: the reconcile gives it back
            return []
        if task.id in self.ledger:  # claimed again before its release's answer came back:
            return []  # the reconcile gives it back (the ledger forgets it on that answer)
        # on the nodes its claim planned: they are free (nothing else took nodes meanwhile)
        has_nodes = with_nodes and self.resources.allocate(
            task, on=[n.index for n in c.nodes]) is not None
        refusal = None
        if with_nodes:
            try:
                self.runs.place(task)
            except InvalidInput as exc:
                refusal = str(exc)
        return self.ledger.claimed(task, app, c.parent_ids, has_nodes=has_nodes,
                                   refusal=refusal)

    def _recover(self, ids: Sequence[int]) -> None:
        """Give back claims the database says we hold and the ledger did not know when it asked
        (less any it learned of since: the claims are made on the same connection)."""
        rows = self.claims.recover([t for t in ids if t not in self.ledger])
        if rows:
            log.warning("gave back %d claim(s) this launcher did not know it held: %s",
                        len(rows), ", ".join(f"{r['id']} ({r['state']})" for r in rows))

    # --- node agents ---------------------------------------------------------------------------

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
        pool = AgentPool(nodes)
        output = workdirs.create_log(self.project.log_dir, f"agents_{self.id}.out")
        try:
            pool.launch(self.pm.hook.mpi_command, self.info(), output)
        except BalsamError as exc:
            message = f"{exc} (see log/agents_{self.id}.out)"
            raise BalsamError(message) from None
        self.processes.agents = pool
        for agent in pool.agents.values():
            self.selector.register(agent.sock, selectors.EVENT_READ, agent)
        log.info("%d node agent(s) started", len(nodes))


# --- small helpers -----------------------------------------------------------------------------


class _LogFile(logging.StreamHandler):
    """The launcher's log: a file it created itself (see :func:`workdirs.create_log`)."""

    def close(self) -> None:
        super().close()
        self.stream.close()


def _raise_fd_limit() -> None:
    """A pidfd and an output file per running task: lift the soft limit on open files."""
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


