"""``balsam report``: utilisation, throughput and errors over time, as tables, JSON or plots.

The figures and their definitions come from :mod:`balsam.analytics`; this module only parses
options and prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from balsam import analytics, durations, plots
from balsam.analytics import Errors, Summary, Throughput, Utilization
from balsam.db import connect
from balsam.output import Column, Listing, Output, iso_time
from balsam.output import options as output_options
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
        f = output_options(f)
        f = click.option("--plot", type=click.Path(path_type=Path, dir_okay=False),
                         metavar="FILE.png", help="Also draw the report into this image file.")(f)
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
        "since": durations.parse_time(since, now) if since else None,
        "until": durations.parse_time(until, now) if until else None,
    }
    if bin_width:
        args["bin_width"] = durations.parse_duration(bin_width)
    return args


def _run(compute: Callable[..., Any], draw: Callable[[Any, Path], Path],
         show: Callable[[Any, Output], None], plot: Path | None, out: Output,
         **options: Any) -> None:
    """Compute a report on the active project, then print it and draw it."""
    if plot is not None:
        plots.check_target(plot)  # before any work
    with connect(Project.from_env()) as conn:
        report = compute(conn, **options)
    if plot is not None:
        draw(report, plot)
    if out.mode == "json":
        out.stream.write(json.dumps(analytics.to_plain(report), indent=2) + "\n")
    else:
        show(report, out)
    if plot is not None:
        click.echo(f"Plot written to {plot}", err=out.mode != "table")


# --- formatting -------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _hours(node_seconds: float | None) -> str:
    return "-" if node_seconds is None else f"{node_seconds / 3600:,.2f}"


def _nodes(value: float) -> str:
    return f"{value:,.2f}"


def _title(what: str, window: analytics.Window, bins: bool = True) -> str:
    text = f"{what}, {iso_time(window.since) or '-'} to {iso_time(window.until) or '-'}"
    return f"{text}, bins of {analytics.duration_text(window.bin_seconds)}" if bins else text


def _listing(*columns: str) -> Listing:
    """Columns ``key`` or ``key:kind``; a key may hold spaces (group names)."""
    return Listing(tuple(Column(*c.rsplit(":", 1)) if ":" in c else Column(c)
                         for c in columns))


def _line(out: Output, text: str) -> None:
    """A line of prose between tables: as is on a terminal, a comment in a pipe."""
    if out.header:
        out.stream.write(f"{text}\n" if out.mode == "table" else f"# {text}\n")


def _write(out: Output, listing: Listing, rows: Sequence[Sequence[Any]], title: str) -> None:
    """One of the report's tables, a blank line after it (what separates tables in a pipe)."""
    out.write(listing, rows, title=title)
    out.stream.write("\n")


def _group_columns(series: dict[str, list[float]]) -> dict[str, list[float]]:
    return analytics.fold_groups(series, MAX_COLUMNS)


def _key(name: str) -> str:
    return name.replace(" ", "_").replace(":", "_")


# --- reports ----------------------------------------------------------------------------------


def show_utilization(report: Utilization, out: Output) -> None:
    """Busy and available nodes per bin, then the totals (per group with --by)."""
    keys = {k for b in report.bins for k in b.busy_by}
    columns = _group_columns(
        {k: [b.busy_by.get(k, 0.0) / b.seconds for b in report.bins] for k in keys})
    listing = _listing("from:time", "available_nodes:number", "busy_nodes:number",
                       "utilisation_pct:number",
                       *(f"busy_{_key(plots.label(k))}:number" for k in columns))
    rows = [(b.start, _nodes(b.available_nodes), _nodes(b.busy_nodes),
             _percent(b.utilization), *(_nodes(v[i]) for v in columns.values()))
            for i, b in enumerate(report.bins)]
    _write(out, listing, rows, _title("Node utilisation", report.window))
    _line(out, f"Utilisation {_percent(report.utilization)}%: "
               f"{_hours(report.busy_node_seconds)} of "
               f"{_hours(report.available_node_seconds)} node-hours busy")
    if report.by:
        totals = _listing(f"{_key(report.by)}", "busy_node_hours:number",
                          "available_node_hours:number", "utilisation_pct:number")
        _write(out, totals, [(plots.label(g.key), _hours(g.busy_node_seconds),
                              _hours(g.available_node_seconds), _percent(g.utilization))
                             for g in report.groups], f"Per {report.by}")


