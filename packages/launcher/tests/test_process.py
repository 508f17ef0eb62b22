"""Task processes without a database: programs found on the launcher's own PATH (never on the
task's), a run started in the very directory the launcher opened, and stopping a run's group."""

from __future__ import annotations

import os
import selectors
import signal
import time
from pathlib import Path

import pytest

from balsam.models import App, Task
from balsam_launcher import process, steps
from balsam_launcher.process import Processes, program


def fake(directory: Path, name: str, marker: Path) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\ntouch {marker}\n")
    path.chmod(0o755)
    return path


def test_programs_are_found_on_the_launchers_path_not_the_tasks(tmp_path, monkeypatch):
    marker, own = tmp_path / "ran", tmp_path / "own-ran"
    evil = tmp_path / "evil"
    fake(evil, "true", marker)
    fake(evil, "helper", own)
    assert program("true") in ("/usr/bin/true", "/bin/true")
    assert program("./local") == "./local" and program("/x/y") == "/x/y"
    with pytest.raises(FileNotFoundError, match="not found on the launcher's PATH"):
        program("no-such-program-anywhere")
    # The task's PATH puts a fake `true` first: the launcher still runs the real one.
    argv = steps.resolved(steps.app_command(App(name="a", executable="true"), Task(id=1)))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        run = process.spawn(1, argv, cwd=fd, env={"PATH": f"{evil}:/usr/bin:/bin"},
                            output=tmp_path / "out")
        assert run.popen.wait() == 0
        run.close()
    finally:
        os.close(fd)
    assert not marker.exists()
    # ...while what the task runs itself still uses the task's PATH
    argv = steps.resolved(["sh", "-c", "helper"])
    run = process.spawn(2, argv, cwd=tmp_path, env={"PATH": f"{evil}:/usr/bin:/bin"},
                        output=tmp_path / "out")
    assert run.popen.wait() == 0 and own.exists() and not marker.exists()
    run.close()


def test_the_envscript_wrapper_and_a_bare_envscript_name(tmp_path, monkeypatch):
    argv = steps.with_envscript("env.sh", ["/bin/echo", "hi"])
    assert argv[0] == program("bash") and argv[4] == "./env.sh"
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    (tmp_path / "env.sh").write_text("export X=1\n")
    (tmp_path / "env.sh").chmod(0o755)
    assert steps.with_envscript("env.sh", ["/bin/echo"])[4] == str(tmp_path / "env.sh")
    # an app executable only its envscript puts on PATH is left to the envscript
    assert steps.resolved(["only-after-module-load", "x"], envscript="env.sh")[0] == \
        "only-after-module-load"


def test_a_run_starts_in_the_directory_the_launcher_opened(tmp_path):
    """CPython's child changes to ``cwd`` before closing descriptors and exec: a directory
    replaced by a symlink after the launcher opened it is not where the task runs."""
    real = tmp_path / "data" / "t_1"
    real.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    moved = tmp_path / "data" / "moved"
    real.rename(moved)
    real.symlink_to(victim)  # a member swaps the directory for a symlink
    out = os.open(moved / "t.out", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        run = process.spawn(1, ["/bin/sh", "-c", "pwd -P; touch here"], cwd=fd, env={},
                            output=out)
        assert run.popen.wait() == 0
        run.close()
    finally:
        os.close(fd)
        os.close(out)
    assert (moved / "t.out").read_text().strip() == str(moved)
    assert (moved / "here").exists() and list(victim.iterdir()) == []


def test_stop_then_kill_after_the_grace(tmp_path):
    selector = selectors.DefaultSelector()
    procs = Processes(selector, grace=0.3)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    out = os.open(tmp_path / "t.out", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        where = procs.start(7, ["/bin/sh", "-c", "trap '' TERM; echo stubborn; sleep 30"],
                            dir_fd=fd, directory=tmp_path, env={}, output_fd=out,
                            output=tmp_path / "t.out")
    finally:
        os.close(fd)
    assert where.startswith("pid ")
    deadline = time.monotonic() + 10  # its trap is set once it has spoken
    while b"stubborn" not in (tmp_path / "t.out").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    procs.stop(7)
    exits = []
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        for key, _ in selector.select(procs.next_deadline(time.monotonic())
                                      and max(0.0, procs.next_deadline(time.monotonic())
                                              - time.monotonic())):
            exits += procs.ready(key.data)
        exits += procs.due(time.monotonic())
    [ended] = exits
    assert (ended.task_id, ended.returncode, ended.signalled) == (7, -signal.SIGKILL, True)
    assert ended.last_line == "stubborn" and len(procs) == 0
    selector.close()


def test_pinned_runs_go_through_taskset_on_the_cpus_of_their_slots():
    from balsam_launcher.process import pinned_argv

    assert pinned_argv(["app"], (), [0, 1]) == ["app"]
    argv = pinned_argv(["app", "-x"], [1, 2], [4, 5, 7])
    assert argv[0].endswith("/taskset") and argv[1:] == ["--cpu-list", "5,7", "app", "-x"]
    with pytest.raises(OSError, match="CPU slot 3 is beyond the 3 CPU"):
        pinned_argv(["app"], [3], [4, 5, 7])
