"""Utilisation, throughput and error reports, computed in SQL from the task history.

The figures rest on these definitions (the views of migration ``0005_analytics.sql`` hold them):

* **Available node-seconds.** A launcher offers ``num_nodes`` nodes from its ``started_at`` until
  its ``ended_at`` or, while it has not ended, until its last ``heartbeat_at`` (the last moment it
  is known to be alive).
* **Busy node-seconds.** A task is busy from each event into RUNNING until its next event out of
  RUNNING (RUN_DONE, RUN_ERROR, RUN_TIMEOUT, RESTART_READY, USER_KILLED), on the launcher named by
  the event into RUNNING, clipped to that launcher's span: while no exit is recorded it stays busy
  until the launcher's span ends (the window's end if the launcher is unknown), and never after
  it, even if the reaper records the exit later. It occupies ``num_nodes`` nodes, or
  ``1/node_packing_count`` of a node when it has one node and a serial-mode launcher packs it.
* **Utilisation** is busy / available node-seconds over a window ``[since, until)``; the *busy
  nodes* of a time bin are its busy node-seconds divided by its length, likewise available nodes.
* **Tasks finished** are events into JOB_FINISHED; **errors** are events into RUN_ERROR,
  RUN_TIMEOUT and FAILED, grouped by message.
* **Groups** (``by``): ``user`` is the launcher's owner for utilisation (whose allocation it is)
  and the task's owner for throughput and errors; ``batch-job`` is the batch job of the launcher
  (for an outcome, of the launcher that recorded the event); ``workflow`` is the task's
  workflow. Available capacity belongs to no workflow, so ``by workflow`` splits busy time only.
  The key ``""`` stands for "none" (no batch job, no workflow).

Time bins have equal widths (the last may be cut short by ``until``) and are computed in SQL with
``generate_series`` and ``date_bin``. Every function takes an open connection (or None for the
active project's) and returns plain dataclasses; :func:`to_plain` makes JSON-ready dicts of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from balsam import durations
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import InvalidInput
from balsam.output import iso_time
from balsam.queries import q

#: Ways to split a report into groups.
BY_CHOICES = ("user", "workflow", "batch-job")
#: States whose events count as errors.
ERROR_STATES = ("RUN_ERROR", "RUN_TIMEOUT", "FAILED")
FINISHED = "JOB_FINISHED"
#: Bin widths (seconds) chosen by default, aiming at about TARGET_BINS bins over the window.
NICE_BINS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
             43200, 86400, 172800, 604800)
TARGET_BINS = 60
MAX_BINS = 10_000
EXAMPLE_TASKS = 5


# --- plain data -------------------------------------------------------------------------------


def _ratio(part: float, whole: float | None) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class Window:
    """The report's time window ``[since, until)`` and its bin width."""

    since: datetime
    until: datetime
    bin_seconds: float

    @property
    def seconds(self) -> float:
        return (self.until - self.since).total_seconds()


@dataclass
class UtilizationBin:
    """Node-seconds of one time bin, in total and per group."""

    start: datetime
    end: datetime
    busy_node_seconds: float = 0.0
    available_node_seconds: float = 0.0
    busy_by: dict[str, float] = field(default_factory=dict)
    available_by: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @property
    def busy_nodes(self) -> float:
        """Average number of busy nodes over the bin."""
        return self.busy_node_seconds / self.seconds

    @property
    def available_nodes(self) -> float:
        return self.available_node_seconds / self.seconds

    @property
    def utilization(self) -> float | None:
        return _ratio(self.busy_node_seconds, self.available_node_seconds)


@dataclass
class GroupUtilization:
    """A group's totals over the window (available is None when split by workflow)."""

    key: str
    busy_node_seconds: float
    available_node_seconds: float | None

    @property
    def utilization(self) -> float | None:
        return _ratio(self.busy_node_seconds, self.available_node_seconds)


