"""The fence on its own (no database): a small program stands in for the launcher behind
:func:`balsam_launcher.fence.enter`, in both fences (a PID namespace, a subreaper)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.errors import InvalidInput
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_launcher import fence
from balsam_testing import launchers as lt

FENCES = ["namespace", "subreaper"]

#: Stands in for L. argv: READY-FILE LEASE-TIMEOUT(or -) ACTION. It starts a process tree (a
#: task that forks, and a daemon in its own session), renews its lease once, writes its host
#: pid and its tasks' to READY-FILE, then does ACTION and reports what it saw on stdout.
PROGRAM = r"""
import os, signal, subprocess, sys, time
from balsam_launcher import fence, lease

ready, timeout, action = sys.argv[1], sys.argv[2], sys.argv[3]


def main():
    got = []
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, lambda s, f: got.append(signal.Signals(s).name))
    tree = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], process_group=0)
    subprocess.Popen(["sh", "-c", "setsid sleep 61 &"]).wait()
    if timeout != "-":
        lease.renewed(time.monotonic())
    with open(ready + ".tmp", "w") as f:
        f.write(f"{fence.host_pid()} {fence.current()}")
    os.rename(ready + ".tmp", ready)
    if action == "exit3":
        return 3
    if action == "lapse":
        while not lease.lapsed():
            time.sleep(0.01)
        late = subprocess.Popen(["sleep", "60"])  # started after the lapse: killed too
        print("lapsed", tree.wait(), late.wait(), flush=True)
        return 0
    end = time.monotonic() + 3
    while time.monotonic() < end and not got:
        time.sleep(0.01)
    time.sleep(0.3)  # a second copy of the signal would arrive by now
    print(" ".join(got), flush=True)
    return 0


sys.exit(fence.run(main, lease_timeout=None if timeout == "-" else float(timeout)))
"""


def start(tmp_path: Path, fencing: str, timeout: str, action: str) -> tuple[subprocess.Popen, int]:
    """Start the program; returns (P, L's host pid) once its tasks run."""
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, str(ready), timeout, action],
                            env={**os.environ, fence.VARIABLE: fencing}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    launcher, mode = ready.read_text().split()
    assert mode == fencing
    return proc, int(launcher)