def show_throughput(report: Throughput, out: Output) -> None:
    """Tasks finished per bin, cumulative, and per group with --by."""
    columns = _group_columns(
        {k: [float(b.by.get(k, 0)) for b in report.bins] for k in report.groups})
    listing = _listing("from:time", "finished:number", "per_hour:number", "cumulative:number",
                       *(f"{_key(plots.label(k))}:number" for k in columns))
    rows = [(b.start, b.count, f"{b.per_hour:,.1f}", total,
             *(int(v[i]) for v in columns.values()))
            for i, (b, total) in enumerate(zip(report.bins, report.cumulative, strict=True))]
    _write(out, listing, rows, _title("Tasks finished", report.window))
    _line(out, f"Finished {report.total:,} tasks ({report.per_hour:,.1f} per hour)")


def show_errors(report: Errors, out: Output) -> None:
    """Error events grouped by state and message."""
    by = [_key(report.by)] if report.by else []
    listing = _listing("state:state", *by, "events:number", "tasks:number", "first:time",
                       "last:time", "message", "task_ids")
    rows = []
    for g in report.groups:
        first_line = g.message.strip().splitlines()[0] if g.message.strip() else "(no message)"
        ids = ",".join(map(str, g.task_ids)) + (",..." if g.tasks > len(g.task_ids) else "")
        rows.append((g.state, *([plots.label(g.key)] if by else []), g.events, g.tasks,
                     g.first_at, g.last_at, first_line, ids))
    _write(out, listing, rows, _title("Errors", report.window, bins=False))
    counts = ", ".join(f"{s} {n:,}" for s, n in sorted(report.by_state.items()))
    _line(out, f"{report.total:,} error events" + (f": {counts}" if counts else ""))


def show_summary(report: Summary, out: Output) -> None:
    """The totals, tasks per state now, the per-group table and the batch jobs."""
    _line(out, _title("Summary", report.window, bins=False))
    errors = ", ".join(f"{s} {n:,}" for s, n in report.errors.items())
    _line(out, f"Tasks finished     {report.tasks_finished:,} "
               f"({report.tasks_per_hour:,.1f} per hour)")
    _line(out, f"Errors             {sum(report.errors.values()):,} ({errors})")
    _line(out, f"Node-hours         {_hours(report.busy_node_seconds)} busy of "
               f"{_hours(report.available_node_seconds)} available")
    _line(out, f"Utilisation        {_percent(report.utilization)}%")
    states = ", ".join(f"{s} {n:,}" for s, n in report.task_states.items()) or "no tasks"
    _line(out, f"Tasks now          {states}")
    if report.by:
        groups = _listing(_key(report.by), "finished:number", "errors:number",
                          "busy_node_hours:number", "available_node_hours:number",
                          "utilisation_pct:number")
        _write(out, groups, [(plots.label(g.key), g.tasks_finished, g.errors,
                              _hours(g.busy_node_seconds), _hours(g.available_node_seconds),
                              _percent(g.utilization)) for g in report.groups],
               f"Per {report.by}")
    jobs = _listing("batch_job:id", "owner", "scheduler_id:id", "state:state", "started:time",
                    "ended:time", "nodes:number", "finished:number", "busy_node_hours:number",
                    "available_node_hours:number", "utilisation_pct:number")
    _write(out, jobs, [(j.id, j.owner, j.scheduler_id, j.state, j.started_at, j.ended_at,
                        j.num_nodes, j.tasks_finished, _hours(j.busy_node_seconds),
                        _hours(j.available_node_seconds), _percent(j.utilization))
                       for j in report.batch_jobs], "Batch jobs")


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
                out: Output, plot: Path | None) -> None:
    """Busy nodes over time against available nodes."""
    _run(analytics.utilization, plots.plot_utilization, show_utilization, plot, out,
         by=by, **_window_args(since, until, bin_width))


@report.command("throughput")
@_options("throughput")
def throughput(since: str | None, until: str | None, bin_width: str | None, by: str | None,
               out: Output, plot: Path | None) -> None:
    """Tasks finished (JOB_FINISHED) over time."""
    _run(analytics.throughput, plots.plot_throughput, show_throughput, plot, out,
         by=by, **_window_args(since, until, bin_width))


@report.command("errors")
@_options("errors")
def errors(since: str | None, until: str | None, bin_width: str | None, by: str | None,
           out: Output, plot: Path | None) -> None:
    """Errors grouped by message, and over time.

    Errors are events into RUN_ERROR, RUN_TIMEOUT and FAILED.
    """
    _run(analytics.errors, plots.plot_errors, show_errors, plot, out,
         by=by, **_window_args(since, until, bin_width))


@report.command("summary")
@_options("summary", bins=False)
def summary(since: str | None, until: str | None, by: str | None, out: Output,
            plot: Path | None) -> None:
    """Totals, per group and per batch job.

    Tasks finished, errors, busy and available node-hours and utilisation over the window, the
    same per user (or --by), the utilisation of each batch job, and how many tasks are in each
    state now.
    """
    _run(analytics.summary, plots.plot_summary, show_summary, plot, out,
         by=by, **_window_args(since, until))
