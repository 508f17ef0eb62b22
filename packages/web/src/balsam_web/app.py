"""The ASGI application of ``balsam web``: a token gate, the pages, live updates, error pages.

Every request must carry the token ``balsam web`` printed: in the URL once (it is then exchanged
for an HttpOnly, SameSite=Strict cookie and the URL is cleaned), in that cookie, or as a bearer
token. Every response forbids framing, sniffing, referrers, caching and any script or style not
served by the page itself. Pages are rendered on the server; a page's live part is fetched again
(``X-Balsam-Fragment: 1``) when the event stream says that what it shows has changed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import urlencode

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from balsam.db import Connection
from balsam.errors import BalsamError, InvalidInput, NotFound, PermissionDenied, ServerDown
from balsam.project import Project
from balsam_web import render, views
from balsam_web.db import Pool
from balsam_web.live import PING, Hub, Listener

log = logging.getLogger("balsam_web")
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
#: The tables each page shows (it refreshes when one changes) and its periodic refresh (ms),
#: which keeps ages and heartbeats current when nothing is written.
PAGES = {
    "overview": (("tasks", "launchers"), 15000),
    "tasks": (("tasks",), 30000),
    "task": (("tasks", "task_parents"), 15000),
    "failures": (("tasks",), 30000),
    "launchers": (("launchers", "batch_jobs", "tasks"), 10000),
    "charts": ((), 60000),  # heavy at scale: refreshed every minute, not on every change
}


@dataclass
class Settings:
    """What the application needs: the project, the token, and how to open a connection."""

    project: Project
    token: str
    opener: Callable[[], Connection]
    cookie: str = "balsam_web"
    #: Host names a request may name (None: any, when serving on a non-loopback address).
    hosts: frozenset[str] | None = LOOPBACK
    user: str = ""
    pool_size: int = 4


# --- access (pure) ----------------------------------------------------------------------------


class Access(Enum):
    ALLOW = "allow"
    EXCHANGE = "exchange"  # a right token in the URL: set the cookie, redirect to a clean URL
    DENY = "deny"


def access(expected: str, *, in_url: str | None, cookie: str | None,
           bearer: str | None) -> Access:
    """Whether a request may pass. A token in the URL must be right (a wrong one is refused even
    with a good cookie: the user should know the link is bad)."""

    def same(given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    if in_url is not None:
        return Access.EXCHANGE if same(in_url) else Access.DENY
    return Access.ALLOW if same(cookie) or same(bearer) else Access.DENY


def host_name(header: str) -> str:
    """The host name of a Host header (``[::1]:8250`` -> ``::1``, ``localhost:80`` ->
    ``localhost``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


# --- the gate ---------------------------------------------------------------------------------


class Gate:
    """ASGI middleware: security headers on every response; the Host and the token checked on
    every request before any page runs."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *SECURITY_HEADERS]
            await send(message)

        request = Request(scope)
        hosts = self.settings.hosts
        if hosts is not None and host_name(request.headers.get("host", "")) not in hosts:
            response: Response = error_response(
                request, 403, "This server answers only to requests for 127.0.0.1 or "
                              "localhost (the Host header named another host).")
            await response(scope, receive, secured)
            return
        header = request.headers.get("authorization", "")
        decision = access(self.settings.token, in_url=request.query_params.get("token"),
                          cookie=request.cookies.get(self.settings.cookie),
                          bearer=header[7:] if header.lower().startswith("bearer ") else None)
        if decision is Access.ALLOW:
            await self.app(scope, receive, secured)
            return
        if decision is Access.EXCHANGE:
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response = RedirectResponse(request.url.path + ("?" + urlencode(rest) if rest else ""),
                                        status_code=303)
            response.set_cookie(self.settings.cookie, self.settings.token, httponly=True,
                                samesite="strict", path="/")
        else:
            wrong = "token" in request.query_params
            response = error_response(
                request, 403, ("The token in this link is wrong. " if wrong else
                               "This page needs the token that 'balsam web' printed. ")
                + "Open the URL that 'balsam web' printed when it started (it ends with "
                  "?token=...); a restarted server prints a new one.")
        await response(scope, receive, secured)


# --- pages ------------------------------------------------------------------------------------


def error_response(request: Request, status: int, message: str) -> HTMLResponse:
    """A plain page (no data from the database) saying what went wrong, in one line."""
    titles = {400: "Bad request", 403: "Forbidden", 404: "Not found", 503: "Database unreachable"}
    html = render.page("error.html", {"status": status, "title": titles.get(status, "Error"),
                                      "message": message, "nav": None,
                                      "project_name": "", "user": ""})
    return HTMLResponse(html, status_code=status)


ERRORS: dict[type[BalsamError], int] = {InvalidInput: 400, PermissionDenied: 403, NotFound: 404,
                                        ServerDown: 503}


async def balsam_error(request: Request, exc: Exception) -> Response:
    status = next((code for kind, code in ERRORS.items() if isinstance(exc, kind)), 500)
    return error_response(request, status, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"There is no page {request.url.path}." if exc.status_code == 404 else exc.detail
    return error_response(request, exc.status_code, message)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("balsam web: error on %s", request.url.path, exc_info=exc)
    return error_response(request, 500, "Internal error: the details are in the log of "
                                        "'balsam web'.")


def _page(name: str, template: str,
          build: Callable[[Connection, Request], dict[str, Any]]) -> Callable[[Request], Response]:
    watch, every = PAGES[name]

    def endpoint(request: Request) -> Response:
        settings: Settings = request.app.state.settings
        with request.app.state.pool.connection() as conn:
            context = build(conn, request)
        context.update(nav=name, watch=" ".join(watch), every=every, user=settings.user,
                       project_name=settings.project.name, project_root=str(settings.project.root),
                       params=request.query_params)
        fragment = request.headers.get("x-balsam-fragment") == "1"
        return HTMLResponse(render.page(template, context, fragment=fragment))

    return endpoint


def _params(request: Request) -> Mapping[str, str]:
    return request.query_params


def _task(conn: Connection, request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    return views.task_page(conn, settings.project, request.path_params["task_id"])


async def events(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    return EventSourceResponse(hub.stream(lambda: request.app.state.stopping), ping=PING,
                               send_timeout=10)


def create_app(settings: Settings) -> Starlette:
    """The application; the listener and the pool live as long as it runs (its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.pool = Pool(settings.opener, settings.pool_size)
        app.state.hub = Hub()
        app.state.stopping = False
        listener = Listener(settings.opener, app.state.hub, asyncio.get_running_loop())
        listener.start()
        try:
            yield
        finally:
            app.state.stopping = True
            listener.stop()
            app.state.pool.close()

    routes = [
        Route("/", _page("overview", "overview.html", lambda c, r: views.overview_page(c))),
        Route("/tasks", _page("tasks", "tasks.html", lambda c, r: views.tasks_page(
            c, views.parse_task_filter(_params(r))))),
        Route("/tasks/{task_id:int}", _page("task", "task.html", _task)),
        Route("/failures", _page("failures", "failures.html",
                                 lambda c, r: views.failures_page(c, _params(r)))),
        Route("/launchers", _page("launchers", "launchers.html",
                                  lambda c, r: views.launchers_page(c, _params(r)))),
        Route("/charts", _page("charts", "charts.html",
                               lambda c, r: views.charts_page(c, _params(r)))),
        Route("/events", events),
        Mount("/static", StaticFiles(packages=[("balsam_web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        BalsamError: balsam_error, HTTPException: http_error, Exception: internal_error})
    app.add_middleware(Gate, settings=settings)
    return app
