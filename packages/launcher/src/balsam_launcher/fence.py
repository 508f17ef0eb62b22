"""The fence: no task process outlives its launcher, and a launcher whose lease lapsed stops
everything it started before anyone may run its tasks again.

``balsam launcher`` (and each node agent) runs its work through :func:`run`, in three processes.
Nothing is added to a task's start.

P  the command's own process, the pid the scheduler or the job script sees. It starts C in a new
   user and PID namespace, passes on the signals it gets, and returns C's status.
C  PID 1 of that namespace: forks L, reaps every orphan, and watches L's lease (the expiries L
   writes to a pipe after each committed heartbeat, see :mod:`balsam_launcher.lease`). When the
   lease lapses, C kills every process below it but L (and the Slurm steps of a job the
   launcher owns), keeps doing so until L exits, and tells L. When L exits, C kills whatever
   is left and exits with L's status.
L  the launcher (or agent): it runs the function given to :func:`run`.

If P dies, even by SIGKILL, its parent-death signal kills C, and the kernel kills every process
of a PID namespace whose init dies. Where namespaces are refused (or ``BALSAM_FENCE=subreaper``),
C is a subreaper in the host's namespace and P is one too: C cleans up when P dies, P when C
dies; only both dying at once (or the node) leaves tasks behind. ``BALSAM_FENCE=none`` turns
the fence off (debugging).

Inside the namespace pids are the namespace's: :func:`host_pid` and :func:`host_pid_for` give
the numbers the rest of the machine (``/proc``, ``ps``, the launchers table) knows.
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from balsam.errors import BalsamError, InvalidInput
from balsam_launcher import lease

#: ``namespace`` (the default; falls back to ``subreaper`` when refused), ``subreaper``, ``none``.
VARIABLE = "BALSAM_FENCE"
MODES = ("namespace", "subreaper", "none")
#: What a scheduler or a user sends a launcher; P and C pass them on to L.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGCONT, signal.SIGXCPU)
#: A signal C got itself (a whole process tree or cgroup was signalled, L included) within this
#: many seconds of the same signal from P is not passed on again.
SAME_SIGNAL_SECONDS = 0.05
#: Once the lease lapsed, look for new processes below C until L exits: at first this often,
#: then half as often each time nothing was found, down to once a second (while L is stopped,
#: it starts nothing: only its state is looked at).
RESWEEP_SECONDS = 0.05
#: How long :func:`sweep` tries to stop every process before it kills them (some may not stop
#: at once: in uninterruptible sleep, or forking faster than it looks).
FREEZE_SECONDS = 0.5
#: Between two passes of a sweep (seconds): a process in uninterruptible sleep stops or dies
#: late, and scanning /proc again at once would only spin.
PASS_PAUSE = 0.001

_CLONE_NEWUSER, _CLONE_NEWPID = 0x10000000, 0x20000000
_CLONE_SYSCALL = {"x86_64": 56, "aarch64": 220, "ppc64le": 120, "ppc64": 120}
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_current = "none"


def mode(env: Mapping[str, str] = os.environ) -> str:
    """The fence asked for; InvalidInput for an unknown one (at the door, before anything)."""
    value = env.get(VARIABLE, "") or "namespace"
    if value not in MODES:
        message = f"{VARIABLE}={value!r}: use one of {', '.join(MODES)}"
        raise InvalidInput(message)
    return value


def run(main: Callable[[], int], *, lease_timeout: float | None,
        name: str = "launcher") -> int:
    """Run ``main`` (in L) behind a fence and return its exit status (in this process, P, whose
    namespaces, signal handlers and children are as they were before). ``lease_timeout`` is
    the launcher's heartbeat timeout (None for an agent, whose launcher says how long each
    renewal lasts)."""
    wanted = mode()
    if wanted == "none":
        return main()
    job, ids = slurm_job(), (os.getuid(), os.getgid())
    sys.stdout.flush()
    sys.stderr.flush()
    ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
    handlers = {sig: signal.signal(sig, lambda signum, frame: _write(ctl_w, bytes([signum])))
                for sig in FORWARDED}  # from before the fork: a signal must not kill P between
    namespaced, child = wanted == "namespace", -1
    if namespaced:
        child = _clone_into_namespaces(name)
        namespaced = child >= 0
    others: set[int] = set()
    if not namespaced:
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # if C dies, what it leaves comes to us
        others = descendants(host_pid())  # not ours to sweep (when called in-process)
        child = os.fork()
    if child == 0:  # C: whatever happens, it never returns into the caller's frames
        try:
            os.close(ctl_w)
            _supervisor(ctl_r, namespaced, lease_timeout, job, main, ids)
        except BaseException:
            traceback.print_exc()
        os._exit(70)
    os.close(ctl_r)
    try:
        return _outer(child, job, others if not namespaced else None)
    finally:
        os.close(ctl_w)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if not namespaced:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)


# --- P: the command's process --------------------------------------------------------------------


def _clone_into_namespaces(name: str) -> int:
    """``os.fork()``, but the child is PID 1 of a new PID namespace, in a new user namespace that
    maps only our own ids; this process stays where it is. -1, with one line on stderr, where
    the system refuses. (``unshare()`` would move this process into the user namespace.)"""
    libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the call keeps the GIL, like os.fork
    libc.syscall.restype = ctypes.c_long
    number = _CLONE_SYSCALL.get(os.uname().machine)
    if number is None:
        print(f"balsam {name}: no namespace for the fence on {os.uname().machine}; using a "
              "subreaper", file=sys.stderr)
        return -1
    ctypes.pythonapi.PyOS_BeforeFork()
    flags = _CLONE_NEWUSER | _CLONE_NEWPID | signal.SIGCHLD
    child = libc.syscall(ctypes.c_long(number), ctypes.c_long(flags), *[ctypes.c_long(0)] * 4)
    if child == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    error = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if child < 0:
        print(f"balsam {name}: no namespace for the fence (clone: {os.strerror(error)}); "
              "using a subreaper", file=sys.stderr)
    return int(child)


def _outer(child: int, job: str | None, others: set[int] | None) -> int:
    """Wait for C (signals reach it through the control pipe); return its status. If C was
    killed, clean up after it: the Slurm steps it started, and, where there is no namespace to
    die with it (``others`` is then what was below us before C), what it left to us."""
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        if others is None:
            end_slurm_steps(job)
        else:
            sweep(host_pid(), skip=others, between=lambda: end_slurm_steps(job))
    return _exit_code(status)


# --- C: the supervisor ---------------------------------------------------------------------------


class _Supervisor:
    """C's state: its one child L, L's lease, and the signals to pass on."""

    def __init__(self, ctl: int, namespaced: bool, job: str | None) -> None:
        self.ctl = ctl
        self.namespaced = namespaced
        self.job = job
        self.me = host_pid()
        self.child = 0
        self.child_host = 0
        self.status: int | None = None
        self.until: float | None = None
        self.lapsed = False
        self.resweep = RESWEEP_SECONDS
        self.parent_gone = False
        self.direct: dict[int, float] = {}  # signal -> when C got it itself
        self.from_parent: list[tuple[int, float]] = []  # (signal, when P passed it on)
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.lease_r, self.lease_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.notice_r, self.notice_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start(self) -> bool:
        """Fork L; True in L."""
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (*FORWARDED, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)
        parent = os.getpid()
        self.child = os.fork()
        if self.child == 0:
            signal.set_wakeup_fd(-1)
            for sig in (*FORWARDED, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)  # C died before the parent-death signal was set
            for fd in (self.ctl, self.wake_r, self.wake_w, self.lease_r, self.notice_w):
                os.close(fd)
            self.selector.close()
            return True
        os.close(self.lease_w)
        os.close(self.notice_r)
        pidfd = os.pidfd_open(self.child)
        self.child_host = host_pid_of(pidfd)
        os.close(pidfd)
        for fd in (self.ctl, self.wake_r, self.lease_r):
            self.selector.register(fd, selectors.EVENT_READ)
        return False

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum != signal.SIGCHLD:
            self.direct[signum] = time.monotonic()

    def run(self) -> NoReturn:
        while True:
            for key, _ in self.selector.select(self._wait()):
                if key.fd == self.ctl:
                    self._read_parent()
                elif key.fd == self.lease_r:
                    self._read_lease()
                else:
                    _drain(self.wake_r)
            self._reap()
            now = time.monotonic()
            if self.parent_gone or self.status is not None:
                self._finish()
            self._pass_on(now)
            if not self.lapsed and self.until is not None and now >= self.until:
                self._fence()
            elif self.lapsed:
                self._sweep_again()

    def _wait(self) -> float | None:
        times = [t + SAME_SIGNAL_SECONDS for _, t in self.from_parent]
        if self.lapsed:
            times.append(time.monotonic() + self.resweep)
        elif self.until is not None:
            times.append(self.until)
        return max(0.0, min(times) - time.monotonic()) if times else None

    def _read_parent(self) -> None:
        try:
            data = os.read(self.ctl, 64)
        except BlockingIOError:
            return
        if not data:
            self.parent_gone = True
            self.selector.unregister(self.ctl)
        now = time.monotonic()
        self.from_parent.extend((sig, now) for sig in data)

    def _read_lease(self) -> None:
        data = _drain(self.lease_r)
        usable = len(data) - len(data) % lease.RECORD.size
        for (until,) in lease.RECORD.iter_unpack(data[:usable]):
            self.until = until if self.until is None else max(self.until, until)

    def _pass_on(self, now: float) -> None:
        """Pass P's signals on to L, unless C got the same one itself (then so did L)."""
        waiting = []
        for sig, at in self.from_parent:
            if abs(self.direct.get(sig, -1e9) - at) <= SAME_SIGNAL_SECONDS:
                continue
            if now < at + SAME_SIGNAL_SECONDS:
                waiting.append((sig, at))
            else:
                _signal(self.child, sig)
        self.from_parent = waiting

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.status = status

    def _fence(self) -> None:
        """The lease lapsed: kill everything below C but L, then tell L."""
        self.lapsed = True
        started = time.monotonic()
        steps: list[int] = []
        killed = sweep(self.me, spare=(self.child_host,),
                       between=lambda: steps.append(end_slurm_steps(self.job)))
        took = (time.monotonic() - started) * 1000
        _write(self.notice_w, b"!")
        _signal(self.child, lease.FENCED)
        print(f"balsam fence: the lease of pid {self.child_host} lapsed: killed {killed} "
              f"process(es){f' and {steps[0]} Slurm step(s)' if steps and steps[0] else ''} "
              f"in {took:.0f} ms",
              file=sys.stderr, flush=True)

    def _sweep_again(self) -> None:
        """After a lapse: kill what L (or an orphan) started since."""
        stat = _stat(self.child_host)
        if stat is not None and stat[1] in "Tt":
            return
        found = sweep(self.me, spare=(self.child_host,))
        self.resweep = RESWEEP_SECONDS if found else min(1.0, self.resweep * 2)

    def _finish(self) -> NoReturn:
        """L exited (or P died): nothing of ours may outlive it."""
        sweep(self.me, between=lambda: end_slurm_steps(self.job))
        self._reap()
        os._exit(128 + signal.SIGKILL if self.status is None else _exit_code(self.status))


