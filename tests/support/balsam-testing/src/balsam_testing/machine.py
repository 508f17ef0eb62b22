"""What a machine has one of for its test sessions: its Slurm (single-host, or the namespace
cluster of ``scripts/cluster-up.sh``). Two sessions at once on one machine (two engineers' suites)
would tear down each other's; a session holds :func:`slurm` while it uses either."""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: The lock file; any session (of any checkout) on this machine takes the same one.
LOCK = "/tmp/balsam-tests-slurm.lock"

_held = {"fd": -1, "depth": 0}


@contextmanager
def slurm() -> Iterator[None]:
    """Hold this machine's Slurm for the block, waiting (and saying so) while another session
    holds it. Nested holds in one process share the lock: the single-host and multi-host
    fixtures of one session may both be up."""
    if _held["depth"] == 0:
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another test session to release this machine's Slurm ({LOCK})",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        _held["fd"] = fd
    _held["depth"] += 1
    try:
        yield
    finally:
        _held["depth"] -= 1
        if _held["depth"] == 0:
            os.close(_held["fd"])  # closing the only descriptor releases the lock
            _held["fd"] = -1
