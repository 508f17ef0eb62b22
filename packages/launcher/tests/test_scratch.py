"""Scratch directories: a launcher's stays while it lives, whatever pid games; a killed one's is
removed by the next launcher of its user; nothing else is touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from balsam_launcher import scratch

#: A launcher stand-in: makes its scratch directory in argv[1], says where, and lives on.
HOLDER = """
import sys, time
from balsam_launcher import scratch
path, _ = scratch.make(sys.argv[1])
print(path, flush=True)
time.sleep(60)
"""


def _holder(base: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(base)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_a_killed_launchers_scratch_goes_and_a_live_ones_stays(tmp_path):
    live, live_dir = _holder(tmp_path)
    dead, dead_dir = _holder(tmp_path)
    try:
        (dead_dir / "ompi-session").mkdir()
        (dead_dir / "ompi-session" / "file").write_text("x")
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait()
        assert scratch.remove_stale(str(tmp_path)) == 1
        assert not dead_dir.exists()
        assert live_dir.is_dir() and (live_dir / scratch.ALIVE).exists()
        assert scratch.remove_stale(str(tmp_path)) == 0
    finally:
        for proc in (live, dead):
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
    assert scratch.remove_stale(str(tmp_path)) == 1  # and once it is gone, its own goes too
    assert not live_dir.exists()


def test_our_own_scratch_is_alive_to_a_scan_from_this_process(tmp_path):
    path, fd = scratch.make(str(tmp_path))
    try:
        assert oct(path.stat().st_mode & 0o777) == "0o700"
        assert scratch.remove_stale(str(tmp_path)) == 0
        assert path.is_dir()
    finally:
        os.close(fd)
    assert scratch.remove_stale(str(tmp_path)) == 1


def test_what_is_not_a_dead_launchers_scratch_is_left(tmp_path):
    unlocked = tmp_path / f"{scratch.PREFIX}old"  # no lock: being made, or an older launcher's
    unlocked.mkdir()
    other = tmp_path / f"{scratch.PREFIX}nobody"  # another user's
    other.mkdir()
    (other / scratch.ALIVE).touch()
    os.chown(other, 65534, 65534)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / scratch.ALIVE).touch()
    (tmp_path / f"{scratch.PREFIX}link").symlink_to(target)  # a symlink, even to a dead one's
    not_ours = tmp_path / "balsam-other"
    not_ours.mkdir()
    (not_ours / scratch.ALIVE).touch()
    assert scratch.remove_stale(str(tmp_path)) == 0
    assert unlocked.is_dir() and other.is_dir() and target.is_dir() and not_ours.is_dir()
    assert scratch.remove_stale(str(tmp_path / "missing")) == 0


def test_a_planted_lock_that_is_no_regular_file_never_blocks_nor_counts(tmp_path):
    fifo = tmp_path / f"{scratch.PREFIX}fifo"
    fifo.mkdir()
    os.mkfifo(fifo / scratch.ALIVE)  # opened for reading, it would block a launcher forever
    assert scratch.remove_stale(str(tmp_path)) == 0
    assert fifo.is_dir()


def test_a_lock_that_never_got_its_name_is_dead_once_old(tmp_path):
    """Its launcher died between making the lock and naming it; a young one may be mid-way."""
    young, old = (tmp_path / f"{scratch.PREFIX}{n}" for n in ("young", "old"))
    for d in (young, old):
        d.mkdir()
        (d / f"{scratch.ALIVE}.new").touch()
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert scratch.remove_stale(str(tmp_path)) == 1
    assert young.is_dir() and not old.exists()
