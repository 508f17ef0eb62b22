"""What each page shows: its query parameters parsed (pure), then its data read from the database.

Each ``*_page`` function takes an open read-only connection and returns the template's context.
Bad parameters raise InvalidInput (shown as a 400 page), unknown tasks NotFound (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg import sql

from balsam import analytics, api, monitor
from balsam.db import Connection, wrap_db_errors
from balsam.errors import InvalidInput, NotFound
from balsam.plots import MAX_GROUPS
from balsam.project import Project
from balsam.queries import query
from balsam.states import State, parse_state
from balsam_launcher.steps import output_path
from balsam_web import charts, files

PAGE_SIZES = (25, 50, 100, 250)
DEFAULT_PAGE = 50
#: Counting matching tasks stops here ("10,000+").
COUNT_CAP = 10_000
MAX_ID = 2**63 - 1
#: The time windows the failures and charts pages offer (label -> seconds; None: everything).
WINDOWS: dict[str, float | None] = {"1h": 3600, "6h": 6 * 3600, "24h": 86400,
                                    "7d": 7 * 86400, "30d": 30 * 86400, "all": None}
RUNNING_SHOWN = 20
NEIGHBOURS_SHOWN = 12
OVERVIEW_CHART_HOURS = 6
OVERVIEW_CHART_BIN = 600


def _q(name: str) -> str:
    return query("balsam_web", name)


def _rows(conn: Connection, name: str, params: Mapping[str, Any] | None = None,
          ) -> list[dict[str, Any]]:
    with wrap_db_errors():
        return conn.execute(_q(name), params or {}).fetchall()


# --- parameters (pure) ------------------------------------------------------------------------


def _text(params: Mapping[str, str], key: str) -> str | None:
    value = params.get(key, "").strip()
    if "\0" in value:
        message = f"{key} may not contain a NUL character"
        raise InvalidInput(message)
    return value or None


def _task_id(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or int(value) > MAX_ID:
        message = f"{what} must be a task id (a whole number), got {value!r}"
        raise InvalidInput(message)
    return int(value)


@dataclass(frozen=True)
class TaskFilter:
    """The task list's filters and the keyset position: ids below ``before`` (older) or above
    ``after`` (newer); newest first."""

    workflow: str | None = None
    state: str | None = None
    app: str | None = None
    owner: str | None = None
    name: str | None = None
    after: int | None = None
    before: int | None = None
    limit: int = DEFAULT_PAGE

    def query_params(self, **changes: Any) -> dict[str, str]:
        """URL parameters of this filter with some changed (empty ones left out)."""
        values = asdict(replace(self, **changes))
        if values["limit"] == DEFAULT_PAGE:
            del values["limit"]
        return {k: str(v) for k, v in values.items() if v is not None}

    @property
    def filtered(self) -> bool:
        return any((self.workflow, self.state, self.app, self.owner, self.name))


def parse_task_filter(params: Mapping[str, str]) -> TaskFilter:
    """The task list's parameters; InvalidInput names a bad one."""
    state = _text(params, "state")
    limit_text = _text(params, "limit")
    if limit_text is not None and (not limit_text.isdigit() or int(limit_text) not in PAGE_SIZES):
        message = f"limit must be one of {', '.join(map(str, PAGE_SIZES))}, got {limit_text!r}"
        raise InvalidInput(message)
    found = TaskFilter(
        workflow=_text(params, "workflow"), state=parse_state(state).value if state else None,
        app=_text(params, "app"), owner=_text(params, "owner"), name=_text(params, "name"),
        after=_task_id(_text(params, "after"), "after"),
        before=_task_id(_text(params, "before"), "before"),
        limit=int(limit_text) if limit_text else DEFAULT_PAGE)
    if found.after is not None and found.before is not None:
        message = "give after or before, not both"
        raise InvalidInput(message)
    return found


def parse_window(params: Mapping[str, str], default: str) -> tuple[str, datetime | None]:
    """``window`` (one of WINDOWS) as its label and start (None: since the beginning)."""
    label = _text(params, "window") or default
    if label not in WINDOWS:
        message = f"window must be one of {', '.join(WINDOWS)}, got {label!r}"
        raise InvalidInput(message)
    seconds = WINDOWS[label]
    return label, None if seconds is None else datetime.now(UTC) - timedelta(seconds=seconds)


def parse_by(params: Mapping[str, str]) -> str:
    return analytics.check_by(_text(params, "by") or "user") or "user"


