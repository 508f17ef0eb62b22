"""Tasks: bulk insert rate through the API, CLI start-up, and ``ls`` on a million tasks.

A throwaway cluster (run as an unprivileged user when root) holds a project in external-DSN mode.
``insert`` times :func:`balsam.api.add_tasks` (COPY) for 100k tasks, without and with one parent
each; ``startup`` times whole ``balsam ls`` / ``balsam job`` processes on a small database;
``million`` fills the database to 1,000,000 tasks (three states, 10 workflows) and times
``balsam ls --by-states`` and friends, as processes and as API calls.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from balsam import api
from balsam.db import Connection
from balsam_testing.pg import throwaway_project

BALSAM = str(Path(sys.executable).parent / "balsam")
BENCH = "tasks"


def _row(metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"benchmark": BENCH, "metric": metric, "value": round(value, 3), "unit": unit}


def _median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _cli(*args: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run([BALSAM, *args], check=True, capture_output=True, timeout=300)
    return run


def _specs(count: int, workflow: str, parent: int | None = None) -> list[dict[str, Any]]:
    return [{"app": "sim", "name": f"t{i}", "workflow": workflow, "args": f"--seed {i}",
             "num_nodes": 1 + i % 4, "parents": [parent] if parent else []}
            for i in range(count)]


def bench_insert(conn: Connection, count: int) -> list[dict[str, Any]]:
    start = time.perf_counter()
    api.add_tasks(_specs(count, "insert"), conn=conn)
    plain = time.perf_counter() - start
    parent = api.add_task("sim", name="root", workflow="insert", conn=conn)
    start = time.perf_counter()
    api.add_tasks(_specs(count, "insert-dag", parent.id), conn=conn)
    with_parent = time.perf_counter() - start
    label = f"{count // 1000}k"
    return [_row(f"api add_tasks {label} (COPY)", count / plain, "tasks/s"),
            _row(f"api add_tasks {label} (COPY)", plain, "s"),
            _row(f"api add_tasks {label}, one parent each", count / with_parent, "tasks/s")]


def bench_startup(repeat: int) -> list[dict[str, Any]]:
    rows = [_row("cli start-up: balsam --version", _median_ms(_cli("--version"), repeat),
                 "ms")]
    rows.append(_row("cli start-up: balsam ls (small db)",
                     _median_ms(_cli("ls", "--limit", "20"), repeat), "ms"))
    rows.append(_row("cli start-up: balsam job",
                     _median_ms(_cli("job", "--name", "j", "--workflow", "cli", "--app",
                                          "sim", "--num-nodes", "2"), repeat), "ms"))
    return rows


def fill(conn: Connection, total: int, batch: int = 100_000) -> None:
    """Bring the database to ``total`` tasks: READY, AWAITING_PARENTS, and 10% USER_KILLED."""
    have = api.count_by_state(conn=conn)
    n = sum(have.values())
    wf = 0
    while n < total:
        size = min(batch, total - n)
        parent = api.add_task("sim", name="root", workflow=f"wf{wf % 10}", conn=conn)
        half = size // 2
        api.add_tasks(_specs(half, f"wf{wf % 10}") + _specs(size - half - 1, f"wf{wf % 10}",
                                                            parent.id), conn=conn)
        n += size
        wf += 1
    ids = api.task_ids(state="READY", conn=conn)
    api.set_state(ids[::5], "STAGED_IN", conn=conn)
    conn.execute("VACUUM ANALYZE tasks")


def bench_million(conn: Connection, total: int, repeat: int) -> list[dict[str, Any]]:
    start = time.perf_counter()
    fill(conn, total)
    label = f"{total / 1e6:g}M" if total >= 1_000_000 else f"{total // 1000}k"
    rows = [_row(f"fill to {label} tasks (insert, states, vacuum)", time.perf_counter() - start,
                 "s")]
    rows.append(_row(f"balsam ls --by-states ({label} tasks)",
                     _median_ms(_cli("ls", "--by-states"), repeat), "ms"))
    rows.append(_row(f"api count_by_state ({label} tasks)",
                     _median_ms(lambda: api.count_by_state(conn=conn), repeat), "ms"))
    rows.append(_row(f"balsam ls, first 100 ({label} tasks)",
                     _median_ms(_cli("ls"), repeat), "ms"))
    rows.append(_row(f"balsam ls --workflow wf3 --state AWAITING_PARENTS ({label} tasks)",
                     _median_ms(_cli("ls", "--workflow", "wf3", "--state",
                                          "AWAITING_PARENTS"), repeat), "ms"))
    rows.append(_row(f"api get_tasks(workflow=wf7, limit=100) ({label} tasks)",
                     _median_ms(lambda: api.get_tasks(workflow="wf7", limit=100,
                                                           conn=conn), repeat), "ms"))
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    inserts, repeat, total = (20_000, 3, 100_000) if quick else (100_000, 5, 1_000_000)
    with throwaway_project(prefix="balsam-bench-tasks-") as (_, conn):
        api.add_app("sim", "/bin/echo", conn=conn)
        rows = bench_startup(repeat)
        rows += bench_insert(conn, inserts)
        rows += bench_million(conn, total, repeat)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['metric']:<70} {r['value']:>12,.3f} {r['unit']}")
