"""Task processes: started in their own process group, watched through a pidfd, stopped as a
group (mpirun and shell wrappers take their children with them)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from balsam_launcher.steps import kill_group


@dataclass
class Run:
    """One running task process."""

    task_id: int
    popen: subprocess.Popen[bytes]
    #: Readable once the process has exited (None where pidfds are unavailable: poll instead).
    pidfd: int | None
    output: Path
    started: float
    #: Why the launcher stops it (``user``, ``stop``, ``lost``), None while it runs freely.
    stopping: str | None = None
    kill_at: float | None = None
    #: Started by a node agent (exits arrive as messages); see balsam_launcher.agent.
    remote: bool = False
    error: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def stop(self, reason: str, grace: float) -> None:
        """SIGTERM the process group now, SIGKILL it after ``grace`` seconds (see :meth:`tick`)."""
        if self.stopping is None:
            self.stopping = reason
            self.kill_at = time.monotonic() + grace
            kill_group(self.pid, signal.SIGTERM)

    def tick(self, now: float) -> None:
        if self.kill_at is not None and now >= self.kill_at:
            kill_group(self.pid, signal.SIGKILL)
            self.kill_at = None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.stopping:
            kill_group(self.pid, signal.SIGKILL)  # stragglers of a stopped group


def spawn(task_id: int, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
          output: Path) -> Run:
    """Start ``argv`` in ``cwd`` with stdout and stderr appended to ``output``.

    OSError (no such executable, permission denied) propagates to the caller.
    """
    with open(output, "ab") as out:
        popen = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=out,
                                 stderr=subprocess.STDOUT, stdin=_devnull(), process_group=0)
    try:
        pidfd: int | None = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        pidfd = None
    return Run(task_id, popen, pidfd, output, time.monotonic())


@functools.cache
def _devnull() -> int:
    """One /dev/null for every task's stdin (``subprocess.DEVNULL`` opens one per task)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
