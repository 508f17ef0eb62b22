"""Where launchers and tasks write their output, and reading it back (``balsam log``)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from balsam.errors import NotFound
from balsam.project import Project

#: ``launcher_<id>.log``, or ``launcher_<id>-<random>.log`` when that name was taken.
_LAUNCHER_LOG = re.compile(r"^launcher_(\d+)(?:-[0-9a-f]+)?\.log$")


def launcher_logs(project: Project) -> dict[int, Path]:
    """Each launcher's log file by launcher id (one file per launcher in ``log/``)."""
    found = {}
    for path in project.log_dir.glob("launcher_*.log"):
        match = _LAUNCHER_LOG.fullmatch(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def launcher_log(project: Project, launcher: int | None = None) -> tuple[int, Path]:
    """``(id, log)`` of launcher ``launcher``, or of the most recent one."""
    logs = launcher_logs(project)
    if not logs:
        message = f"no launcher has run in {project.root} yet (no log/launcher_*.log)"
        raise NotFound(message)
    if launcher is None:
        launcher = max(logs)
    if launcher not in logs:
        message = f"no log for launcher {launcher} in {project.log_dir}"
        raise NotFound(message)
    return launcher, logs[launcher]


def last_lines(path: Path, count: int | None) -> list[str]:
    """The last ``count`` lines of a file (all of them for None)."""
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    return lines if count is None else lines[-count:] if count > 0 else []


def follow(path: Path, echo: Callable[[str], None], *, interval: float = 0.5,
           until: Callable[[], bool] | None = None) -> None:
    """Print what is appended to ``path`` (like ``tail -f``) until ``until()`` is true (for ever
    without it: Ctrl-C ends it)."""
    with open(path, errors="replace") as f:
        f.seek(0, os.SEEK_END)
        while True:
            chunk = f.read()
            if chunk:
                echo(chunk)
            elif until is not None and until():
                return
            else:
                time.sleep(interval)