@dataclass
class Utilization:
    """Busy against available nodes over time."""

    window: Window
    by: str | None
    bins: list[UtilizationBin]

    @property
    def busy_node_seconds(self) -> float:
        return sum(b.busy_node_seconds for b in self.bins)

    @property
    def available_node_seconds(self) -> float:
        return sum(b.available_node_seconds for b in self.bins)

    @property
    def utilization(self) -> float | None:
        return _ratio(self.busy_node_seconds, self.available_node_seconds)

    @property
    def groups(self) -> list[GroupUtilization]:
        """Per-group totals, busiest first."""
        busy: dict[str, float] = {}
        available: dict[str, float] = {}
        for b in self.bins:
            for key, value in b.busy_by.items():
                busy[key] = busy.get(key, 0.0) + value
            for key, value in b.available_by.items():
                available[key] = available.get(key, 0.0) + value
        keys = sorted(busy.keys() | available.keys(), key=lambda k: (-busy.get(k, 0.0), k))
        split = self.by is not None and self.by != "workflow"
        return [GroupUtilization(k, busy.get(k, 0.0), available.get(k, 0.0) if split else None)
                for k in keys]


@dataclass
class CountBin:
    """Events counted in one time bin, in total and per group."""

    start: datetime
    end: datetime
    count: int = 0
    by: dict[str, int] = field(default_factory=dict)

    @property
    def per_hour(self) -> float:
        return self.count * 3600 / (self.end - self.start).total_seconds()


