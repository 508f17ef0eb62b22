"""The launcher's lease, as its fence sees it.

A launcher may keep its tasks running only while its heartbeat is fresh: others presume it dead
``heartbeat_timeout`` seconds after the last heartbeat the database recorded. The fence (the
process that supervises the launcher) kills the launcher's tasks before that can happen, counting
from when each committed heartbeat was *sent* (the database dated it no earlier). The engine calls
:func:`renewed` after every committed heartbeat; outside a fence it does nothing.
"""

from __future__ import annotations

import os
import struct

#: One renewal on the pipe: the monotonic time (seconds) the heartbeat was sent.
RECORD = struct.Struct("=d")

_fd: int | None = None


def attach(fd: int | None) -> None:
    """Send renewals to ``fd`` (the non-blocking write end of the fence's pipe), or nowhere."""
    global _fd
    _fd = fd


def renewed(sent_at: float) -> None:
    """Report a committed heartbeat sent at ``sent_at`` (``time.monotonic()``).

    Never blocks: a fence that is not reading keeps the renewals it has, and a lost one only
    makes the fence act earlier, never later.
    """
    if _fd is None:
        return
    try:
        os.write(_fd, RECORD.pack(sent_at))
    except (BlockingIOError, BrokenPipeError):
        pass
