"""Report speed: every ``balsam report`` over a synthetic history of a million task events.

A throwaway cluster (run as an unprivileged user when root) gets 5 batch jobs x 800 nodes and
~126,000 tasks spread over a day, each with its full event history (8 events; 1 in 20 fails after
7), generated in SQL (the quick run: a quarter of that). Each report is timed as the CLI computes
it, window and bins chosen by default: cold (first run) and warm (best of the next runs).
Target: under a second each over a million events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from balsam import analytics
from balsam.db import Connection, connect
from balsam.migrate import upgrade
from balsam.queries import parse_queries
from balsam_testing.pg import throwaway_cluster

HERE = Path(__file__).resolve().parent
BASE = datetime(2024, 5, 1, tzinfo=UTC)
SPAN_SECONDS = 86400
LAUNCHERS, NODES = 5, 800
EVENTS_PER_TASK = 7.95  # 19 lives of 8 events for each failed life of 7


@cache
def queries() -> dict[str, str]:
    """The named queries of bench_reports.sql."""
    return parse_queries((HERE / "bench_reports.sql").read_text())


def generate(conn: Connection, events: int) -> int:
    """Fill a migrated database with about ``events`` task events; returns the exact count."""
    sql = queries()
    tasks = round(events / EVENTS_PER_TASK)
    params = {"base": BASE, "span_seconds": SPAN_SECONDS, "launchers": LAUNCHERS,
              "nodes": NODES, "tasks": tasks}
    conn.execute(sql["durable_commits"])
    app = conn.execute(sql["insert_app"]).fetchone()["id"]
    conn.execute(sql["insert_batch_jobs"], params)
    conn.execute(sql["insert_launchers"])
    conn.execute(sql["insert_tasks"], {**params, "app": app})
    conn.execute(sql["clear_events"])
    conn.execute(sql["insert_events"], params)
    conn.execute(sql["analyze"])
    return conn.execute(sql["count_events"]).fetchone()["n"]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(first run, best of the next ``repeat``) in seconds."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def run(quick: bool) -> list[dict]:
    events = 250_000 if quick else 1_000_000
    repeat = 2 if quick else 3
    rows: list[dict] = []
    with (throwaway_cluster(prefix="balsam-bench-reports-", dbname="bench") as pg,
          connect(pg.dsn("bench")) as conn):
        upgrade(conn)
        start = time.perf_counter()
        n = generate(conn, events)
        rows.append({"benchmark": "reports", "metric": "history generated (events)",
                     "value": float(n), "unit": "events"})
        rows.append({"benchmark": "reports", "metric": "generation time",
                     "value": time.perf_counter() - start, "unit": "s"})
        reports: dict[str, Callable[[], Any]] = {
            "utilization": lambda: analytics.utilization(conn),
            "utilization --by user": lambda: analytics.utilization(conn, by="user"),
            "utilization --by workflow": lambda: analytics.utilization(conn, by="workflow"),
            "utilization, last 2 of 24 hours": lambda: analytics.utilization(
                conn, since=BASE + timedelta(hours=22), until=BASE + timedelta(hours=24)),
            "throughput --by workflow": lambda: analytics.throughput(conn, by="workflow"),
            "throughput --by batch-job": lambda: analytics.throughput(conn, by="batch-job"),
            "errors --by user": lambda: analytics.errors(conn, by="user"),
            "summary --by user": lambda: analytics.summary(conn, by="user"),
        }
        for name, fn in reports.items():
            cold, warm = timed(fn, repeat)
            rows.append({"benchmark": "reports", "metric": f"{name} (cold)", "value": cold,
                         "unit": "s"})
            rows.append({"benchmark": "reports", "metric": f"{name} (warm)", "value": warm,
                         "unit": "s"})
        report = analytics.utilization(conn)
        rows.append({"benchmark": "reports", "metric": "utilisation of the synthetic history",
                     "value": 100 * (report.utilization or 0.0), "unit": "%"})
    return rows


if __name__ == "__main__":
    for row in run(quick=True):
        print(f"{row['metric']:<40} {row['value']:>14,.3f} {row['unit']}")