@pytest.mark.parametrize("fencing", FENCES)
def test_the_launchers_status_is_the_commands(tmp_path, fencing):
    proc, _ = start(tmp_path, fencing, "-", "exit3")
    proc.communicate(timeout=10)
    assert proc.returncode == 3
    proc, launcher = start(tmp_path, fencing, "-", "wait")
    everything = fence.descendants(proc.pid)
    os.kill(launcher, signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGKILL
    assert not any(lt.alive(p) for p in everything)


@pytest.mark.parametrize("fencing", FENCES)
@pytest.mark.parametrize("whom", ["P", "every process"])
def test_a_signal_reaches_the_launcher_once(tmp_path, fencing, whom):
    """A signal to the command's process is passed on; a signal to every process (as a
    scheduler ending a job sends it) is not passed on again."""
    proc, launcher = start(tmp_path, fencing, "-", "wait")
    targets = [proc.pid] if whom == "P" else [proc.pid, *fence.descendants(proc.pid)]
    for pid in targets:
        os.kill(pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert out.split() == ["SIGTERM"]
    assert proc.returncode == 0


@pytest.mark.parametrize("fencing", FENCES)
def test_a_lapsed_lease_kills_every_task_and_tells_the_launcher(tmp_path, fencing):
    """Renewed once with a 1 s timeout, the lease lapses 0.75 s later: the fence kills the
    tasks, their forks and the daemon (and whatever the launcher starts after), not the
    launcher, which is told and lives on."""
    started = time.monotonic()
    proc, launcher = start(tmp_path, fencing, "1", "lapse")
    tasks = fence.descendants(proc.pid) - {launcher, lt.parent(launcher)}
    assert len(tasks) >= 4  # sh, its two sleeps, the daemon (C's, as an orphan)
    out, err = proc.communicate(timeout=10)
    assert out.split() == ["lapsed", "-9", "-9"]
    assert proc.returncode == 0
    assert not any(lt.alive(p) for p in tasks)
    assert time.monotonic() - started > 0.75
    assert f"the lease of pid {launcher} lapsed: killed " in err


#: Stands in for C: a subreaper (orphans come back to it) that starts pairs of shells, each
#: watching the other through a fifo: whichever dies first, the other sees it and writes a line.
HOLDER = r"""
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
where = sys.argv[1]
for i in range(10):
    a, b = f"{where}/a{i}", f"{where}/b{i}"
    os.mkfifo(a)
    os.mkfifo(b)
    for mine, theirs in ((a, b), (b, a)):  # hold my fifo open; read theirs until they die
        watch = f"exec 3<>{mine}; read x < {theirs}; echo {i} >> {where}/reacted"
        subprocess.Popen(["sh", "-c", watch])
time.sleep(60)
"""


@pytest.mark.parametrize("freeze", [True, False])
def test_sweep_stops_everything_before_it_kills(tmp_path, monkeypatch, freeze):
    """Killed one by one (here slowly, as on a busy node), a process can see another die and
    act; the sweep first stops them all, so none does."""
    signal_checked = fence._signal_checked

    def slow(pid: int, parents: set[int], sig: int) -> bool:
        sent = signal_checked(pid, parents, sig)
        if sig == signal.SIGKILL:
            time.sleep(0.02)
        return sent

    monkeypatch.setattr(fence, "_signal_checked", slow)
    if not freeze:  # what the sweep prevents
        monkeypatch.setattr(fence, "FREEZE_SECONDS", 0.0)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while len(below := fence.descendants(holder.pid)) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while not all(map(_reading, below)):  # every shell waits in read(2) on its fifo
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert fence.sweep(holder.pid) == 20
        assert holder.poll() is None  # the root is spared
    finally:
        fence.sweep(holder.pid)
        holder.kill()
        holder.wait()
    assert not any(lt.alive(p) for p in below)
    reacted = tmp_path / "reacted"
    assert reacted.exists() != freeze


def _reading(pid: int) -> bool:
    """Whether the process is blocked in read(2) (system call 0 on x86-64 Linux)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] == "0"
    except (OSError, IndexError):
        return False


#: A process whose main thread has exited while another thread runs (as a launcher's does,
#: killed, for an instant): /proc shows it as a zombie, yet its task runs, and stays its child
#: until the last thread exits. argv: READY-FILE.
HALF_EXITED = r"""
import ctypes, os, subprocess, sys, threading, time
task = subprocess.Popen(["sleep", "60"])
threading.Thread(target=time.sleep, args=(60,)).start()
with open(sys.argv[1], "w") as f:
    f.write(f"{os.getpid()} {task.pid}")
ctypes.CDLL(None).pthread_exit(None)
"""


def _thread_states(pid: int) -> set[str]:
    states = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            states.add(f.read().rsplit(b")", 1)[1].split()[0].decode())
    return states


def test_sweep_sees_through_a_process_whose_main_thread_exited(tmp_path):
    """Such a process's children are below it until its last thread exits; a sweep that took
    it for a zombie left them to be given to init, unkilled (CI saw a task outlive its killed
    launcher that way). The sweep from above stops its live thread with the rest (no Slurm
    step may start meanwhile), then kills its children and it."""
    ready = tmp_path / "ready"
    run = "import subprocess, sys; print(subprocess.Popen(sys.argv[1:]).wait())"
    wrapper = subprocess.Popen(  # the root, as P is L's: says how its child ended
        [sys.executable, "-c", run, sys.executable, "-c", HALF_EXITED, str(ready)],
        stdout=subprocess.PIPE, text=True)
    half = task = 0
    try:
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        half, task = map(int, ready.read_text().split())
        while lt.alive(half):  # a zombie to /proc, its other thread running
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert lt.parent(task) == half and lt.alive(task)
        assert fence.descendants(wrapper.pid) == {half, task}
        while_stopped: list[set[str]] = []
        fence.sweep(wrapper.pid, between=lambda: while_stopped.append(_thread_states(half)))
        assert while_stopped == [{"Z", "T"}]  # its leader a zombie, its live thread stopped
        lt.wait_exited([task], 5, "the task below the half-exited process")
        out, _ = wrapper.communicate(timeout=10)
        assert out.strip() == str(-signal.SIGKILL)  # its last thread was killed too
    finally:
        for pid in (task, half):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        wrapper.kill()
        wrapper.communicate()


def test_sweep_kills_children_before_their_parents(monkeypatch):
    """A parent killed first would hand its children to init where no subreaper catches them,
    out of the sweep's sight."""
    root = subprocess.Popen(["sh", "-c", 'sh -c "sleep 60; true"; true'])
    try:
        deadline = time.monotonic() + 10
        while len(fence.descendants(root.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        [inner] = [p for p in fence.descendants(root.pid) if lt.parent(p) == root.pid]
        [sleeper] = fence.descendants(root.pid) - {inner}
        killed: list[int] = []
        checked = fence._signal_checked

        def recording(pid: int, parents: set[int], sig: int) -> bool:
            if sig == signal.SIGKILL:
                killed.append(pid)
            return checked(pid, parents, sig)

        monkeypatch.setattr(fence, "_signal_checked", recording)
        assert fence.sweep(root.pid) == 2
        assert killed == [sleeper, inner]
    finally:
        root.kill()
        root.wait()


def test_an_unknown_fence_is_refused_at_the_door(monkeypatch):
    monkeypatch.setenv(fence.VARIABLE, "cgroup")
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["launcher"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: BALSAM_FENCE='cgroup': use one of namespace, "
                                     "subreaper, none")


@pytest.mark.parametrize("fencing", FENCES)
def test_called_in_process_the_caller_is_left_as_it_was(monkeypatch, fencing):
    """The process that calls fence.run (P) stays in its namespaces, keeps its signal handlers
    and gets the status back; main ran in another process, behind the fence."""
    monkeypatch.setenv(fence.VARIABLE, fencing)
    namespace = os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/pid")
    handlers = {sig: signal.getsignal(sig) for sig in fence.FORWARDED}
    me = os.getpid()

    def main() -> int:
        return 7 if os.getpid() != me and fence.current() == fencing else 9

    def fails() -> int:
        raise InvalidInput("no such thing")

    assert fence.run(main, lease_timeout=None) == 7
    assert fence.run(fails, lease_timeout=None) == 1
    assert (os.readlink("/proc/self/ns/user"), os.readlink("/proc/self/ns/pid")) == namespace
    assert {sig: signal.getsignal(sig) for sig in fence.FORWARDED} == handlers
    assert fence.current() == "none"