# --- pages ------------------------------------------------------------------------------------


def overview_page(conn: Connection) -> dict[str, Any]:
    """Every workflow's progress, what runs now and the last hour's failures."""
    progress = monitor.workflow_progress(conn)
    totals: dict[str, int] = {}
    for wf in progress:
        for state, n in wf.counts.items():
            totals[state] = totals.get(state, 0) + n
    ordered: dict[str, int] = {s.value: totals[s.value] for s in State if s.value in totals}
    remaining = monitor.remaining_tasks(ordered)
    finished = sum(wf.finished_last_hour for wf in progress)
    now = datetime.now(UTC)
    return {
        "workflows": progress,
        "bars": {wf.workflow: charts.state_bar(wf.counts) for wf in progress},
        "totals": ordered, "total_bar": charts.state_bar(ordered, width=640, height=20),
        "finished_last_hour": finished, "remaining": remaining,
        "eta_seconds": monitor.eta_seconds(remaining, finished),
        "launchers": monitor.launchers(conn, alive_only=True),
        "running": _rows(conn, "running_tasks", {"limit": RUNNING_SHOWN}),
        "failures": monitor.failures_by_cause(conn, since=now - timedelta(hours=1)),
        "recent_hours": OVERVIEW_CHART_HOURS,
        "recent_chart": finished_chart(analytics.throughput(
            conn, since=_floor(now - timedelta(hours=OVERVIEW_CHART_HOURS), OVERVIEW_CHART_BIN),
            until=now, bin_width=timedelta(seconds=OVERVIEW_CHART_BIN)), width=640, height=180),
    }


def _floor(moment: datetime, seconds: int) -> datetime:
    """The start of the ``seconds``-long bin holding ``moment`` (bins aligned on the epoch)."""
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, UTC)


def finished_chart(report: analytics.Throughput, *, width: float = 760,
                   height: float = 240) -> Any:
    """Tasks finished per bin as stacked bars (one layer per group, or one for all)."""
    series = {k: [float(b.by.get(k, 0)) for b in report.bins] for k in report.groups}
    layers = analytics.fold_groups(series, MAX_GROUPS) if report.by else {
        "finished": [float(b.count) for b in report.bins]}
    return charts.time_chart(
        _series(report.bins, report.window.until, layers), bars=True,
        y_label=f"finished per {analytics.duration_text(report.window.bin_seconds)}",
        width=width, height=height)


def _series(bins: list[Any], end: datetime, layers: dict[str, list[float]],
            line: tuple[str, list[float]] | None = None) -> charts.Series:
    return charts.Series([b.start for b in bins], end, layers, line)


def tasks_page(conn: Connection, flt: TaskFilter) -> dict[str, Any]:
    """One page of tasks, newest first, with links to the newer and older pages."""
    params = {**asdict(flt), "cap": COUNT_CAP + 1}
    newer_first = flt.after is None
    where = sql.SQL(_q("task_filter"))
    page = sql.SQL(_q("task_page")).format(
        filter=where, direction=sql.SQL("DESC" if newer_first else "ASC"))
    count = sql.SQL(_q("task_count_capped")).format(filter=where)
    with wrap_db_errors():
        rows = conn.execute(page, params).fetchall()
        matching = conn.execute(count, params).fetchone()["n"]  # type: ignore[index]
    more = len(rows) > flt.limit
    rows = rows[:flt.limit]
    if newer_first:
        has_newer, has_older = flt.before is not None, more
    else:  # a newer page, read upwards from `after` and shown newest first
        rows.reverse()
        has_newer, has_older = more, (flt.after or 0) > 0
    return {
        "filter": flt, "tasks": rows, "count": matching, "count_cap": COUNT_CAP,
        "newer": flt.query_params(after=rows[0]["id"], before=None)
        if has_newer and rows else None,
        "older": flt.query_params(before=rows[-1]["id"], after=None)
        if has_older and rows else None,
        "newest": flt.query_params(after=None, before=None) if has_newer else None,
        "oldest": flt.query_params(after=0, before=None) if has_older else None,
        "workflows": [r["workflow"] for r in _rows(conn, "workflow_names", {"limit": 500})],
        "apps": [r["name"] for r in _rows(conn, "app_names")],
        "users": [r["owner"] for r in _rows(conn, "known_users")],
        "states": [s.value for s in State], "page_sizes": PAGE_SIZES,
    }


