"""``balsam web`` (serve the live page) and ``balsam report html`` (the same overview and charts
as one self-contained file)."""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from balsam import analytics, durations, zones
from balsam.errors import BalsamError, InvalidInput
from balsam.project import Project
from balsam_web import render, views
from balsam_web.app import LOOPBACK, Settings, create_app
from balsam_web.db import connect_readonly

DEFAULT_PORT = 8250

#: What to do when the host is the problem.
HOST_ADVICE = "choose another --host, an address of this machine (default 127.0.0.1)"
#: Errors of bind(2) that are the port's fault: in use, or reserved for root.
PORT_ERRORS = frozenset({errno.EADDRINUSE, errno.EACCES})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); InvalidInput if it cannot be."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except socket.gaierror as exc:
        message = f"cannot serve on host {host!r}: {exc.strerror}; {HOST_ADVICE}"
        raise InvalidInput(message) from None
    except UnicodeError:  # the IDNA codec: a label over 63 characters, a name over 253
        message = f"cannot serve on host {host!r}: not a valid host name; {HOST_ADVICE}"
        raise InvalidInput(message) from None
    except OSError as exc:
        raise InvalidInput(bind_error(host, port, exc.errno)) from None


def bind_error(host: str, port: int, err: int | None) -> str:
    """The one line for a failed bind: blame the port only when it is the port's fault (the
    address not on this machine, or not usable, is the host's)."""
    if err == errno.EADDRNOTAVAIL:
        reason = "it is not an address of this machine"
    else:
        reason = os.strerror(err) if err else "failed"
    if err in PORT_ERRORS:
        return (f"cannot listen on {url_host(host)}:{port}: {reason}; choose another port with "
                f"--port (0 picks a free one)")
    return f"cannot listen on host {host!r}: {reason}; {HOST_ADVICE}"


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@click.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Keep the default and reach it through an SSH tunnel; "
                   "another address serves anyone who can reach it (still behind the token, "
                   "but unencrypted).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="Port to listen on (0: any free port).")
def web(host: str, port: int) -> None:
    """Serve a live, read-only status page of the active project.

    The page reads the database as you, with your own role, and never writes. It prints a URL
    with a random token: only requests that carry it (or the cookie it is exchanged for) are
    answered. From a laptop: ssh -N -L PORT:127.0.0.1:PORT LOGIN-NODE, then open the URL.
    """
    import uvicorn

    project = Project.from_env()
    with connect_readonly(project) as conn:  # fail now, in one line, if we cannot read
        user = conn.execute("SELECT session_user AS name").fetchone()["name"]  # type: ignore[index]
    sock = bind(host, port)
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(24)
    loopback = host in LOOPBACK
    settings = Settings(project=project, token=token, opener=lambda: connect_readonly(project),
                        cookie=f"balsam_web_{port}", hosts=LOOPBACK if loopback else None,
                        user=user)
    url = f"http://{url_host(host)}:{port}/?token={token}"
    click.echo(f"balsam web: {project.root} (read-only, as {user})")
    click.echo(f"Open: {url}")
    if loopback:
        click.echo(f"From another machine: ssh -N -L {port}:127.0.0.1:{port} "
                   f"{socket.gethostname()}  then open the same URL there.")
    else:
        click.echo(f"Warning: listening on {host}: anyone who can reach it and has the token "
                   "can read the page, and the traffic is not encrypted.", err=True)
    sys.stdout.flush()
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def target_refusal(mode: int | None, head: bytes, control: bool) -> str | None:
    """Why a report must not be written at a path (None: it may): only a new file, or an earlier
    report (it begins with REPORT_MARKER), may be replaced, never a file the report would destroy.

    ``mode`` is the path's own (``lstat``; None: nothing there), ``head`` the first bytes of a
    regular file, ``control``: the path is in the project's control zone.
    """
    if control:
        return ("it is in the project's control zone (server-info, balsamdb/, ...): choose a "
                "path outside it")
    if mode is None:
        return None
    if stat.S_ISDIR(mode):
        return "it is a directory: choose a file name"
    if stat.S_ISLNK(mode):
        return "it is a symbolic link: choose another path"
    if not stat.S_ISREG(mode):
        return "it is not a regular file: choose another path"
    if render.REPORT_MARKER.encode() not in head:
        return "it exists and is not a Balsam report: choose another path, or remove the file"
    return None


