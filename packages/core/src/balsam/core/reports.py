"""Legacy Balsam 0.5's analytics (``balsam.core.models.utilization_report`` and friends): the same
series, from :mod:`balsam.analytics` instead of parsing ``state_history`` text.

* ``utilization_report()`` -> ``(times, running)``: how many tasks run after each moment a run
  starts or ends. Runs are the busy intervals ``balsam report utilization`` adds up (a run also
  ends when it is killed, restarted or its launcher dies, which legacy missed).
* ``throughput_report()`` -> ``(times, done)``: how many runs ended with exit 0 (RUN_DONE)
  by each moment, as legacy counted.
* ``error_report()`` -> ``(edges, counts)``: RUN_ERROR events per minute from the first one
  (``len(edges) == len(counts) + 1``), or None when there is none.

Each takes legacy's optional ``time_data`` (``{state: [datetimes]}``, see
:func:`process_job_times`) and then works on it alone, as legacy did. Series are lists (legacy
returned numpy arrays for the counts; matplotlib takes either).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from balsam import analytics
from balsam.states import State

RUN_ENDS = ("RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT")
TimeData = Mapping[str, Sequence[datetime]]


# --- pure -----------------------------------------------------------------------------------


def running_series(starts: Iterable[datetime],
                   ends: Iterable[datetime]) -> tuple[list[datetime], list[int]]:
    """How many are running after each distinct moment something starts or ends."""
    steps: Counter[datetime] = Counter()
    for at in starts:
        steps[at] += 1
    for at in ends:
        steps[at] -= 1
    times = sorted(steps)
    running, level = [], 0
    for at in times:
        level += steps[at]
        running.append(level)
    return times, running


def cumulative_series(times: Iterable[datetime]) -> tuple[list[datetime], list[int]]:
    """How many events happened by each distinct moment."""
    counts = Counter(times)
    ordered = sorted(counts)
    total, out = 0, []
    for at in ordered:
        total += counts[at]
        out.append(total)
    return ordered, out


def minute_histogram(times: Sequence[datetime]) -> tuple[list[datetime], list[int]] | None:
    """Events per minute from the first one: bin edges (one more than bins) and counts, the
    last bin closed on the right, as numpy.histogram made legacy's; None without events."""
    if not times:
        return None
    first = min(times)
    seconds = [(t - first).total_seconds() for t in times]
    bins = max(1, math.ceil((max(seconds) + 60) / 60) - 1)
    counts = [0] * bins
    for s in seconds:
        counts[min(int(s // 60), bins - 1)] += 1
    edges = [first + timedelta(minutes=k) for k in range(bins + 1)]
    return edges, counts


# --- the legacy functions -------------------------------------------------------------------


def process_job_times(qs: Any = None) -> dict[str, list[datetime]]:
    """``{state: [times tasks entered it]}`` for the tasks of a query (all tasks by default)."""
    ids = None if qs is None else list(qs.values_list("job_id", flat=True))
    return analytics.state_times(states=[s.value for s in State], task_ids=ids)


def utilization_report(time_data: TimeData | None = None) -> tuple[list[datetime], list[int]]:
    """Tasks running over time (legacy's ``(times, running)``)."""
    if time_data is not None:
        ends = [t for state in RUN_ENDS for t in time_data.get(state, [])]
        return running_series(time_data.get("RUNNING", []), ends)
    runs = analytics.runs()
    return running_series([r.started_at for r in runs],
                          [r.ended_at for r in runs if r.ended_at is not None])


def throughput_report(time_data: TimeData | None = None) -> tuple[list[datetime], list[int]]:
    """Runs done over time, cumulative (legacy's ``(times, counts)``)."""
    if time_data is None:
        time_data = analytics.state_times(states=["RUN_DONE"])
    return cumulative_series(time_data.get("RUN_DONE", []))


def error_report(time_data: TimeData | None = None) -> tuple[list[datetime], list[int]] | None:
    """Run errors per minute (legacy's ``(times, hist)``), or None without errors."""
    if time_data is None:
        time_data = analytics.state_times(states=["RUN_ERROR"])
    return minute_histogram(list(time_data.get("RUN_ERROR", [])))
