"""``balsam report``: utilisation, throughput and errors over time, as tables, JSON or plots.

The figures and their definitions come from :mod:`balsam.analytics`; this module only parses
options and prints.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from balsam import analytics, plots
from balsam.analytics import Errors, Summary, Throughput, Utilization
from balsam.db import connect
from balsam.project import Project

#: Group columns shown in time-series tables; the rest are added up as "other".
MAX_COLUMNS = 6
GROUP_HELP = {
    "utilization": "Split busy time by the launcher's owner (user), the task's workflow or the "
                   "launcher's batch job.",
    "throughput": "Split by the task's owner (user), its workflow or the batch job of the "
                  "launcher that finished it.",
    "errors": "Split by the task's owner (user), its workflow or the launcher's batch job.",
    "summary": "Groups of the per-group table (default: user).",
}


def _options(name: str, *, bins: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every report takes (``--bin`` only for time series)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
                         metavar="FILE.png", help="Also draw the report into this image file.")(f)
        f = click.option("--json", "as_json", is_flag=True,
                         help="Print JSON (for scripts) instead of tables.")(f)
        f = click.option("--by", metavar="|".join(analytics.BY_CHOICES),
                         default="user" if name == "summary" else None, help=GROUP_HELP[name])(f)
        if bins:
            f = click.option("--bin", "bin_width", metavar="DURATION",
                             help="Time bin width, e.g. 30s, 5m, 1h (default: about "
                                  f"{analytics.TARGET_BINS} bins over the window).")(f)
        f = click.option("--until", metavar="TIME",
                         help="End of the window (default: the last recorded activity).")(f)
        f = click.option("--since", metavar="TIME",
                         help="Start of the window: an ISO date or time (local), 'now', or a "
                              "duration ago such as 2h or 7d (default: the first activity).")(f)
        return f

    return decorate


def _window_args(since: str | None, until: str | None,
                 bin_width: str | None = None) -> dict[str, Any]:
    """The parsed --since, --until and --bin (InvalidInput names a bad one)."""
    now = datetime.now().astimezone()
    args: dict[str, Any] = {
        "since": analytics.parse_time(since, now) if since else None,
        "until": analytics.parse_time(until, now) if until else None,
    }
    if bin_width:
        args["bin_width"] = analytics.parse_duration(bin_width)
    return args


def _run(compute: Callable[..., Any], draw: Callable[[Any, Path], Path],
         show: Callable[[Any, Console], None], plot: Path | None, as_json: bool,
         **options: Any) -> None:
    """Compute a report on the active project, then print it (table or JSON) and draw it."""
    if plot is not None:
        plots.check_target(plot)  # before any work
    with connect(Project.from_env()) as conn:
        report = compute(conn, **options)
    if plot is not None:
        draw(report, plot)
    if as_json:
        click.echo(json.dumps(analytics.to_plain(report), indent=2))
    else:
        show(report, _console())
    if plot is not None:
        click.echo(f"Plot written to {plot}", err=as_json)


def _console() -> Console:
    """The terminal's width, or a wide page when writing to a file or pipe (no truncation)."""
    return Console() if sys.stdout.isatty() else Console(width=200)


# --- formatting -------------------------------------------------------------------------------


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone():%Y-%m-%d %H:%M:%S}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _hours(node_seconds: float | None) -> str:
    return "-" if node_seconds is None else f"{node_seconds / 3600:,.2f}"


def _title(what: str, window: analytics.Window, bins: bool = True) -> str:
    text = f"{what}, {_time(window.since)} to {_time(window.until)}"
    return f"{text}, bins of {analytics.duration_text(window.bin_seconds)}" if bins else text


def _table(title: str, *headers: str, text: int = 1) -> Table:
    """A table whose first ``text`` columns are left-aligned and never wrapped; numbers right."""
    table = Table(title=title)
    for i, header in enumerate(headers):
        if i < text:
            table.add_column(header, no_wrap=True)
        else:
            table.add_column(header, justify="right")
    return table


def _group_columns(series: dict[str, list[float]]) -> dict[str, list[float]]:
    return analytics.fold_groups(series, MAX_COLUMNS)


# --- reports ----------------------------------------------------------------------------------


def show_utilization(report: Utilization, console: Console) -> None:
    """Busy and available nodes per bin, then the totals (per group with --by)."""
    keys = {k for b in report.bins for k in b.busy_by}
    columns = _group_columns(
        {k: [b.busy_by.get(k, 0.0) / b.seconds for b in report.bins] for k in keys})
    table = _table(_title("Node utilisation", report.window), "from", "available nodes",
                   "busy nodes", "utilisation", *(f"busy: {plots.label(k)}" for k in columns))
    for i, b in enumerate(report.bins):
        table.add_row(_time(b.start), f"{b.available_nodes:,.2f}", f"{b.busy_nodes:,.2f}",
                      _percent(b.utilization), *(f"{v[i]:,.2f}" for v in columns.values()))
    console.print(table)
    console.print(f"Utilisation {_percent(report.utilization)}: "
                  f"{_hours(report.busy_node_seconds)} of "
                  f"{_hours(report.available_node_seconds)} node-hours busy")
    if report.by:
        totals = _table(f"Per {report.by}", report.by, "busy node-hours",
                        "available node-hours", "utilisation")
        for g in report.groups:
            totals.add_row(plots.label(g.key), _hours(g.busy_node_seconds),
                           _hours(g.available_node_seconds), _percent(g.utilization))
        console.print(totals)


