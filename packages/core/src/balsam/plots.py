"""Pictures of the analytics reports, drawn with matplotlib (optional: ``balsam-core[analytics]``).

Each function takes a report from :mod:`balsam.analytics` and writes one image file; the format
follows the file's extension (PNG, SVG, PDF, ...). No pyplot state is touched, so plotting from a
notebook or a server process leaves the caller's figures alone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from balsam.analytics import (
    Errors,
    Summary,
    Throughput,
    Utilization,
    duration_text,
    fold_groups,
)
from balsam.errors import BalsamError, InvalidInput

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: At most this many groups get their own colour; the rest are added up as "other".
MAX_GROUPS = 8
BY_LABEL = {"user": "user", "workflow": "workflow", "batch-job": "batch job", "state": "state"}


class PlotError(BalsamError):
    """The plot could not be drawn."""


def label(key: str) -> str:
    """A group key as shown to people (the empty key means "none")."""
    return key if key else "(none)"


def check_writable(path: Path, what: str = "plot") -> None:
    """Fail early, before any work, if a file could not be created at ``path``."""
    path = Path(path)
    if not path.parent.is_dir():
        message = f"cannot write the {what} to {path}: no directory {path.parent}"
        raise InvalidInput(message)
    if path.is_dir():
        message = f"cannot write the {what} to {path}: it is a directory"
        raise InvalidInput(message)


def check_target(path: Path) -> None:
    """Fail early, before any work, if the plot could not be written to ``path``."""
    path = Path(path)
    check_writable(path)
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        message = "plots need matplotlib: pip install 'balsam-core[analytics]'"
        raise PlotError(message) from None
    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        message = (f"cannot write the plot to {path}: name it with one of the extensions "
                   f"{', '.join('.' + f for f in sorted(formats))}")
        raise InvalidInput(message)


def _figure(title: str, columns: int = 1) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 5.5), layout="constrained")
    axes = list(fig.subplots(1, columns, squeeze=False)[0])
    fig.suptitle(title)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    try:
        fig.savefig(path, dpi=110)
    except (OSError, ValueError) as exc:
        message = f"cannot write the plot to {path}: {exc}"
        raise PlotError(message) from exc
    return path


def _time_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    local = datetime.now().astimezone().tzinfo
    locator = mdates.AutoDateLocator(tz=local)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=local))
    ax.grid(True, alpha=0.3)


def _integer_ticks(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _edges(starts: list[datetime], ends: list[datetime]) -> list[float]:
    """Bin edges for a step drawing: every start, then the last end (as matplotlib dates)."""
    return _days([*starts, ends[-1]]) if starts else []


def _days(moments: list[datetime]) -> list[float]:
    """Matplotlib's dates (days since its epoch), which the date axis of ``_time_axis`` shows."""
    import matplotlib.dates as mdates

    epoch = datetime.fromisoformat(mdates.get_epoch()).replace(tzinfo=UTC)
    return [(m - epoch) / timedelta(days=1) for m in moments]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _window_text(since: datetime, until: datetime) -> str:
    return f"{since.astimezone():%Y-%m-%d %H:%M} to {until.astimezone():%Y-%m-%d %H:%M}"


def plot_utilization(report: Utilization, path: Path) -> Path:
    """Busy nodes over time (stacked by group) against the available nodes."""
    check_target(path)
    title = (f"Node utilisation {_percent(report.utilization)}, "
             f"{_window_text(report.window.since, report.window.until)}")
    fig, [ax] = _figure(title)
    starts = [b.start for b in report.bins]
    edges = _edges(starts, [b.end for b in report.bins])
    if report.by:
        keys = {k for b in report.bins for k in b.busy_by}
        series = {k: [b.busy_by.get(k, 0.0) / b.seconds for b in report.bins] for k in keys}
        layers = fold_groups(series, MAX_GROUPS)
    else:
        layers = {"busy": [b.busy_nodes for b in report.bins]}
    if layers and starts:
        ax.stackplot(edges, *[[*v, v[-1]] for v in layers.values()], step="post",
                     labels=[label(k) for k in layers], alpha=0.85)
    available = [b.available_nodes for b in report.bins]
    if starts:
        ax.step(edges, [*available, available[-1]], where="post", color="black",
                linewidth=1.5, label="available")
    ax.set_ylabel(f"nodes (mean per {duration_text(report.window.bin_seconds)})")
    ax.set_ylim(bottom=0)
    _time_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0),
              title=BY_LABEL.get(report.by or "", None))
    return _save(fig, path)