def _group_totals(bins: Sequence[CountBin]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for b in bins:
        for key, n in b.by.items():
            totals[key] = totals.get(key, 0) + n
    return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass
class Throughput:
    """Tasks finished (events into JOB_FINISHED) over time."""

    window: Window
    by: str | None
    bins: list[CountBin]

    @property
    def total(self) -> int:
        return sum(b.count for b in self.bins)

    @property
    def per_hour(self) -> float:
        return self.total * 3600 / self.window.seconds

    @property
    def cumulative(self) -> list[int]:
        out, running = [], 0
        for b in self.bins:
            running += b.count
            out.append(running)
        return out

    @property
    def groups(self) -> dict[str, int]:
        """Tasks finished per group, most first."""
        return _group_totals(self.bins)


@dataclass
class ErrorGroup:
    """Error events with the same state, message and group."""

    state: str
    message: str
    key: str
    events: int
    tasks: int
    first_at: datetime
    last_at: datetime
    task_ids: list[int]


@dataclass
class Errors:
    """Error events grouped by message, and their counts over time (split by state, or by group
    when ``by`` is given)."""

    window: Window
    by: str | None
    groups: list[ErrorGroup]
    bins: list[CountBin]

    @property
    def total(self) -> int:
        return sum(g.events for g in self.groups)

    @property
    def by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            counts[g.state] = counts.get(g.state, 0) + g.events
        return counts


@dataclass(frozen=True)
class Run:
    """One busy interval of a task (a row of the view task_busy_intervals); ``ended_at`` is None
    while the run is open."""

    task_id: int
    started_at: datetime
    ended_at: datetime | None
    nodes: float


@dataclass
class BatchJobUtilization:
    """One batch job: its allocation, its launchers' capacity and how busy they kept it."""

    id: int
    owner: str
    scheduler: str
    scheduler_id: str | None
    queue: str
    project: str
    state: str
    job_mode: str
    num_nodes: int
    wall_time_minutes: int
    started_at: datetime | None
    ended_at: datetime | None
    allocated_node_seconds: float
    available_node_seconds: float
    busy_node_seconds: float
    tasks_finished: int

    @property
    def utilization(self) -> float | None:
        """Busy / available node-seconds of the job's launchers."""
        return _ratio(self.busy_node_seconds, self.available_node_seconds)

    @property
    def allocation_utilization(self) -> float | None:
        """Busy node-seconds / the scheduler allocation (counts launcher start-up as idle)."""
        return _ratio(self.busy_node_seconds, self.allocated_node_seconds)


@dataclass
class GroupSummary:
    """A group's figures over the window (see the module docstring for what a group is)."""

    key: str
    tasks_finished: int = 0
    errors: int = 0
    busy_node_seconds: float = 0.0
    available_node_seconds: float | None = None

    @property
    def utilization(self) -> float | None:
        if self.available_node_seconds is None:
            return None
        return _ratio(self.busy_node_seconds, self.available_node_seconds)


@dataclass
class Summary:
    """The window at a glance: totals, per group, per batch job, and tasks per state now."""

    window: Window
    by: str | None
    tasks_finished: int
    errors: dict[str, int]
    busy_node_seconds: float
    available_node_seconds: float
    groups: list[GroupSummary]
    batch_jobs: list[BatchJobUtilization]
    task_states: dict[str, int]

    @property
    def utilization(self) -> float | None:
        return _ratio(self.busy_node_seconds, self.available_node_seconds)

    @property
    def tasks_per_hour(self) -> float:
        return self.tasks_finished * 3600 / self.window.seconds


def to_plain(obj: Any) -> Any:
    """JSON-ready data: dataclasses become dicts (with their properties), datetimes ISO text."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name, member in vars(type(obj)).items():
            if isinstance(member, property):
                out[name] = to_plain(getattr(obj, name))
        return out
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, datetime):
        return iso_time(obj)
    return obj


def fold_groups(series: dict[str, list[float]], limit: int) -> dict[str, list[float]]:
    """Keep the ``limit`` largest series (by total) and add the rest up as ``"other"``."""
    ranked = sorted(series, key=lambda k: (-sum(series[k]), k))
    if len(ranked) <= limit:
        return {k: series[k] for k in ranked}
    kept = {k: series[k] for k in ranked[:limit - 1]}
    rest = [series[k] for k in ranked[limit - 1:]]
    kept["other"] = [sum(values) for values in zip(*rest, strict=True)]
    return kept


def duration_text(seconds: float) -> str:
    """``1800`` as ``30min``, ``7200`` as ``2h``: the largest unit dividing it."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


# --- parsing ---------------------------------------------------------------------------------

#: Kept here for callers of ``analytics.parse_*``; the parsers and their bounds are in
#: :mod:`balsam.durations`.
parse_duration = durations.parse_duration
parse_time = durations.parse_time


def check_by(by: str | None) -> str | None:
    """Validate a grouping (None, or one of BY_CHOICES)."""
    if by is not None and by not in BY_CHOICES:
        message = f"invalid grouping {by!r}; expected one of: {', '.join(BY_CHOICES)}"
        raise InvalidInput(message)
    return by


# --- the window -------------------------------------------------------------------------------


def default_bin(span_seconds: float) -> float:
    """The smallest round bin width giving at most about TARGET_BINS bins over the span."""
    for width in NICE_BINS:
        if span_seconds / width <= TARGET_BINS:
            return float(width)
    return float(math.ceil(span_seconds / TARGET_BINS / NICE_BINS[-1]) * NICE_BINS[-1])


def _floor(moment: datetime, seconds: float) -> datetime:
    """The start of the bin holding ``moment`` on a grid of ``seconds`` from the UNIX epoch."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    steps = math.floor((moment - epoch).total_seconds() / seconds)
    return (epoch + timedelta(seconds=steps * seconds)).astimezone(moment.tzinfo)


def resolve_window(conn: Connection | None = None, since: datetime | None = None,
                   until: datetime | None = None,
                   bin_width: timedelta | None = None) -> Window:
    """Fill in what the caller left out.

    ``until`` defaults to the end of the bin holding the last recorded activity (an event, or a
    launcher's end or heartbeat) but not after now; ``since`` to the start of the bin holding the
    first activity (an hour before ``until`` if there is none); the bin width to a round width
    giving about TARGET_BINS bins. Defaulted ends are aligned to the bin grid.
    """
    if bin_width is not None and bin_width.total_seconds() <= 0:
        message = "the bin width must be positive"
        raise InvalidInput(message)
    first = last = None
    now = datetime.now(UTC)
    if since is None or until is None:
        with _connection(conn) as c:
            span = _rows(c, "activity_span", {})[0]
        first, last, now = span["first_at"], span["last_at"], span["now"]
    end = until or last or now
    start = since or first or end - timedelta(hours=1)
    if since is None and start >= end:  # all the activity is after the given until
        start = end - timedelta(hours=1)
    if until is None and end <= start:  # ... or before the given since
        end = now
    width = bin_width.total_seconds() if bin_width else default_bin(
        max((end - start).total_seconds(), 1.0))
    if since is None:
        start = _floor(start, width)
    if until is None:
        end = min(_floor(end, width) + timedelta(seconds=width), now)
    if start >= end:
        message = (f"the window is empty: since ({start.isoformat()}) must be before until "
                   f"({end.isoformat()})")
        raise InvalidInput(message)
    bins = math.ceil((end - start).total_seconds() / width)
    if bins > MAX_BINS:
        message = (f"a {width:g}s bin makes {bins} bins over this window (at most {MAX_BINS}): "
                   f"use a wider bin")
        raise InvalidInput(message)
    return Window(start, end, width)


# --- queries ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _connection(conn: Connection | None) -> Iterator[Connection]:
    """The caller's connection, or one to the active project closed afterwards."""
    if conn is not None:
        yield conn
        return
    from balsam.project import Project

    with connect(Project.from_env()) as own:
        yield own


def _rows(conn: Connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with wrap_db_errors(), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q("no_jit"))
        cur.execute(q(name), params)
        return cur.fetchall()


def _params(window: Window, by: str | None) -> dict[str, Any]:
    return {"since": window.since, "until": window.until, "bin_seconds": window.bin_seconds,
            "by": by}


def _utilization(conn: Connection, window: Window, by: str | None) -> Utilization:
    bins: dict[datetime, UtilizationBin] = {}
    for row in _rows(conn, "utilization_series", _params(window, by)):
        b = bins.setdefault(row["start"], UtilizationBin(row["start"], row["stop"]))
        if row["key"] is None:
            continue
        b.busy_node_seconds += row["busy_node_seconds"]
        b.available_node_seconds += row["available_node_seconds"]
        if by is not None:
            if row["busy_node_seconds"]:
                b.busy_by[row["key"]] = row["busy_node_seconds"]
            if by != "workflow" and row["available_node_seconds"]:
                b.available_by[row["key"]] = row["available_node_seconds"]
    return Utilization(window, by, list(bins.values()))


def _event_counts(conn: Connection, window: Window, by: str | None,
                  states: Sequence[str]) -> list[dict[str, Any]]:
    params = {**_params(window, by), "states": list(states)}
    return _rows(conn, "event_series", params)


def _count_bins(rows: list[dict[str, Any]], split: str | None) -> list[CountBin]:
    """CountBins from event_series rows, split by ``"key"``, ``"state"`` or nothing."""
    bins: dict[datetime, CountBin] = {}
    for row in rows:
        b = bins.setdefault(row["start"], CountBin(row["start"], row["stop"]))
        if row["key"] is None:
            continue
        b.count += row["count"]
        if split:
            b.by[row[split]] = b.by.get(row[split], 0) + row["count"]
    return list(bins.values())


def utilization(conn: Connection | None = None, *, since: datetime | None = None,
                until: datetime | None = None, bin_width: timedelta | None = None,
                by: str | None = None) -> Utilization:
    """Busy and available node-seconds per time bin, optionally per group."""
    by = check_by(by)
    with _connection(conn) as c:
        window = resolve_window(c, since, until, bin_width)
        return _utilization(c, window, by)


def throughput(conn: Connection | None = None, *, since: datetime | None = None,
               until: datetime | None = None, bin_width: timedelta | None = None,
               by: str | None = None) -> Throughput:
    """Tasks finished per time bin, optionally per group."""
    by = check_by(by)
    with _connection(conn) as c:
        window = resolve_window(c, since, until, bin_width)
        rows = _event_counts(c, window, by, [FINISHED])
    return Throughput(window, by, _count_bins(rows, "key" if by else None))


def errors(conn: Connection | None = None, *, since: datetime | None = None,
           until: datetime | None = None, bin_width: timedelta | None = None,
           by: str | None = None) -> Errors:
    """Error events grouped by state and message (and group), and their counts over time."""
    by = check_by(by)
    with _connection(conn) as c:
        window = resolve_window(c, since, until, bin_width)
        params = {**_params(window, by), "examples": EXAMPLE_TASKS}
        groups = [ErrorGroup(**row) for row in _rows(c, "error_groups", params)]
        rows = _event_counts(c, window, by, ERROR_STATES)
    return Errors(window, by, groups, _count_bins(rows, "key" if by else "state"))


def runs(conn: Connection | None = None, *,
         task_ids: Sequence[int] | None = None) -> list[Run]:
    """Every run's busy interval (of the given tasks, or of all), by start: the raw intervals the
    utilisation figures add up."""
    ids = None if task_ids is None else list(task_ids)
    with _connection(conn) as c:
        return [Run(**row) for row in _rows(c, "run_intervals", {"ids": ids})]


def state_times(conn: Connection | None = None, *, states: Sequence[str],
                task_ids: Sequence[int] | None = None) -> dict[str, list[datetime]]:
    """When tasks (the given ones, or all) entered each of ``states``, oldest first."""
    ids = None if task_ids is None else list(task_ids)
    times: dict[str, list[datetime]] = {s: [] for s in states}
    with _connection(conn) as c:
        for row in _rows(c, "state_times", {"states": list(states), "ids": ids}):
            times[row["state"]].append(row["at"])
    return times


def batch_jobs(conn: Connection | None = None, *, since: datetime | None = None,
               until: datetime | None = None) -> list[BatchJobUtilization]:
    """Each batch job overlapping the window, with its utilisation over the window."""
    with _connection(conn) as c:
        window = resolve_window(c, since, until)
        totals = _rows(c, "utilization_totals", _params(window, None))
        return _batch_jobs(c, window, totals)


def _batch_jobs(conn: Connection, window: Window,
                totals: list[dict[str, Any]]) -> list[BatchJobUtilization]:
    """Batch job details joined with their rows of ``utilization_totals``."""
    usage = {r["batch_job_id"]: r for r in totals
             if not r["by_key"] and r["batch_job_id"] is not None}
    params = {**_params(window, None), "ids": list(usage)}
    jobs = []
    for row in _rows(conn, "batch_job_details", params):
        figures = usage.get(row["id"], {})
        jobs.append(BatchJobUtilization(
            **row, busy_node_seconds=figures.get("busy_node_seconds", 0.0),
            available_node_seconds=figures.get("available_node_seconds", 0.0)))
    return jobs


def summary(conn: Connection | None = None, *, since: datetime | None = None,
            until: datetime | None = None, by: str | None = "user") -> Summary:
    """Totals over the window, per group and per batch job, and the tasks per state now."""
    by = check_by(by)
    with _connection(conn) as c:
        window = resolve_window(c, since, until)
        whole = Window(window.since, window.until, window.seconds)
        totals = _rows(c, "utilization_totals", _params(window, by))
        outcomes = _event_counts(c, whole, by, (FINISHED, *ERROR_STATES))
        jobs = _batch_jobs(c, window, totals)
        states = {r["state"]: r["tasks"] for r in _rows(c, "task_state_counts", {})}
    split = by is not None and by != "workflow"
    groups: dict[str, GroupSummary] = {}
    busy = available = 0.0
    for row in totals:
        if not row["by_key"]:
            continue
        busy += row["busy_node_seconds"]
        available += row["available_node_seconds"]
        if split or row["busy_node_seconds"]:  # capacity alone makes no workflow
            groups[row["key"]] = GroupSummary(
                row["key"], busy_node_seconds=row["busy_node_seconds"],
                available_node_seconds=row["available_node_seconds"] if split else None)
    finished, failures = 0, dict.fromkeys(ERROR_STATES, 0)
    for row in outcomes:
        if row["key"] is None:
            continue
        group = groups.setdefault(row["key"], GroupSummary(
            row["key"], available_node_seconds=0.0 if split else None))
        if row["state"] == FINISHED:
            finished += row["count"]
            group.tasks_finished += row["count"]
        else:
            failures[row["state"]] += row["count"]
            group.errors += row["count"]
    ranked = sorted(groups.values(), key=lambda g: (-g.busy_node_seconds, -g.tasks_finished, g.key))
    return Summary(whole, by, finished, failures, busy, available, ranked if by else [], jobs,
                   states)