def _supervisor(ctl: int, namespaced: bool, lease_timeout: float | None, job: str | None,
                main: Callable[[], int], ids: tuple[int, int]) -> NoReturn:
    """C's life; L's too, once C has forked it. ``ids``: our uid and gid outside."""
    global _current
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    if namespaced:
        uid, gid = ids  # only these are mapped, to themselves
        for path, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                           ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{path}", "w") as f:
                f.write(text)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if _closed(ctl):
            os._exit(1)  # P died before the parent-death signal was set
    else:  # P dies: C sees the control pipe close and cleans up
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    os.setsid()  # signals for P's process group or session reach L once, through P
    supervisor = _Supervisor(ctl, namespaced, job)
    if supervisor.start():
        _current = "namespace" if namespaced else "subreaper"
        lease.attach(supervisor.lease_w, lease_timeout, supervisor.notice_r)
        lease.watch()
        _launcher(main)
    try:
        supervisor.run()
    except BaseException:  # a bug in C must not leave L unfenced
        traceback.print_exc()
        sweep(supervisor.me, between=lambda: end_slurm_steps(job))
        os._exit(70)


def _launcher(main: Callable[[], int]) -> NoReturn:
    """L: run ``main`` and exit with its status; it never returns into its caller's frames (in
    the process that called :func:`run`, they go on)."""
    try:
        code = main()
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BalsamError as exc:  # as the CLI reports it
        print(f"Error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def current() -> str:
    """The fence this process runs behind: ``namespace``, ``subreaper`` or ``none``."""
    return _current


# --- finding and killing processes ---------------------------------------------------------------


def host_pid() -> int:
    """This process's pid as ``/proc`` (the host) numbers it, inside a PID namespace too."""
    return int(os.readlink("/proc/self"))


def host_pid_of(pidfd: int) -> int:
    """The host's pid of the process a pidfd refers to (its ``Pid:`` in fdinfo)."""
    fd = os.open(f"/proc/self/fdinfo/{pidfd}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    start = text.find(b"\nPid:")
    if start < 0:
        message = f"no Pid in the fdinfo of fd {pidfd}"
        raise OSError(message)
    return int(text[start + 5:text.index(b"\n", start + 5)])


@functools.cache
def namespaced() -> bool:
    """Whether this process is in a PID namespace of its own (its pids are not the host's)."""
    return os.getpid() != host_pid()


def host_pid_for(pid: int, pidfd: int | None) -> int:
    """A child's pid as the host numbers it: ``pid`` itself outside a PID namespace (nothing to
    do per task), else read from its pidfd."""
    if pidfd is None or not namespaced():
        return pid
    return host_pid_of(pidfd)


def _stat(entry: str | int, dir_fd: int | None = None) -> tuple[int, str, int] | None:
    """(ppid, state, threads) of a process from ``/proc/<pid>/stat``; None if it is gone."""
    try:
        if dir_fd is None:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read()
        else:
            fd = os.open("stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                text = os.read(fd, 4096)
            finally:
                os.close(fd)
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(b")", 1)[1].split()
    return int(fields[1]), fields[0].decode(), int(fields[17])


def _below(root: int, skip: set[int] | frozenset[int] = frozenset()
           ) -> dict[int, tuple[int, str, bool]]:
    """The processes below ``root`` (but the subtrees of ``skip``): host pid -> (ppid, state,
    whether it still runs). Zombies are looked through: a process whose main thread has
    exited shows as a zombie while its other threads run, and its children stay its own until
    the last thread exits (unseen then, they would go to init, unkilled: measured)."""
    children: dict[int, list[tuple[int, int, str, bool]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(entry)
            if stat is not None:
                ppid, state, threads = stat
                runs = state not in "ZX" or threads > 1
                children.setdefault(ppid, []).append((int(entry), ppid, state, runs))
    found: dict[int, tuple[int, str, bool]] = {}
    todo = [root]
    while todo:
        for pid, ppid, state, runs in children.get(todo.pop(), ()):
            if pid not in found and pid not in skip:
                found[pid] = (ppid, state, runs)
                todo.append(pid)
    return found


def descendants(root: int) -> set[int]:
    """Host pids of the processes below ``root`` that still run (zombies excluded)."""
    return {pid for pid, (_, _, runs) in _below(root).items() if runs}


def sweep(root: int, *, spare: tuple[int, ...] = (), skip: set[int] | frozenset[int] = frozenset(),
          between: Callable[[], object] | None = None) -> int:
    """Kill every process below ``root`` except ``spare`` (not their descendants) and the
    subtrees of ``skip``; returns how many were killed.

    First every one is stopped (SIGSTOP, looking again for the children they forked meanwhile),
    then killed: killed one by one, a shell would see its child die and run its next command
    before its own SIGKILL arrived. Stopped, nothing of theirs runs again. ``between`` runs
    while they are stopped (no srun can start a step then).
    """
    deadline = time.monotonic() + FREEZE_SECONDS
    while time.monotonic() < deadline:  # a process in uninterruptible sleep stops late
        below = _below(root, skip)
        moving = [pid for pid, (_, state, runs) in below.items()
                  if pid not in spare and not _stopped(pid, state, runs)]
        if not moving:
            break
        parents = set(below) | {root}
        for pid in moving:
            _signal_checked(pid, parents, signal.SIGSTOP)
        time.sleep(PASS_PAUSE)
    if between is not None:
        between()
    killed: set[int] = set()
    for _ in range(1000):
        below = _below(root, skip)
        targets = {pid for pid, (_, _, runs) in below.items() if runs} - set(spare)
        if not targets:
            break
        parents = set(below) | {root}
        deepest_first = sorted(targets, key=lambda pid: -_depth(pid, below))
        killed.update(pid for pid in deepest_first
                      if _signal_checked(pid, parents, signal.SIGKILL))
        time.sleep(PASS_PAUSE)
    return len(killed)


def _stopped(pid: int, state: str, runs: bool) -> bool:
    """Whether nothing of the process runs: stopped, or a zombie. A process whose main thread
    has exited shows as a zombie; its other threads are judged one by one (SIGSTOP stops them
    all: a live one could start a Slurm step while the steps are being cancelled)."""
    if state in "Tt" or not runs:
        return True
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone
    for tid in threads:
        stat = _stat(f"{pid}/task/{tid}")
        if stat is not None and stat[1] not in "TtZX":
            return False
    return True


def _depth(pid: int, below: Mapping[int, tuple[int, str, bool]]) -> int:
    """How far below the root ``pid`` is. Children are killed before their parents: a parent
    killed first would hand them to init (where there is no subreaper), out of the sweep's sight."""
    depth = 0
    while pid in below:
        pid, depth = below[pid][0], depth + 1
    return depth


def _signal_checked(pid: int, parents: set[int], sig: int) -> bool:
    """Signal ``pid`` through a pidfd, if its parent is still one of ``parents`` (the pid was
    not reused by a stranger since the scan)."""
    try:
        fd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        stat = _stat(pid, dir_fd=fd)
        if stat is None or stat[0] not in parents:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


# --- Slurm steps ---------------------------------------------------------------------------------


def slurm_job(env: Mapping[str, str] = os.environ) -> str | None:
    """The Slurm job this process is the main process of (its batch script exec'd it, as the
    job templates do), or None. Every other step of that job was started from below us."""
    job = env.get("SLURM_JOB_ID", "")
    if not job.isdigit() or "SLURM_STEP_ID" in env:  # a step's task (an agent) owns nothing
        return None
    try:
        with open(f"/proc/{os.getppid()}/comm") as f:
            return job if f.read().strip() == "slurmstepd" else None
    except OSError:
        return None


def end_slurm_steps(job: str | None) -> int:
    """Kill the tasks of every step of our Slurm ``job`` (not its batch, extern or interactive
    step); returns how many steps. Their tasks run under slurmstepd on every node, not under
    us, and killing srun does not end a step whose srun helper died with it (measured)."""
    squeue, scancel = shutil.which("squeue"), shutil.which("scancel")
    if job is None or squeue is None or scancel is None:
        return 0
    try:
        listed = subprocess.run([squeue, "--steps", "--jobs", job, "--noheader", "--format=%i"],
                                capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL).stdout.split()
        steps = [step for step in listed
                 if step.partition(".")[0] == job and step.partition(".")[2].isdigit()]
        if steps:
            subprocess.run([scancel, "--signal=KILL", *steps], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"balsam fence: cannot end the steps of Slurm job {job}: {exc}", file=sys.stderr)
        return 0
    return len(steps)


# --- small helpers -------------------------------------------------------------------------------


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}): {os.strerror(ctypes.get_errno())}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _write(fd: int, data: bytes) -> None:
    try:
        os.write(fd, data)
    except OSError:
        pass


def _drain(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


def _closed(fd: int) -> bool:
    """Whether the write end of the pipe ``fd`` reads from has been closed everywhere."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return any(event & select.POLLHUP for _, event in poller.poll(0))


def _exit_code(status: int) -> int:
    """A wait status as a shell reports it (128 + N for a process killed by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code

