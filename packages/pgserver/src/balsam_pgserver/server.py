"""Driving PostgreSQL with argument lists, never a shell: ``initdb``, the postmaster itself
(``pg_ctl start`` hands its options to ``/bin/sh``), ``pg_ctl stop`` and ``status``."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from balsam.errors import BalsamError
from balsam.project import ADMIN_ROLE

#: pg_hba.conf of an embedded cluster, rewritten at every start: no trust lines. Over the
#: project's socket everyone is their OS user (peer) and the owner's OS user alone may also be
#: the administrative role (map "owner" in pg_ident.conf); over TCP only TLS with a password, and
#: never the administrative role.
HBA = f"""\
# Written by balsam at every start (edits are lost): no trust lines.
local     all  {ADMIN_ROLE}          peer map=owner
local     all  all                   peer
hostssl   all  {ADMIN_ROLE}  all     reject
hostssl   all  all           all     scram-sha-256
hostnossl all  all           all     reject
"""

#: Postmasters this process started, by data directory: reaped when stopped (no zombies in a
#: long-lived process).
_started: dict[Path, subprocess.Popen[bytes]] = {}

#: Settings for throwaway clusters (tests, benchmarks): durability traded for speed.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresError(BalsamError):
    """A PostgreSQL tool failed."""


class PortTaken(PostgresError):
    """The server's TCP port is taken by another program."""


_OS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def ident_map(owner: str) -> str:
    """pg_ident.conf: the owner's OS user (and only it) may log in as the administrative role."""
    if not _OS_NAME.fullmatch(owner):
        message = f"cannot map the OS user name {owner!r} in pg_ident.conf"
        raise PostgresError(message)
    return ("# Written by balsam at every start (edits are lost).\n"
            "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n"
            f"owner      {owner}  {ADMIN_ROLE}\n")


def write_auth_files(datadir: Path, owner: str) -> None:
    """Rewrite pg_hba.conf and pg_ident.conf (0600): they are derived from the project, not
    configuration to keep."""
    for name, text in (("pg_hba.conf", HBA), ("pg_ident.conf", ident_map(owner))):
        path = datadir / name
        tmp = path.with_name(f".{name}.new")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def major_version(datadir: Path) -> int:
    """The PostgreSQL major version of a cluster (its ``PG_VERSION`` file)."""
    return int((datadir / "PG_VERSION").read_text().split(".")[0])


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
    kwargs = _as_user(run_as)
    try:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, **kwargs)
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


def port_free(port: int) -> bool:
    """Whether the postmaster could bind ``port`` on all interfaces now (it sets SO_REUSEADDR
    too, so a closing connection's TIME_WAIT does not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def start(datadir: Path, *, port: int, socket_dir: Path, logfile: Path,
          listen: str = "*", run_as: str | None = None, settings: Sequence[str] = (),
          timeout: float = 60) -> int:
    """Start the postmaster itself (an argument list: no shell sees the paths) in its own
    session, and wait until ``postmaster.pid`` says it is ready; return its pid.

    Its output goes to ``logfile`` (appended, never through a symlink).
    """
    refuse_root(run_as)
    args: list[str] = [str(bindir() / "postgres"), "-D", str(datadir), "-p", str(port),
                       "-k", str(socket_dir), "-c", f"listen_addresses={listen}"]
    extra = list(settings) + (list(FAST_SETTINGS) if os.environ.get("BALSAM_PG_FAST") else [])
    for setting in extra:
        args += ["-c", setting]
    log = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o600)
    try:
        user = _as_user(run_as)
        if user:  # root starting a test cluster: the log is its user's
            os.fchown(log, user["user"], user["group"])
        offset = os.fstat(log).st_size
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=datadir, start_new_session=True, **user)
    finally:
        os.close(log)
    deadline = time.monotonic() + timeout
    while not _ready(datadir, proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            tail = _log_tail(logfile, offset)
            if "Address already in use" in tail:
                message = f"port {port} is taken by another program"
                raise PortTaken(message)
            message = f"PostgreSQL did not start: {tail or f'exit status {proc.returncode}'}"
            raise PostgresError(message)
        time.sleep(0.01)
    _started[datadir] = proc
    return proc.pid


def _as_user(run_as: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as ``run_as`` (when we are root), with its own HOME and
    groups: a cluster in a directory shared through a group is reached through that group."""
    if not run_as or os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam(run_as)
    env = dict(os.environ, HOME=pw.pw_dir, USER=run_as, LOGNAME=run_as)
    groups = os.getgrouplist(run_as, pw.pw_gid)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups, "env": env}


def _ready(datadir: Path, pid: int) -> bool:
    """Whether ``postmaster.pid`` is this postmaster's and says ``ready`` (line 8)."""
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _log_tail(logfile: Path, offset: int) -> str:
    """The complaint the server logged after ``offset``: a failed bind, else the last FATAL or
    ERROR line."""
    try:
        with open(logfile, "rb") as f:
            f.seek(max(offset, f.seek(0, os.SEEK_END) - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    found = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln]
    bind = [ln for ln in lines if "Address already in use" in ln]
    return (bind or found or [""])[-1].strip()


def stop(datadir: Path, *, run_as: str | None = None, mode: str = "fast") -> None:
    """Stop the postmaster (``fast``: roll back open transactions, disconnect clients)."""
    proc = _run([bindir() / "pg_ctl", "-D", datadir, "-w", "-t", "60", "-m", mode, "stop"], run_as)
    _check(proc, "pg_ctl stop")
    child = _started.pop(datadir, None)
    if child is not None:
        child.wait(timeout=60)


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
