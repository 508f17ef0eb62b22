"""Test clean-up of embedded PostgreSQL clusters that tests started as their users."""

from __future__ import annotations

import os
import pwd
import signal
import time
import warnings
from pathlib import Path

from balsam_testing.launchers import alive


def stop_servers_under(path: Path) -> None:
    """Stop every embedded cluster below ``path`` as its owner (test clean-up). A postmaster
    ``pg_ctl`` could not stop, or one without a pid file (found by its working directory, its
    data directory), is ended by SIGQUIT, then SIGKILL, and named in a warning: deleting the
    directory under a live server would leave it running unseen."""
    from balsam_pgserver import server

    failed: dict[Path, str] = {}
    for pidfile in path.glob("**/balsamdb/postmaster.pid"):
        datadir = pidfile.parent
        try:
            owner = pwd.getpwuid(datadir.stat().st_uid).pw_name
            server.stop(datadir, run_as=owner, mode="immediate")
        except Exception as exc:  # noqa: BLE001 - ended below, and reported
            failed[datadir] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for pid, datadir in _postmasters_under(path).items():
        why = failed.pop(datadir, "no pid file, or still running after pg_ctl stop")
        warnings.warn(f"test clean-up: postmaster {pid} of {datadir} ended by signal ({why})",
                      stacklevel=2)
        _end(pid)
    for datadir, why in failed.items():
        warnings.warn(f"test clean-up: pg_ctl stop of {datadir} failed ({why})", stacklevel=2)


def _postmasters_under(path: Path) -> dict[int, Path]:
    """Postmasters (``postgres`` processes whose parent is not one) whose working directory,
    their data directory, lies below ``path``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            if Path(f"/proc/{ppid}/comm").read_text().strip() == "postgres":
                continue  # a backend: its postmaster ends it
            cwd = Path(os.readlink(entry / "cwd"))
        except (OSError, ValueError, IndexError):
            continue
        if cwd.is_relative_to(path):
            found[int(entry.name)] = cwd
    return found


def _end(pid: int, grace: float = 10) -> None:
    """SIGQUIT (PostgreSQL's immediate shutdown), then SIGKILL if it is still there."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
