"""The launcher's private scratch directory on its host (per-run MPI session directories,
transfers in progress), and the removal of those whose launcher died without removing its own.

A launcher removes its scratch directory as it ends, but a launcher killed (SIGKILL, its fence,
a lost node) cannot. Each directory therefore holds a lock, ``.alive``, that its launcher holds
(``flock``) for as long as it lives: the kernel releases it however the process ends, and a pid
reused or seen from another PID namespace cannot pass for the launcher. The next launcher of the
same user on that host removes the directories whose lock it can take.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path

PREFIX = "balsam-launcher-"
ALIVE = ".alive"
_LOCK = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def make(base: str | None = None) -> tuple[Path, int]:
    """A new scratch directory (mode 700) and the descriptor whose lock says its launcher lives
    (keep it open; closing it is the end). The lock is taken before it has its name, so no other
    launcher ever finds it free while its launcher lives."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    fd = os.open(path / f"{ALIVE}.new", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                 | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(path / f"{ALIVE}.new", path / ALIVE)
    return path, fd


def remove_stale(base: str | None = None) -> int:
    """Remove this user's scratch directories whose launcher is gone (their lock is free);
    returns how many. A directory without a lock (being made, or made by an older launcher)
    is left as it is."""
    base = base or tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            fd = os.open(os.path.join(entry.path, ALIVE), _LOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its launcher lives
        finally:
            os.close(fd)
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed
