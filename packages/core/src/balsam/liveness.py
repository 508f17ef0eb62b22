"""When a launcher is alive, suspect or dead: the rules the reaper, the monitors and a
``--consume-all`` launcher share, as pure functions of what the database says about it.

A launcher is *dead* when its heartbeat is older than its timeout (its fence has killed its
tasks by then, see :mod:`balsam_launcher.lease`), or at once when the scheduler reports its batch
job ended: the scheduler ends a job by killing its processes on every node. Not after a node
failure, though: a lost node may be cut off rather than dead, and its processes stop only when
their lease lapses, so such a launcher waits for its heartbeat timeout like any silent one.
A launcher is *suspect* when it is dead or has missed a heartbeat.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

#: Batch job states after which none of its launchers can still be running.
BATCH_ENDED = ("finished", "failed", "cancelled")
#: Scheduler words (in a batch job's message) for an end that did not reach every node: its
#: processes may live on, cut off, until their lease lapses.
UNCONFIRMED_ENDS = ("NODE_FAIL",)


def heartbeat_interval(timeout: float) -> float:
    """How often a launcher with this heartbeat timeout heartbeats (a quarter of it, between
    0.2 and 10 seconds)."""
    return max(0.2, min(10.0, timeout / 4))


def late_after(timeout: float) -> float:
    """A heartbeat older than this has been missed (two intervals, at most the timeout)."""
    return min(timeout, 2 * heartbeat_interval(timeout))


@dataclass(frozen=True)
class Facts:
    """What the database says about a launcher that has not recorded its end. ``batch_over``:
    the batch job's end was confirmed by its scheduler (it has an end time; a job cancelled by
    a user has none until then). ``server_uptime``: a server restarted within a timeout cannot
    tell silence from its own absence."""

    heartbeat_age: float
    heartbeat_timeout: float
    batch_state: str | None = None
    batch_over: bool = False
    batch_message: str = ""
    server_uptime: float = math.inf


def batch_ended(f: Facts) -> bool:
    """Whether the scheduler reports the launcher's batch job ended on every node."""
    return (f.batch_state in BATCH_ENDED and f.batch_over
            and not any(word in f.batch_message for word in UNCONFIRMED_ENDS))


def dead(f: Facts) -> str:
    """Why the launcher is dead (its tasks may be recovered now), or "" while it may live."""
    if batch_ended(f):
        return f"its batch job is {f.batch_state}"
    if f.heartbeat_age > f.heartbeat_timeout and f.server_uptime > f.heartbeat_timeout:
        return f"no heartbeat for {f.heartbeat_age:.0f}s (timeout {f.heartbeat_timeout:.0f}s)"
    return ""


def suspect(f: Facts) -> str:
    """Why a launcher whose row says it runs looks dead or may be: dead, silent past a
    heartbeat, or in a batch job that ended where the end may not have reached its node; ""
    when it is healthy."""
    why = dead(f)
    if why:
        return f"{why}: presumed dead"
    if f.heartbeat_age > late_after(f.heartbeat_timeout):
        return (f"heartbeat late: {f.heartbeat_age:.0f}s ago "
                f"(timeout {f.heartbeat_timeout:.0f}s)")
    if f.batch_state in BATCH_ENDED and f.batch_over:
        return (f"its batch job is {f.batch_state} ({f.batch_message}): presumed dead "
                f"{f.heartbeat_timeout - f.heartbeat_age:.0f}s from now, at its heartbeat timeout")
    return ""


def out_of_work(work_left: bool, holders: Iterable[Facts], idle_for: float = math.inf) -> bool:
    """Whether a ``--consume-all`` launcher that has had no work for ``idle_for`` seconds may
    exit, given the launchers holding tasks it could take: only when it has no work and each
    holder has proved itself alive since (a heartbeat newer than that: a holder lost a moment
    ago still looks healthy) and is not suspect. Otherwise the holder may be reaped and its
    tasks given back: wait for its heartbeat timeout to decide."""
    return not work_left and all(h.heartbeat_age < idle_for and not suspect(h) for h in holders)
