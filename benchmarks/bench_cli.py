"""The command line: start-up, ``balsam job``, ``balsam ls`` piped and streamed, bulk creation.

Whole processes are timed, as a user or a script runs them, on a project (external-DSN mode) in
a throwaway cluster, with balsam's bytecode compiled as in the users' runtime (``setup.sh``
installs it with ``--compile-bytecode``; the test environment's editable sources otherwise
compile on every run when ``PYTHONDONTWRITEBYTECODE`` is set). Beside the start-up figures, the
floor no command that reads the database can go under: Python importing psycopg and click.
Beside each figure: the issue's target and, where the issue gives them, the figures of the CLI
before this work and of legacy Balsam 0.5 on the same machine.
"""

from __future__ import annotations

import compileall
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql

from balsam import api, bulk
from balsam.db import Connection
from balsam.plugins import installed_entry_points
from balsam_testing.pg import throwaway_project

BALSAM = str(Path(sys.executable).parent / "balsam")
BENCH = "cli"
#: (target, before this work, legacy Balsam 0.5), from issue 13.
REFERENCE: dict[str, tuple[str, str, str]] = {
    "start-up: balsam --version": ("<= 120 ms", "250-370 ms", ""),
    "start-up: balsam ls (empty project)": ("<= 120 ms", "250-370 ms", ""),
    "balsam job (one task)": ("<= 150 ms", "360 ms", ""),
    "balsam ls piped, 10k tasks": ("<= 0.3 s", "4.3 s (12k)", "0.43 s"),
    "api add_tasks": (">= 100,000 tasks/s", "31,000 tasks/s", "6,300-7,900 tasks/s"),
    "balsam job --from - (JSON lines)": (">= 20,000 tasks/s", "3 tasks/s (a loop)", ""),
    "balsam job --sweep": (">= 20,000 tasks/s", "3 tasks/s (a loop)", ""),
}


def _row(metric: str, value: float, unit: str) -> dict[str, Any]:
    target, before, legacy = next((v for k, v in REFERENCE.items() if metric.startswith(k)),
                                  ("", "", ""))
    return {"benchmark": BENCH, "metric": metric, "value": round(value, 3), "unit": unit,
            "target": target, "before": before, "legacy": legacy}


