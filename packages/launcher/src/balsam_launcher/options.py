"""What ``balsam launcher`` is asked to do: its options, checked before anything starts."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from balsam import liveness
from balsam.errors import InvalidInput
from balsam.models import validate_user_name
from balsam.resources import JOB_MODES
from balsam_launcher import steps

#: The largest ``--nodes`` (more is a typo, not a machine).
MAX_NODES = 100_000


@dataclass
class Options:
    """What ``balsam launcher`` was asked to do."""

    job_mode: str = "mpi"
    wf_filter: str = ""
    wf_substring: bool = False
    consume_all: bool = False
    time_limit_minutes: float | None = None
    nodes: int | None = None
    batch_job_id: int | None = None
    #: Others presume this launcher dead after this long without a heartbeat.
    heartbeat_timeout: float = 60.0
    #: Look for work this often even when no NOTIFY arrives.
    poll_interval: float = 5.0
    #: Extra runs of a task that exits non-zero and has no error handler.
    max_retries: int = 0
    #: Seconds between SIGTERM and SIGKILL when stopping a task.
    kill_grace: float = 3.0
    #: Threads for stage-in and pre- and post-processing scripts.
    workers: int = 4
    script_timeout: float = steps.SCRIPT_TIMEOUT
    #: Absolute directories outside the project where tasks may work.
    allow_workdir: tuple[str, ...] = ()
    #: Users whose tasks it runs besides its user's and those its user trusts (``balsam trust``).
    trust: tuple[str, ...] = ()
    #: GPUs on each node, shared out to tasks by their gpus_per_rank.
    gpus_per_node: int = 0
    #: Use the allocation's nodes from this one on, at most this many (legacy: several launchers
    #: in one batch job).
    offset_nodes: int = 0
    limit_nodes: int | None = None
    #: Keep running until killed or out of time, even with no work (the default; refuses
    #: consume_all).
    persistent: bool = False

    @property
    def heartbeat_interval(self) -> float:
        return liveness.heartbeat_interval(self.heartbeat_timeout)

    def check(self) -> None:
        """InvalidInput (one line) for a value no launcher should start with."""
        bounds: list[tuple[str, float | None, float, float]] = [
            ("--nodes", self.nodes, 1, MAX_NODES),
            ("--heartbeat-timeout", self.heartbeat_timeout, 0.1, 86_400),
            ("--poll-interval", self.poll_interval, 0.01, 3_600),
            ("--time-limit-minutes", self.time_limit_minutes, 0.001, 525_600),
            ("--kill-grace", self.kill_grace, 0, 3_600),
            ("--workers", self.workers, 1, 256),
            ("--max-retries", self.max_retries, 0, 1_000),
            ("--gpus-per-node", self.gpus_per_node, 0, 1_024),
            ("--offset-nodes", self.offset_nodes, 0, MAX_NODES),
            ("--limit-nodes", self.limit_nodes, 1, MAX_NODES),
            ("script timeout", self.script_timeout, 0.1, 86_400),
        ]
        for name, value, low, high in bounds:
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                message = f"{name} must be between {low:g} and {high:,g}, got {value}"
                raise InvalidInput(message)
        if self.persistent and self.consume_all:
            message = "--persistent keeps the launcher running with no work: not with --consume-all"
            raise InvalidInput(message)
        if self.job_mode not in JOB_MODES:
            message = f"invalid job mode {self.job_mode!r}; expected one of: {', '.join(JOB_MODES)}"
            raise InvalidInput(message)
        for prefix in self.allow_workdir:
            if not os.path.isabs(prefix):
                message = f"--allow-workdir needs an absolute directory, got {prefix!r}"
                raise InvalidInput(message)
        for name in self.trust:
            try:
                validate_user_name(name)
            except InvalidInput as exc:
                message = f"--trust: {exc}"
                raise InvalidInput(message) from None