def _bars(ax: Axes, bins: list[Any], layers: dict[str, list[float]]) -> None:
    starts = _days([b.start for b in bins])
    widths = [(b.end - b.start) / timedelta(days=1) for b in bins]
    bottom = [0.0] * len(bins)
    for key, values in layers.items():
        ax.bar(starts, values, width=widths, bottom=bottom, align="edge", label=label(key),
               alpha=0.85)
        bottom = [a + b for a, b in zip(bottom, values, strict=True)]


def plot_throughput(report: Throughput, path: Path) -> Path:
    """Tasks finished per bin (stacked by group) and the running total."""
    check_target(path)
    title = (f"Tasks finished: {report.total:,} ({report.per_hour:,.1f}/h), "
             f"{_window_text(report.window.since, report.window.until)}")
    fig, [ax] = _figure(title)
    if report.by:
        series = {k: [float(b.by.get(k, 0)) for b in report.bins] for k in report.groups}
        layers = fold_groups(series, MAX_GROUPS)
    else:
        layers = {"finished": [float(b.count) for b in report.bins]}
    _bars(ax, report.bins, layers)
    ax.set_ylabel(f"tasks finished per {duration_text(report.window.bin_seconds)}")
    _integer_ticks(ax)
    total = ax.twinx()
    total.plot(_edges([b.start for b in report.bins], [b.end for b in report.bins]),
               [0, *report.cumulative], color="black", linewidth=1.5, label="cumulative")
    total.set_ylabel("cumulative")
    total.set_ylim(bottom=0)
    _integer_ticks(total)
    _time_axis(ax)
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = total.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, loc="upper left",
              bbox_to_anchor=(1.08, 1.0), title=BY_LABEL.get(report.by or "", None))
    return _save(fig, path)


def plot_errors(report: Errors, path: Path) -> Path:
    """Error events per bin, stacked by state (or by group when the report has one)."""
    check_target(path)
    title = (f"Errors: {report.total:,}, "
             f"{_window_text(report.window.since, report.window.until)}")
    fig, [ax] = _figure(title)
    keys = sorted({k for b in report.bins for k in b.by})
    series = {k: [float(b.by.get(k, 0)) for b in report.bins] for k in keys}
    _bars(ax, report.bins, fold_groups(series, MAX_GROUPS))
    ax.set_ylabel(f"error events per {duration_text(report.window.bin_seconds)}")
    _integer_ticks(ax)
    _time_axis(ax)
    if keys:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  title=BY_LABEL[report.by or "state"])
    return _save(fig, path)


def _hbars(ax: Axes, names: list[str], values: list[float], labels: list[str],
           empty: str) -> None:
    """Horizontal bars of a constant thickness, labelled at their ends, first on top."""
    bars = ax.barh(names, values, height=0.6, alpha=0.85)
    ax.bar_label(bars, labels=labels, padding=3)
    ax.set_ylim(max(len(names), 4) - 0.5, -0.5)
    ax.grid(True, axis="x", alpha=0.3)
    if not names:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)


def plot_summary(report: Summary, path: Path) -> Path:
    """Utilisation of each batch job, and busy node-hours per group."""
    check_target(path)
    title = (f"Utilisation {_percent(report.utilization)}, {report.tasks_finished:,} tasks "
             f"finished, {_window_text(report.window.since, report.window.until)}")
    fig, [jobs_ax, groups_ax] = _figure(title, columns=2)
    jobs = report.batch_jobs
    _hbars(jobs_ax, [f"{j.id} {j.owner} ({j.num_nodes} nodes)" for j in jobs],
           [100 * (j.utilization or 0.0) for j in jobs],
           [_percent(j.utilization) for j in jobs], "no batch jobs in this window")
    jobs_ax.set_xlim(0, 115)
    jobs_ax.set_xlabel("batch job utilisation: busy / available node-seconds (%)")
    groups = report.groups[:MAX_GROUPS * 2]
    _hbars(groups_ax, [label(g.key) for g in groups],
           [g.busy_node_seconds / 3600 for g in groups],
           [f"{g.tasks_finished:,} finished" + (f", {_percent(g.utilization)}"
                                                if g.utilization is not None else "")
            for g in groups], "no groups (use --by)")
    groups_ax.set_xlabel(f"busy node-hours per {BY_LABEL.get(report.by or '', 'group')}")
    groups_ax.margins(x=0.3)
    return _save(fig, path)