def _median(args: Sequence[str], repeat: int, stdin: bytes | None = None,
            program: str = BALSAM) -> float:
    """Median wall seconds of a whole ``balsam`` (or ``program``) process whose output goes to
    a pipe."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([program, *args], input=stdin, capture_output=True,
                       check=True, timeout=600)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _stream(args: Sequence[str]) -> tuple[float, float, float, int]:
    """First line (s), whole run (s), peak resident memory (MiB) and lines of a streamed
    listing read through a pipe."""
    start = time.perf_counter()
    proc = subprocess.Popen([BALSAM, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = 0.0
    lines, peak = 0, 0
    for _ in proc.stdout:
        lines += 1
        if lines == 1:
            first = time.perf_counter() - start
        if lines % 50_000 == 0:
            peak = max(peak, _rss_mib(proc.pid))
    proc.wait(timeout=600)
    return first, time.perf_counter() - start, peak, lines


def _rss_mib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) // 1024


def _specs(count: int, workflow: str) -> list[dict[str, Any]]:
    return [{"app": "sim", "name": f"t{i}", "workflow": workflow, "args": f"--seed {i}",
             "num_nodes": 1 + i % 4} for i in range(count)]


def _compile_bytecode() -> None:
    """Write the bytecode of core and of every installed plugin beside their sources, as an
    install does (the test environment's editable sources have none, and
    ``PYTHONDONTWRITEBYTECODE`` keeps each run from writing it: every command would compile
    them again)."""
    plugins = {ep.module.partition(".")[0] for ep in installed_entry_points()}
    for name in sorted({"balsam", *plugins}):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for where in spec.submodule_search_locations:
                compileall.compile_dir(where, quiet=1)


def bench_startup(repeat: int) -> list[dict[str, Any]]:
    job = ["job", "--name", "j", "--workflow", "cli", "--app", "sim"]
    for args in (["--version"], ["ls"], job):  # untimed: the first run fills the caches
        _median(args, 1)
    python = functools.partial(_median, repeat=repeat, program=sys.executable)
    return [
        _row("start-up floor: python alone", python(["-c", "pass"]) * 1000, "ms"),
        _row("start-up floor: python importing psycopg and click",
             python(["-c", "import psycopg, click"]) * 1000, "ms"),
        _row("start-up: balsam --version", _median(["--version"], repeat) * 1000, "ms"),
        _row("start-up: balsam ls (empty project)", _median(["ls"], repeat) * 1000, "ms"),
        _row("balsam job (one task)", _median(job, repeat) * 1000, "ms"),
    ]


def bench_bulk(conn: Connection, count: int) -> list[dict[str, Any]]:
    specs = _specs(count, "api")
    start = time.perf_counter()
    api.add_tasks(specs, conn=conn)
    rate = count / (time.perf_counter() - start)
    label = f"{count // 1000}k"
    rows = [_row(f"api add_tasks {label}", rate, "tasks/s")]
    lines = "".join(json.dumps({"name": f"t{i}", "args": f"--seed {i}"}) + "\n"
                    for i in range(count)).encode()
    seconds = _median(["job", "--from", "-", "--app", "sim", "--workflow", "jsonl"], 1, lines)
    rows.append(_row(f"balsam job --from - (JSON lines), {label} tasks", count / seconds,
                     "tasks/s"))
    seconds = _median(["job", "--app", "sim", "--workflow", "sweep", "--name", "s{i}",
                       "--args", "-n {i}", "--sweep", f"i=1:{count}"], 1)
    rows.append(_row(f"balsam job --sweep, {label} tasks", count / seconds, "tasks/s"))
    return rows + bench_floors(conn, specs)


def bench_floors(conn: Connection, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The server's floor under the bulk insert: the same rows (already built) copied into a
    copy of ``tasks`` with its indexes and checks but no trigger or foreign key, and into one
    without indexes either; each in a transaction rolled back."""
    builder = bulk.Builder(conn)
    builder.load_apps()
    text = "".join(f"{i}\t{builder.row(spec)}" for i, spec in enumerate(specs, 1))
    columns = sql.SQL(", ").join(map(sql.Identifier, ("id", *bulk.COLUMNS)))
    rows = []
    for what, like in (("indexes, no trigger or foreign key", "INCLUDING ALL"),
                       ("no index, trigger or foreign key", "INCLUDING DEFAULTS")):
        with conn.transaction(force_rollback=True):
            conn.execute(sql.SQL("CREATE TABLE bench_floor (LIKE tasks {})").format(
                sql.SQL(like)))
            start = time.perf_counter()
            with conn.cursor().copy(sql.SQL("COPY bench_floor ({}) FROM STDIN").format(
                    columns)) as copy:
                copy.write(text)
            rate = len(specs) / (time.perf_counter() - start)
        rows.append(_row(f"floor: COPY of the same rows into a copy of tasks, {what}", rate,
                         "tasks/s"))
    return rows


def bench_ls(conn: Connection, repeat: int, big: int) -> list[dict[str, Any]]:
    conn.execute("TRUNCATE tasks, task_events CASCADE")
    api.add_tasks(_specs(10_000, "ls"), conn=conn)
    # As autovacuum leaves a project: the bulk runs before left dead catalog and event rows
    # that every new connection would otherwise wade through.
    conn.execute("VACUUM ANALYZE")
    rows = []
    for mode in ("plain", "tsv", "json"):
        seconds = _median(["ls", "--all", "-o", mode], repeat)
        rows.append(_row(f"balsam ls piped, 10k tasks, --all -o {mode}", seconds, "s"))
    have = 10_000
    while have < big:
        size = min(200_000, big - have)
        api.add_tasks(_specs(size, f"wf{have % 10}"), conn=conn)
        have += size
    conn.execute("VACUUM ANALYZE tasks")
    first, total, peak, lines = _stream(["ls", "--all", "-o", "plain"])
    label = f"{big / 1e6:g}M" if big >= 1_000_000 else f"{big // 1000}k"
    assert lines == big + 1, lines
    rows += [_row(f"balsam ls piped, {label} tasks: whole listing", total, "s"),
             _row(f"balsam ls piped, {label} tasks: first line", first * 1000, "ms"),
             _row(f"balsam ls piped, {label} tasks: peak memory", peak, "MiB")]
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    repeat, count, big = (5, 20_000, 100_000) if quick else (15, 100_000, 1_000_000)
    _compile_bytecode()
    with throwaway_project(prefix="balsam-bench-cli-") as (_, conn):
        api.add_app("sim", "/bin/echo", conn=conn)
        rows = bench_startup(repeat)
        rows += bench_bulk(conn, count)
        rows += bench_ls(conn, repeat, big)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['metric']:<60} {r['value']:>12,.3f} {r['unit']:<8} target {r['target']}; "
              f"before {r['before'] or '-'}; legacy {r['legacy'] or '-'}")
