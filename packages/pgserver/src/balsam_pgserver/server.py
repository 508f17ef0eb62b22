"""Driving PostgreSQL's own tools (initdb, pg_ctl) with argument lists, never a shell."""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from balsam.errors import BalsamError

HBA = """\
# Written by balsam: no trust lines. Local connections authenticate by OS user (peer);
# TCP connections (compute nodes) need the user's generated password.
local   all   all                 peer
host    all   all   0.0.0.0/0     scram-sha-256
host    all   all   ::/0          scram-sha-256
"""

#: Settings for throwaway clusters (tests, benchmarks): durability traded for speed.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(BalsamError):
    """A PostgreSQL tool failed."""


def bindir() -> Path:
    """Directory of initdb/pg_ctl: $BALSAM_PG_BINDIR, ``pg_config --bindir``, or the newest
    ``/usr/lib/postgresql/*/bin``."""
    candidates: list[str] = []
    if os.environ.get("BALSAM_PG_BINDIR"):
        candidates.append(os.environ["BALSAM_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0:
            candidates.append(out.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name), reverse=True)
    for c in candidates:
        if (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    message = ("PostgreSQL server binaries (initdb, pg_ctl) not found: "
               "install postgresql or set BALSAM_PG_BINDIR")
    raise PostgresError(message)


def refuse_root(run_as: str | None) -> None:
    """PostgreSQL refuses to run as root: say so before initdb does, in plain words."""
    if os.geteuid() == 0 and not run_as:
        message = ("PostgreSQL cannot run as root: run this as the ordinary user who will own the "
                   "project (for example: runuser -u alice -- balsam init DIR)")
        raise PostgresError(message)


def _run(args: Sequence[str | os.PathLike[str]], run_as: str | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    kwargs: dict[str, object] = {}
    if run_as and os.geteuid() == 0:
        pw = pwd.getpwnam(run_as)
        env = dict(os.environ, HOME=pw.pw_dir, USER=run_as, LOGNAME=run_as)
        kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "env": env}
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    except subprocess.TimeoutExpired as exc:
        message = f"{Path(str(args[0])).name} timed out after {timeout:.0f}s"
        raise PostgresError(message) from exc


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit status {proc.returncode}"
        message = f"{what} failed: {detail}"
        raise PostgresError(message)


def initdb(datadir: Path, *, superuser: str | None = None, run_as: str | None = None,
           hba: str = HBA) -> None:
    """Create a cluster in ``datadir`` (mode 700) with our pg_hba.conf."""
    refuse_root(run_as)
    args: list[str | Path] = [bindir() / "initdb", "-D", datadir, "-E", "UTF8", "--locale=C.UTF-8",
                              "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"]
    if superuser:
        args += ["-U", superuser]
    if os.environ.get("BALSAM_PG_FAST"):
        args.append("--no-sync")
    _check(_run(args, run_as), "initdb")
    hba_path = datadir / "pg_hba.conf"
    hba_path.write_text(hba)
    if run_as and os.geteuid() == 0:
        pw = pwd.getpwnam(run_as)
        os.chown(hba_path, pw.pw_uid, pw.pw_gid)


def free_port() -> int:
    """A TCP port free right now on all interfaces (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def start(datadir: Path, *, port: int, socket_dir: Path, logfile: Path,
          listen: str = "*", run_as: str | None = None, settings: Sequence[str] = ()) -> None:
    """Start the postmaster and wait until it accepts connections."""
    refuse_root(run_as)
    opts = ["-p", str(port), "-k", str(socket_dir), "-c", f"listen_addresses={listen}"]
    extra = list(settings) + (list(FAST_SETTINGS) if os.environ.get("BALSAM_PG_FAST") else [])
    for s in extra:
        opts += ["-c", s]
    # -l is essential: without it the postmaster inherits our pipes and pg_ctl never returns.
    args = [bindir() / "pg_ctl", "-D", datadir, "-l", logfile, "-w", "-t", "60",
            "-o", _quote_opts(opts), "start"]
    proc = _run(args, run_as)
    if proc.returncode != 0:
        tail = _log_tail(logfile)
        message = f"PostgreSQL did not start: {tail or proc.stderr.strip()}"
        raise PostgresError(message)


def _quote_opts(opts: list[str]) -> str:
    """pg_ctl passes -o through a shell; quote each option (paths may hold spaces)."""
    return " ".join(shlex.quote(o) for o in opts)


def _log_tail(logfile: Path) -> str:
    try:
        lines = [ln for ln in logfile.read_text().splitlines() if "FATAL" in ln or "ERROR" in ln]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def stop(datadir: Path, *, run_as: str | None = None, mode: str = "fast") -> None:
    """Stop the postmaster (``fast``: roll back open transactions, disconnect clients)."""
    proc = _run([bindir() / "pg_ctl", "-D", datadir, "-w", "-t", "60", "-m", mode, "stop"], run_as)
    _check(proc, "pg_ctl stop")


def is_running(datadir: Path, *, run_as: str | None = None) -> bool:
    """``pg_ctl status``: 0 running, 3 not running."""
    return _run([bindir() / "pg_ctl", "-D", datadir, "status"], run_as).returncode == 0


def clear_stale_pid(datadir: Path, timeout: float = 30) -> bool:
    """After a crash (kill -9), remove postmaster.pid if its process is gone; wait for orphaned
    backends to exit first, since they still hold the shared memory. Returns True if removed."""
    pidfile = datadir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return False
    if _postgres_alive(pid):
        return False
    deadline = time.monotonic() + timeout
    while _orphans(datadir) and time.monotonic() < deadline:
        time.sleep(0.2)
    pidfile.unlink(missing_ok=True)
    return True


def _postgres_alive(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm.startswith("postgres") or comm.startswith("postmaster")


def _orphans(datadir: Path) -> list[int]:
    """Backends of a killed postmaster (processes whose cwd is the data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if Path(entry / "cwd").resolve() == datadir.resolve():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def accepts_connections(*, socket_path: Path | None = None, host: str | None = None,
                        port: int | None = None, timeout: float = 2.0) -> bool:
    """Whether something listens on the server's unix socket or TCP port (no authentication)."""
    try:
        if socket_path is not None:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(timeout)
                s.connect(str(socket_path))
            return True
        if host and port:
            with socket.create_connection((host, port), timeout=timeout):
                return True
    except OSError:
        return False
    return False
