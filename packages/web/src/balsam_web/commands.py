"""``balsam web`` (serve the live page) and ``balsam report html`` (the same overview and charts
as one self-contained file)."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click

from balsam import analytics, plots
from balsam.errors import InvalidInput
from balsam.project import Project
from balsam_web import render, views
from balsam_web.app import LOOPBACK, Settings, create_app
from balsam_web.db import connect_readonly

DEFAULT_PORT = 8250


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one); InvalidInput if taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except socket.gaierror as exc:
        message = f"cannot serve on host {host!r}: {exc.strerror}"
        raise InvalidInput(message) from None
    except OSError as exc:
        message = (f"cannot listen on {host}:{port}: {exc.strerror}; choose another port with "
                   f"--port (0 picks a free one)")
        raise InvalidInput(message) from None


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


def write_atomically(path: Path, text: str) -> None:
    """Write a new file in place of ``path`` (never half a report, never through a symlink)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@click.command("html")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--since", metavar="TIME",
              help="Start of the charts' window: an ISO date or time (local), 'now', or a "
                   "duration ago such as 2h or 7d (default: the first activity).")
@click.option("--until", metavar="TIME",
              help="End of the charts' window (default: the last recorded activity).")
@click.option("--by", metavar="|".join(analytics.BY_CHOICES), default="user", show_default=True,
              help="Split utilisation and throughput by user, workflow or batch job.")
def report_html(file: Path, since: str | None, until: str | None, by: str) -> None:
    """The overview and the charts of 'balsam web' as one self-contained HTML file.

    Styles and pictures are inside the file (no script, nothing fetched), so it can be mailed
    or attached to a ticket. Progress and failures are as of now; utilisation and throughput
    over the window, as 'balsam report' computes them.
    """
    plots.check_writable(file, "report")
    now = datetime.now(UTC)
    window = {"since": analytics.parse_time(since, now) if since else None,
              "until": analytics.parse_time(until, now) if until else None}
    by = analytics.check_by(by) or "user"
    project = Project.from_env()
    with connect_readonly(project) as conn:
        user = conn.execute("SELECT session_user AS name").fetchone()["name"]  # type: ignore[index]
        context = {**views.overview_page(conn),
                   **views.report_charts(conn, window["since"], window["until"], by)}
    context.update(project_name=project.name, project_root=str(project.root), user=user,
                   generated_at=now, by=by)
    write_atomically(file, render.report(context))
    click.echo(f"Report written to {file}")