def show_throughput(report: Throughput, console: Console) -> None:
    """Tasks finished per bin, cumulative, and per group with --by."""
    columns = _group_columns(
        {k: [float(b.by.get(k, 0)) for b in report.bins] for k in report.groups})
    table = _table(_title("Tasks finished", report.window), "from", "finished", "per hour",
                   "cumulative", *(plots.label(k) for k in columns))
    for i, (b, total) in enumerate(zip(report.bins, report.cumulative, strict=True)):
        table.add_row(_time(b.start), f"{b.count:,}", f"{b.per_hour:,.1f}", f"{total:,}",
                      *(f"{v[i]:,.0f}" for v in columns.values()))
    console.print(table)
    console.print(f"Finished {report.total:,} tasks ({report.per_hour:,.1f} per hour)")


def show_errors(report: Errors, console: Console) -> None:
    """Error events grouped by state and message."""
    headers = ["state", "events", "tasks", "first", "last", "message", "task ids"]
    if report.by:
        headers.insert(1, report.by)
    table = Table(*headers, title=_title("Errors", report.window, bins=False))
    for column in table.columns:
        column.no_wrap = column.header in ("state", "first", "last")
        column.justify = "right" if column.header in ("events", "tasks") else "left"
    for g in report.groups:
        first_line = g.message.strip().splitlines()[0] if g.message.strip() else "(no message)"
        row = [g.state, f"{g.events:,}", f"{g.tasks:,}", _time(g.first_at), _time(g.last_at),
               first_line, ", ".join(map(str, g.task_ids)) + ("..." if g.tasks > len(g.task_ids)
                                                            else "")]
        if report.by:
            row.insert(1, plots.label(g.key))
        table.add_row(*row)
    console.print(table)
    counts = ", ".join(f"{s} {n:,}" for s, n in sorted(report.by_state.items()))
    console.print(f"{report.total:,} error events" + (f": {counts}" if counts else ""))


def show_summary(report: Summary, console: Console) -> None:
    """The totals, tasks per state now, the per-group table and the batch jobs."""
    console.print(_title("Summary", report.window, bins=False))
    errors = ", ".join(f"{s} {n:,}" for s, n in report.errors.items())
    console.print(f"Tasks finished     {report.tasks_finished:,} "
                  f"({report.tasks_per_hour:,.1f} per hour)")
    console.print(f"Errors             {sum(report.errors.values()):,} ({errors})")
    console.print(f"Node-hours         {_hours(report.busy_node_seconds)} busy of "
                  f"{_hours(report.available_node_seconds)} available")
    console.print(f"Utilisation        {_percent(report.utilization)}")
    states = ", ".join(f"{s} {n:,}" for s, n in report.task_states.items()) or "no tasks"
    console.print(f"Tasks now          {states}")
    if report.by:
        groups = _table(f"Per {report.by}", report.by, "finished", "errors", "busy node-hours",
                        "available node-hours", "utilisation")
        for g in report.groups:
            groups.add_row(plots.label(g.key), f"{g.tasks_finished:,}", f"{g.errors:,}",
                           _hours(g.busy_node_seconds), _hours(g.available_node_seconds),
                           _percent(g.utilization))
        console.print(groups)
    jobs = _table("Batch jobs", "batch job", "owner", "scheduler id", "state", "started",
                  "ended", "nodes", "finished", "busy node-hours", "available node-hours",
                  "utilisation", text=6)
    for j in report.batch_jobs:
        jobs.add_row(str(j.id), j.owner, j.scheduler_id or "-", j.state, _time(j.started_at),
                     _time(j.ended_at), str(j.num_nodes), f"{j.tasks_finished:,}",
                     _hours(j.busy_node_seconds), _hours(j.available_node_seconds),
                     _percent(j.utilization))
    console.print(jobs)


# --- commands ---------------------------------------------------------------------------------


@click.group("report")
def report() -> None:
    """Utilisation, throughput and errors of the active project over time.

    Busy time runs from a task's start (RUNNING) to its next state, on its launcher's nodes;
    available time is each launcher's nodes from its start to its end (or last heartbeat).
    """


@report.command("utilization")
@_options("utilization")
def utilization(since: str | None, until: str | None, bin_width: str | None, by: str | None,
                as_json: bool, plot: Path | None) -> None:
    """Busy nodes over time against available nodes."""
    _run(analytics.utilization, plots.plot_utilization, show_utilization, plot, as_json,
         by=by, **_window_args(since, until, bin_width))


@report.command("throughput")
@_options("throughput")
def throughput(since: str | None, until: str | None, bin_width: str | None, by: str | None,
               as_json: bool, plot: Path | None) -> None:
    """Tasks finished (JOB_FINISHED) over time."""
    _run(analytics.throughput, plots.plot_throughput, show_throughput, plot, as_json,
         by=by, **_window_args(since, until, bin_width))


@report.command("errors")
@_options("errors")
def errors(since: str | None, until: str | None, bin_width: str | None, by: str | None,
           as_json: bool, plot: Path | None) -> None:
    """Errors grouped by message, and over time.

    Errors are events into RUN_ERROR, RUN_TIMEOUT and FAILED.
    """
    _run(analytics.errors, plots.plot_errors, show_errors, plot, as_json,
         by=by, **_window_args(since, until, bin_width))


@report.command("summary")
@_options("summary", bins=False)
def summary(since: str | None, until: str | None, by: str | None, as_json: bool,
            plot: Path | None) -> None:
    """Totals, per group and per batch job.

    Tasks finished, errors, busy and available node-hours and utilisation over the window, the
    same per user (or --by), the utilisation of each batch job, and how many tasks are in each
    state now.
    """
    _run(analytics.summary, plots.plot_summary, show_summary, plot, as_json,
         by=by, **_window_args(since, until))
