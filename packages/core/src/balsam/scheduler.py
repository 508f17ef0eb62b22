"""The batch scheduler interface (the ``register_schedulers`` hook's contract): what a site's
scheduler implements, depending on balsam-core alone.

A scheduler submits a rendered job script, reports the state of submitted jobs and cancels them.
balsam-launcher ships local, slurm, pbs and cobalt, and picks one per project
(``balsam_launcher.schedulers.get_scheduler``).
"""

from __future__ import annotations

import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from balsam.errors import SchedulerError

if TYPE_CHECKING:
    from balsam.project import Project

#: batch_jobs states a scheduler reports (``pending`` and ``submitted`` are balsam's own).
QUEUED = "queued"
RUNNING = "running"
FINISHED = "finished"
FAILED = "failed"
CANCELLED = "cancelled"
ENDED = frozenset({FINISHED, FAILED, CANCELLED})


@dataclass(frozen=True)
class JobStatus:
    """What a scheduler knows about one of its jobs."""

    state: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    message: str = ""


class Scheduler(ABC):
    """One batch system. Subclasses set the class attributes and implement the three methods.

    :cvar name: the name users select (``--scheduler slurm``).
    :cvar template: file name of the default job template (package data, overridable per project
        and per user, see :mod:`balsam_launcher.submit`).
    :cvar nodelist_env: the environment variable through which a running job learns its nodes
        (the launcher reads it); empty for the local scheduler.
    """

    name: ClassVar[str]
    template: ClassVar[str]
    nodelist_env: ClassVar[str] = ""

    def __init__(self, project: Project) -> None:
        self.project = project

    @abstractmethod
    def submit(self, script: Path, job: dict[str, Any]) -> str:
        """Submit ``script`` (already rendered for the batch job row ``job``); return the
        scheduler's job id. Raise SchedulerError (nothing queued) on refusal."""

    @abstractmethod
    def status(self, ids: Sequence[str]) -> dict[str, JobStatus]:
        """The status of the given jobs. A job missing from the result is unknown to the
        scheduler (long finished or never there); raise SchedulerError if the scheduler could not
        be asked at all, so that no job is mistaken for a vanished one."""

    @abstractmethod
    def cancel(self, scheduler_id: str, *, force: bool = False) -> None:
        """Stop a job: gracefully (SIGTERM to the job script, so the launcher marks its running
        tasks RUN_TIMEOUT) unless ``force``, which kills it outright. Called only for ids in the
        user's private record (:mod:`balsam_launcher.submitted`)."""

    def details(self, scheduler_id: str) -> dict[str, Any]:
        """What to keep in the submitter's private record about a job just submitted, beyond
        its id (the local scheduler: which process it is)."""
        return {}

    def run(self, args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
            what: str | None = None) -> str:
        """Run a scheduler command; return its stdout or raise SchedulerError with its last
        line of complaint."""
        proc = call(args, cwd=cwd)
        if proc.returncode != 0:
            message = f"{what or proc.args[0]} failed: {last_line(proc)}"
            raise SchedulerError(message)
        return proc.stdout


def call(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
         env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command (an argument list, never a shell line) and capture its output; a missing or
    hung command is a SchedulerError."""
    argv = [str(a) for a in args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        message = f"{argv[0]} not found: is the batch scheduler installed and on PATH?"
        raise SchedulerError(message) from None
    except subprocess.TimeoutExpired:
        message = f"{argv[0]} did not answer within {timeout:g} s"
        raise SchedulerError(message) from None


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last non-blank line a failed command printed (its complaint)."""
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"