def task_page(conn: Connection, project: Project, task_id: int) -> dict[str, Any]:
    """A task's fields, history, neighbourhood and the end of its output."""
    if task_id > MAX_ID:
        message = f"no task {task_id}"
        raise NotFound(message)
    task = api.get_task(task_id, conn=conn)
    parents = _rows(conn, "task_parents", {"id": task_id, "limit": NEIGHBOURS_SHOWN})
    children = _rows(conn, "task_children", {"id": task_id, "limit": NEIGHBOURS_SHOWN})

    def nodes(rows: list[dict[str, Any]]) -> list[charts.Node]:
        return [charts.Node(r["id"], r["name"], r["state"]) for r in rows]

    def more(rows: list[dict[str, Any]]) -> int:
        return rows[0]["total"] - len(rows) if rows else 0

    workdir = project.workdir(task.workdir)
    out = output_path(workdir, task)
    return {
        "task": task, "history": api.history(task_id, conn=conn),
        "parents": parents, "children": children,
        "dag": charts.dag_view(charts.Node(task_id, task.name, task.state), nodes(parents),
                               nodes(children), more_parents=more(parents),
                               more_children=more(children)),
        "workdir": workdir, "output": files.read_tail(project.root, Path(out)),
        "running": task.state == State.RUNNING,
    }


def failures_page(conn: Connection, params: Mapping[str, str]) -> dict[str, Any]:
    label, since = parse_window(params, "24h")
    workflow = _text(params, "workflow")
    groups = monitor.failures_by_cause(conn, since=since, workflow=workflow)
    return {"groups": groups, "window": label, "windows": list(WINDOWS), "workflow": workflow,
            "total": sum(g.count for g in groups),
            "workflows": [r["workflow"] for r in _rows(conn, "workflow_names", {"limit": 500})]}


def launchers_page(conn: Connection, params: Mapping[str, str]) -> dict[str, Any]:
    every = _text(params, "all") is not None
    return {"launchers": monitor.launchers(conn, alive_only=not every), "all": every,
            "batch_jobs": _rows(conn, "batch_job_rows", {"limit": 100})}


def charts_page(conn: Connection, params: Mapping[str, str]) -> dict[str, Any]:
    """Utilisation and throughput over time, split by user, batch job or workflow."""
    label, since = parse_window(params, "6h")
    by = parse_by(params)
    until = datetime.now(UTC) if since is not None else None
    return {"window": label, "windows": list(WINDOWS), "by": by, "by_choices": analytics.BY_CHOICES,
            **report_charts(conn, since, until, by)}


@dataclass(frozen=True)
class GroupRow:
    """A group's line under the charts: what it finished, and its node-hours."""

    key: str
    finished: int
    busy_node_seconds: float
    available_node_seconds: float | None
    utilization: float | None


def report_charts(conn: Connection, since: datetime | None, until: datetime | None,
                  by: str) -> dict[str, Any]:
    """The utilisation and throughput charts and their totals per group, as ``balsam report``
    computes them (one pass over the history for each)."""
    util = analytics.utilization(conn, since=since, until=until, by=by)
    throughput = analytics.throughput(conn, since=util.window.since, until=util.window.until,
                                      bin_width=timedelta(seconds=util.window.bin_seconds), by=by)
    keys = {k for b in util.bins for k in b.busy_by}
    layers = analytics.fold_groups(
        {k: [b.busy_by.get(k, 0.0) / b.seconds for b in util.bins] for k in keys}, MAX_GROUPS)
    bin_text = analytics.duration_text(util.window.bin_seconds)
    utilization_chart = charts.time_chart(
        _series(util.bins, util.window.until, layers,
                ("available", [b.available_nodes for b in util.bins])),
        bars=False, y_label=f"busy nodes (mean per {bin_text})")
    busy = {g.key: g for g in util.groups}
    rows = [GroupRow(k, throughput.groups.get(k, 0), busy[k].busy_node_seconds if k in busy
                     else 0.0, busy[k].available_node_seconds if k in busy else None,
                     busy[k].utilization if k in busy else None)
            for k in sorted(busy.keys() | throughput.groups.keys(),
                            key=lambda k: (-(busy[k].busy_node_seconds if k in busy else 0.0),
                                           -throughput.groups.get(k, 0), k))]
    return {"utilization": util, "throughput": throughput, "groups": rows,
            "utilization_chart": utilization_chart, "throughput_chart": finished_chart(throughput)}
