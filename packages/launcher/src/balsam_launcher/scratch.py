"""The launcher's private scratch directory on its host (per-run MPI session directories,
transfers in progress), and the removal of those whose launcher died without removing its own.

A launcher removes its scratch directory as it ends, but a launcher killed (SIGKILL, its fence,
a lost node) cannot. Each directory therefore holds a lock, ``.alive``, that its launcher holds
(``flock``) for as long as it lives: the kernel releases it however the process ends, and a pid
reused or seen from another PID namespace cannot pass for the launcher. The next launcher of the
same user on that host removes the directories whose lock it can take.

The base directory (``$TMPDIR``, else ``/tmp``) may be shared with hostile users: every entry is
reached through descriptors (the directory without following a symlink and checked to be ours,
the lock opened in it as a regular file, never blocking), and removed relative to the base.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

PREFIX = "balsam-launcher-"
ALIVE = ".alive"
#: A directory whose lock never got its name (its launcher died making it) is taken as dead
#: once it is this old (seconds): younger, its launcher may be between making and locking it.
UNNAMED_GRACE = 60.0
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def make(base: str | None = None) -> tuple[Path, int]:
    """A new scratch directory (mode 700) and the descriptor whose lock says its launcher lives
    (keep it open; closing it is the end). The lock is taken before it has its name, so no other
    launcher ever finds it free while its launcher lives. Where locks are not supported (some
    network file systems), the directory is made without one: it is then never taken as dead."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    fd = os.open(path / f"{ALIVE}.new", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        return path, fd  # unnamed and unlockable: left alone by every launcher
    os.rename(path / f"{ALIVE}.new", path / ALIVE)
    return path, fd


def remove_stale(base: str | None = None) -> int:
    """Remove this user's scratch directories whose launcher is gone (their lock is free);
    returns how many. Anything else (another user's, a symlink, a lock that is not a regular
    file or cannot be taken) is left as it is."""
    try:
        base_fd = os.open(base or tempfile.gettempdir(), _DIR)
    except OSError:
        return 0
    removed = 0
    try:
        for name in os.listdir(base_fd):
            if name.startswith(PREFIX) and _dead(base_fd, name):
                shutil.rmtree(name, dir_fd=base_fd, ignore_errors=True)
                removed += 1
    finally:
        os.close(base_fd)
    return removed


def _dead(base_fd: int, name: str) -> bool:
    try:
        dir_fd = os.open(name, _DIR, dir_fd=base_fd)
    except OSError:
        return False
    try:
        if os.fstat(dir_fd).st_uid != os.getuid():
            return False
        with contextlib.suppress(FileNotFoundError):
            return _lock_free(dir_fd, ALIVE)
        unnamed = _lock_free(dir_fd, f"{ALIVE}.new")
        return unnamed and time.time() - os.stat(dir_fd).st_mtime > UNNAMED_GRACE
    except OSError:
        return False
    finally:
        os.close(dir_fd)


def _lock_free(dir_fd: int, name: str) -> bool:
    """Whether the lock file ``name`` is a regular file nobody holds (FileNotFoundError if it
    is not there)."""
    fd = os.open(name, _LOCK, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held (its launcher lives), or locks unsupported here
            return False
        return True
    finally:
        os.close(fd)