#: How much of an existing file is read to find REPORT_MARKER (on its second line).
HEAD_BYTES = 512


def check_target(path: Path, project_root: Path) -> None:
    """InvalidInput, before anything is written, if the report must not go to ``path``."""
    if not path.parent.is_dir():
        message = f"cannot write the report to {path}: no directory {path.parent}"
        raise InvalidInput(message)
    real = Path(os.path.realpath(path.parent)) / path.name
    try:
        parts = real.relative_to(os.path.realpath(project_root)).parts
    except ValueError:
        parts = ()
    try:
        mode: int | None = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    head = _head(path) if mode is not None and stat.S_ISREG(mode) else b""
    reason = target_refusal(mode, head, bool(parts) and parts[0] in zones.CONTROL_ZONE)
    if reason is None and not os.access(path.parent, os.W_OK):
        reason = f"you cannot write to {path.parent}: choose another path"
    if reason is not None:
        message = f"cannot write the report to {path}: {reason}"
        raise InvalidInput(message)


def _head(path: Path) -> bytes:
    """The first bytes of a regular file, never through a symlink nor blocking on a FIFO (b""
    if it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, HEAD_BYTES) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Write a new file in place of ``path`` (never half a report, never through a symlink)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        message = f"cannot write the report to {path}: {exc.strerror}; choose another path"
        raise BalsamError(message) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        message = f"cannot write the report to {path}: {exc.strerror}"
        raise BalsamError(message) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@click.command("html")
@click.argument("file", type=click.Path(path_type=Path, allow_dash=True))
@click.option("--since", metavar="TIME",
              help="Start of the charts' window: an ISO date or time (local), 'now', or a "
                   "duration ago such as 2h or 7d (default: the first activity).")
@click.option("--until", metavar="TIME",
              help="End of the charts' window (default: the last recorded activity).")
@click.option("--by", metavar="|".join(analytics.BY_CHOICES), default="user", show_default=True,
              help="Split utilisation and throughput by user, workflow or batch job.")
def report_html(file: Path, since: str | None, until: str | None, by: str) -> None:
    """The overview and the charts of 'balsam web' as one self-contained HTML file.

    FILE is a new file, or an earlier report to replace (nothing else is overwritten); - writes
    the report to standard output. Styles and pictures are inside the file (no script, nothing
    fetched), so it can be mailed or attached to a ticket. Progress and failures are as of now;
    utilisation and throughput over the window, as 'balsam report' computes them.
    """
    now = datetime.now(UTC)
    window = {"since": durations.parse_time(since, now) if since else None,
              "until": durations.parse_time(until, now) if until else None}
    by = analytics.check_by(by) or "user"
    project = Project.from_env()
    to_stdout = str(file) == "-"
    if not to_stdout:
        check_target(file, project.root)  # before any work
    with connect_readonly(project) as conn:
        user = conn.execute("SELECT session_user AS name").fetchone()["name"]  # type: ignore[index]
        context = {**views.overview_page(conn),
                   **views.report_charts(conn, window["since"], window["until"], by)}
    context.update(project_name=project.name, project_root=str(project.root), user=user,
                   generated_at=now, by=by)
    html = render.report(context)
    if to_stdout:
        click.echo(html, nl=False)
        return
    check_target(file, project.root)  # again: what is there may have changed meanwhile
    write_atomically(file, html)
    click.echo(f"Report written to {file}")
