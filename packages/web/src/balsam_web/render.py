"""HTML from the package's Jinja templates: whole pages, their live part alone, and the
self-contained report (styles inlined, no script, no link to anything)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from balsam.analytics import duration_text
from balsam_web.charts import state_colour

#: The block of every page that live updates replace.
LIVE_BLOCK = "live"
#: The second line of every report: ``balsam report html`` replaces a file only if it begins
#: with this (an earlier report), never anything else that happens to be at the path.
REPORT_MARKER = "<!-- balsam report html: the next report may replace this file -->"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``moment`` as a short age: ``12s ago``, ``5min ago``, ``3h ago``, ``2d ago``."""
    if moment is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return f"{duration(max(seconds, 0))} ago"


def duration(seconds: float | None) -> str:
    """Seconds as ``45s``, ``12min``, ``3h 20min``, ``2d 4h`` (``-`` for None)."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}min"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}min"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone():%Y-%m-%d %H:%M:%S}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def node_hours(node_seconds: float | None) -> str:
    return "-" if node_seconds is None else f"{node_seconds / 3600:,.2f}"


@cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("balsam_web", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(ago=ago, duration=duration, when=when, percent=percent,
                       node_hours=node_hours, bin_text=duration_text,
                       num=lambda n: f"{n:,}", query=lambda d: urlencode(d))
    env.globals.update(state_colour=state_colour)
    # The macros, for whole pages and for live blocks rendered alone (which skip imports).
    env.globals["m"] = env.get_template("_macros.html").module
    return env


def page(name: str, context: dict[str, Any], *, fragment: bool = False) -> str:
    """A whole page, or only its live block (what a live update swaps in)."""
    template = environment().get_template(name)
    if not fragment:
        return template.render(context)
    return "".join(template.blocks[LIVE_BLOCK](template.new_context(context)))


@cache
def stylesheet() -> str:
    return files("balsam_web").joinpath("static/balsam.css").read_text()


def report(context: dict[str, Any]) -> str:
    """The overview and charts as one file to mail: styles inline, nothing fetched."""
    return environment().get_template("report.html").render(
        {**context, "inline_css": stylesheet(), "marker": REPORT_MARKER})
