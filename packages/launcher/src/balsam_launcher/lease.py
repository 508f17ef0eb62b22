"""The launcher's lease, as its fence sees it.

A launcher may keep its tasks running only while its heartbeat is fresh: others presume it dead
``heartbeat_timeout`` seconds after the last heartbeat the database recorded. The fence (the
process that supervises the launcher, :mod:`balsam_launcher.fence`) kills the launcher's tasks
before that can happen, counting from when each committed heartbeat was *sent* (the database
dated it no earlier). The engine calls :func:`renewed` after every committed heartbeat; a node
agent calls :func:`extend` when its launcher renews its lease. Outside a fence both do nothing.

What travels on the fence's pipe is the lease's *expiry*: the ``time.monotonic()`` at which the
fence must act. Once it has killed every task, the fence writes to a second pipe and sends
:data:`FENCED` to wake the launcher: :func:`lapsed` then says so. The arithmetic is here, as
pure functions.
"""

from __future__ import annotations

import os
import signal
import struct
import time
from collections.abc import Iterable
from typing import Any

#: One renewal on the pipe: the monotonic time (seconds) at which the lease expires.
RECORD = struct.Struct("=d")
#: Wakes the launcher once the fence has written its notice. Ignored by default, so that it
#: is harmless to a process that is already exiting; a stray one is checked against the pipe.
FENCED = signal.SIGURG
#: The most the fence acts ahead of the database's deadline (seconds); see :func:`margin`.
MAX_MARGIN = 5.0

_fd: int | None = None
_notice: int | None = None
_timeout: float | None = None
_until: float | None = None  # the latest expiry sent
_poked = False  # FENCED arrived: look at the notice pipe
_lapsed = False


# --- the arithmetic ------------------------------------------------------------------------------


def margin(timeout: float) -> float:
    """How long before the database may presume the launcher dead its fence acts.

    It must cover the fence's own wake-up and the killing of every process (tens of ms measured,
    hundreds on a loaded node or with Slurm steps to cancel), the drift between the database's
    clock and this host's over one timeout (NTP slews at most 500 ppm), and an agent's network
    delay. A quarter of the timeout, at most :data:`MAX_MARGIN`: a healthy launcher heartbeats
    every quarter timeout (at most every 10 s), so it renews with half its timeout, or 45 s of
    60, to spare.
    """
    return min(timeout / 4, MAX_MARGIN)


def expiry(sent_at: float, timeout: float) -> float:
    """When the lease of a heartbeat sent at ``sent_at`` (monotonic) expires for the fence."""
    return sent_at + timeout - margin(timeout)


def deadline(sent: Iterable[float], timeout: float) -> float | None:
    """When the fence acts, given the send times of every committed heartbeat (None: never
    renewed, nothing to fence). Renewals may arrive late or out of order: the latest counts."""
    return max((expiry(s, timeout) for s in sent), default=None)


# --- the launcher's (or agent's) side of the pipes -----------------------------------------------


def attach(fd: int | None, timeout: float | None = None, notice: int | None = None) -> None:
    """Send renewals to ``fd`` (the non-blocking write end of the fence's pipe), or nowhere;
    ``timeout`` is the launcher's heartbeat timeout (None for an agent, whose launcher says how
    long each renewal lasts); ``notice`` is the non-blocking read end of the pipe on which the
    fence says it has killed the tasks. Starts a new lease: nothing renewed, nothing lapsed."""
    global _fd, _notice, _timeout, _until, _poked, _lapsed
    _fd, _notice, _timeout, _until, _poked, _lapsed = fd, notice, timeout, None, False, False


def renewed(sent_at: float) -> None:
    """Report a committed heartbeat sent at ``sent_at`` (``time.monotonic()``).

    Never blocks: a fence that is not reading keeps the renewals it has, and a lost one only
    makes the fence act earlier, never later.
    """
    if _timeout is not None:
        _send(expiry(sent_at, _timeout))


def extend(seconds: float) -> None:
    """An agent's lease: its launcher says the lease runs ``seconds`` more (from when it sent
    that; the message's transit comes out of the margin)."""
    _send(time.monotonic() + seconds)


def _send(until: float) -> None:
    global _until
    if _fd is None:
        return
    _until = until if _until is None else max(_until, until)
    try:
        os.write(_fd, RECORD.pack(until))
    except (BlockingIOError, BrokenPipeError):
        pass


def watch() -> None:
    """Be woken by :data:`FENCED` (a process waiting on ``signal.set_wakeup_fd`` is too)."""
    signal.signal(FENCED, _on_fenced)


def _on_fenced(signum: int, frame: Any) -> None:
    global _poked
    _poked = True


def lapsed() -> bool:
    """Whether the fence has killed this process's tasks because its lease expired."""
    global _poked, _lapsed
    if _poked and not _lapsed and _notice is not None:
        _poked = False
        try:
            _lapsed = bool(os.read(_notice, 1))
        except BlockingIOError:
            pass
    return _lapsed


def confirmed(within: float) -> bool:
    """Wait up to ``within`` seconds for the fence to say it has killed every task."""
    deadline = time.monotonic() + within
    while not lapsed() and time.monotonic() < deadline:
        time.sleep(0.01)
    return lapsed()


def expired(now: float | None = None) -> bool:
    """Whether the lease has run out by this process's own clock: its fence is killing (or has
    killed) its tasks, so an exit seen now may be the fence's doing, not the task's."""
    return _until is not None and (time.monotonic() if now is None else now) >= _until
