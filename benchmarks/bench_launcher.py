"""Launcher speed: no-op task throughput, node utilisation, and claim throughput.

Everything runs against a throwaway cluster (as an unprivileged user when root) and a project in
external-DSN mode, with real ``balsam launcher`` processes and real task processes:

- no-op throughput: tasks running ``/bin/true``, through their whole life (claim, stage-in,
  preprocess, run, postprocess, finish), for 1 and for 5 concurrent launchers; next to it the
  rate at which this machine starts and reaps ``/bin/true`` at all (the process start-up
  ceiling), measured the same way the launcher starts tasks. Where the time goes: the CPU time
  per task of the launcher processes with their tasks, of PostgreSQL (every process of the
  cluster), and of the ceiling's processes with theirs, and how many cores each kept busy. When
  both keep every core busy, CPU time per task bounds the share of the ceiling a launcher can
  reach: ceiling CPU / (launcher CPU + PostgreSQL CPU); and whatever the ceiling does, no
  launcher exceeds cores / (launcher CPU + PostgreSQL CPU) tasks per second (on a quiet
  machine: others' work takes cores from it);
- utilisation: 5 launchers x 800 simulated nodes running 10-second tasks (``sleep 10``) for 60
  rounds (a 10-minute allocation), busy node-seconds (each task's RUNNING interval in
  task_events, dated by the launcher when the process started and when its exit was seen) over
  available node-seconds (each launcher's nodes from its registration to its end). Starting and
  draining 4,000 processes costs every node a few idle seconds once per allocation (on 2 cores:
  about 4,000 x 2.5 ms of CPU each way), reported apart so the whole-run figure of an allocation
  of any length can be read off: about steady - idle_at_ends / length;
- claim throughput: 1, 5 and 20 processes claiming through ``balsam.claim.claim_for_run``
  (lock, policy, mark) until a pool of tasks is exhausted, one task or 32 tasks per claim; and
  5 processes with another user's tasks, which they do not trust, first in claim order.

Quick mode shrinks every size (5 x 40 nodes running 2-second tasks, and so on). ``parts`` runs
only some of the three (``python benchmarks/run.py --only launcher:noop``), each at the same
size as in a whole run.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from balsam import claim
from balsam.contracts import InitOptions
from balsam.db import Connection, connect
from balsam.lifecycle import init_project
from balsam.migrate import plugin_packages, upgrade
from balsam.plugins import get_plugin_manager
from balsam.queries import parse_queries
from balsam.resources import Resources
from balsam_launcher import policy
from balsam_testing import launchers as lt
from balsam_testing.pg import throwaway_cluster

HERE = Path(__file__).resolve().parent
SQL = parse_queries((HERE / "bench_launcher.sql").read_text())


@contextmanager
def throwaway_project() -> Iterator[tuple[str, Path]]:
    """A throwaway cluster, a migrated database and a project using it; yields (conninfo,
    project root)."""
    with throwaway_cluster(prefix="balsam-bench-launcher-", dbname="bench") as pg:
        dsn = pg.dsn("bench")
        pm = get_plugin_manager()
        with connect(dsn) as conn:
            upgrade(conn, plugin_packages(pm))
        work = Path(tempfile.mkdtemp(prefix="balsam-bench-project-"))
        project = init_project(work / "project", InitOptions(dsn=dsn), pm)
        try:
            yield dsn, project.root
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _reset(conn: Connection) -> None:
    conn.execute(SQL["reset"])


# --- CPU time ------------------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's children waited for (and of theirs, and so on)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _proc_cpu(pid: int, *, waited: bool = False) -> float:
    """CPU seconds of a process (with its children waited for, if ``waited``); 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return sum(int(x) for x in fields[11:15 if waited else 13]) / _TICKS


class ClusterCpu:
    """CPU seconds of a PostgreSQL cluster (the postmaster, its live processes and those that
    ended, counted once) since this object was made; found from a connection's backend."""

    def __init__(self, conn: Connection) -> None:
        backend = conn.execute(SQL["backend_pid"]).fetchone()["pid"]
        with open(f"/proc/{backend}/stat") as f:
            self.postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
        self.start = self._total()

    def _live(self) -> dict[int, float]:
        task = f"/proc/{self.postmaster}/task/{self.postmaster}/children"
        with open(task) as f:
            return {int(p): _proc_cpu(int(p)) for p in f.read().split()}

    def _total(self) -> tuple[float, dict[int, float]]:
        return _proc_cpu(self.postmaster, waited=True), self._live()

    def used(self) -> float:
        """Ended children are in the postmaster's waited-for time: their time before this
        object was made is taken off once."""
        (own0, live0), (own1, live1) = self.start, self._total()
        return own1 - own0 + sum(live1.values()) - sum(live0.values())


def _run_launchers(root: Path, conn: Connection, count: int, args: list[str],
                   total: int, timeout: float) -> float:
    """Start ``count`` launchers, wait until ``total`` tasks finished; returns the wall time."""
    start = time.perf_counter()
    procs = [lt.start_launcher(root, *args) for _ in range(count)]
    try:
        deadline = time.monotonic() + timeout
        while conn.execute(SQL["finished"]).fetchone()["n"] < total:
            if time.monotonic() > deadline or all(p.poll() is not None for p in procs):
                message = f"launchers did not finish {total} tasks"
                raise RuntimeError(message)
            time.sleep(0.05)
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                lt.kill_session(p)
    return time.perf_counter() - start


# --- no-op throughput ----------------------------------------------------------------------------


def _spawner(count: int, parallel: int, go: Any, results: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        running: list[subprocess.Popen[bytes]] = []
        go.wait()
        start = time.perf_counter()
        for i in range(count):
            if len(running) >= parallel:
                running.pop(0).wait()
            cwd = Path(tmp) / f"task_{i}"
            cwd.mkdir()
            with open(cwd / "task.out", "ab") as f:
                running.append(subprocess.Popen(["/bin/true"], cwd=cwd, stdout=f,
                                                stderr=subprocess.STDOUT, process_group=0))
        for p in running:
            p.wait()
        results.put((start, time.perf_counter()))


def spawn_ceiling(processes: int, count: int, parallel: int = 16) -> dict[str, float]:
    """Tasks per second this machine can start and reap at all: ``processes`` Python processes
    each start ``count`` ``/bin/true`` the way a launcher starts a task (a new working
    directory, output appended to a file in it, own process group), ``parallel`` at a time;
    and their CPU seconds per task (their tasks' included)."""
    cpu = _children_cpu()
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_spawner, args=(count, parallel, go, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    go.set()
    spans = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    tasks = processes * count
    return {"rate": tasks / (max(e for _, e in spans) - min(s for s, _ in spans)),
            "cpu": (_children_cpu() - cpu) / tasks}


def noop_throughput(dsn: str, root: Path, launchers: int, tasks: int) -> dict[str, float]:
    with connect(dsn) as conn:
        _reset(conn)
        app = lt.add_app(conn, f"noop{launchers}", "/bin/true")
        conn.execute(SQL["insert_tasks"], {"workflow": "noop", "app": app, "args": "",
                                           "count": tasks})
        cpu, cluster = _children_cpu(), ClusterCpu(conn)
        wall = _run_launchers(root, conn, launchers,
                              ["--job-mode", "serial", "--nodes", "16", "--consume-all"],
                              tasks, timeout=600)
        cpu, pg = _children_cpu() - cpu, cluster.used()
        row = conn.execute(SQL["throughput"]).fetchone()
    return {"finished": row["finished"], "db_rate": row["finished"] / float(row["seconds"]),
            "wall_rate": tasks / wall, "cpu": cpu / tasks, "pg_cpu": pg / tasks,
            "cores": (cpu + pg) / wall}


# --- utilisation ---------------------------------------------------------------------------------


def utilisation(dsn: str, root: Path, launchers: int, nodes: int, seconds: float,
                rounds: int) -> dict[str, float]:
    tasks = launchers * nodes * rounds
    with connect(dsn) as conn:
        _reset(conn)
        app = lt.add_app(conn, "sleep", "/bin/sleep")
        conn.execute(SQL["insert_tasks"], {"workflow": "sleep", "app": app,
                                           "args": str(seconds), "count": tasks})
        conn.execute(SQL["analyze"])
        _run_launchers(root, conn, launchers,
                       ["--job-mode", "serial", "--nodes", str(nodes), "--consume-all",
                        "--poll-interval", "1"], tasks, timeout=rounds * seconds * 10 + 300)
        runs = conn.execute(SQL["run_intervals"]).fetchall()
        spans = conn.execute(SQL["launcher_spans"]).fetchall()
    return node_time(runs, spans, seconds)


def node_time(runs: list[dict[str, Any]], spans: list[dict[str, Any]],
              seconds: float) -> dict[str, float]:
    """Utilisation over the launchers' whole lives and over the steady state (from the moment
    the last launcher first had every node busy to the moment the first one ran out of tasks),
    and where the rest went: ramp-up, restart gaps, drain."""
    busy = sum(float(r["ended"] - r["started"]) for r in runs)
    available = sum(s["num_nodes"] * float(s["ended"] - s["started"]) for s in spans)
    ramps, tails, last_starts, full_at, gaps = [], [], [], [], []
    for s in spans:
        mine = [r for r in runs if r["launcher_id"] == s["id"]]
        starts = sorted(float(r["started"]) for r in mine)
        ends = sorted(float(r["ended"]) for r in mine)
        full_at.append(starts[s["num_nodes"] - 1])
        ramps.append(starts[s["num_nodes"] - 1] - float(s["started"]))
        tails.append(float(s["ended"]) - ends[-1])
        last_starts.append(starts[-1])
        # the k-th start after the first round replaced the k-th end
        gaps += [b - a for a, b in zip(ends, starts[s["num_nodes"]:], strict=False)]
    t0, t1 = max(full_at), min(last_starts)
    window_busy = sum(max(0.0, min(float(r["ended"]), t1) - max(float(r["started"]), t0))
                      for r in runs)
    window_nodes = sum(s["num_nodes"] for s in spans)
    window_idle = window_nodes * max(0.0, t1 - t0) - window_busy
    gaps.sort()
    return {
        "utilisation": busy / available,
        "steady": window_busy / (window_nodes * (t1 - t0)) if t1 > t0 else float("nan"),
        "idle_at_ends": (available - busy - window_idle) / window_nodes,
        "ramp": sum(ramps) / len(ramps), "tail": sum(tails) / len(tails),
        "gap_median": gaps[len(gaps) // 2] if gaps else float("nan"),
        "gap_p90": gaps[int(len(gaps) * 0.9)] if gaps else float("nan"),
        "span": max(float(s["ended"]) for s in spans) - min(float(s["started"]) for s in spans),
        "run_median": sorted(float(r["ended"] - r["started"]) for r in runs)[len(runs) // 2],
    }


# --- claim throughput ----------------------------------------------------------------------------


def _claimer(dsn: str, batch: int, go: Any, results: Any) -> None:
    with connect(dsn) as conn:
        launcher = claim.register_launcher(conn, job_mode="mpi", num_nodes=batch)["id"]
        resources = Resources.on_hosts(["node"] * batch)
        trusted = claim.trusted_users(conn)  # read once, as a launcher does (and each poll)
        go.wait()
        claimed, start = 0, time.perf_counter()
        while True:
            placed = claim.claim_for_run(conn, launcher, resources, policy.largest_first,
                                         limit=2 * batch + 16, trusted=trusted)
            if not placed:
                break
            claimed += len(placed)
        results.put((claimed, start, time.perf_counter()))


def claim_throughput(dsn: str, claimers: int, batch: int, tasks: int,
                     untrusted: int = 0) -> float:
    """Tasks claimed per second; ``untrusted`` more tasks, of a user the claimers do not
    trust, come first in claim order (each claim passes over them)."""
    with connect(dsn) as conn:
        _reset(conn)
        app = lt.add_app(conn, "claimed", "/bin/true")
        conn.execute(SQL["insert_tasks"], {"workflow": "claim", "app": app, "args": "",
                                           "count": tasks})
        if untrusted:
            with conn.transaction():  # as if a stranger had made them: triggers off
                conn.execute(SQL["replica_role"])
                conn.execute(SQL["insert_untrusted_tasks"], {"app": app, "count": untrusted})
        conn.execute(SQL["analyze"])
    ctx = multiprocessing.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(dsn, batch, go, results))
             for _ in range(claimers)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # all connected and registered
    go.set()
    outcomes = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    total = sum(o[0] for o in outcomes)
    if total != tasks:
        message = f"claimed {total} of {tasks} tasks"
        raise RuntimeError(message)
    return total / (max(o[2] for o in outcomes) - min(o[1] for o in outcomes))


# --- the benchmark -------------------------------------------------------------------------------


PARTS = ("noop", "utilisation", "claim")


def run(quick: bool, parts: Sequence[str] = PARTS) -> list[dict[str, Any]]:
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        message = f"no part {', '.join(unknown)} in bench_launcher (parts: {', '.join(PARTS)})"
        raise ValueError(message)
    rows: list[dict[str, Any]] = []

    def add(name: str, metric: str, value: float, unit: str) -> None:
        rows.append({"benchmark": name, "metric": metric, "value": round(value, 4),
                     "unit": unit})

    noop_tasks = 600 if quick else 5000
    spawns = 600 if quick else 3000
    with throwaway_project() as (dsn, root):
        for launchers in (1, 5) if "noop" in parts else ():
            ceiling = spawn_ceiling(launchers, spawns // launchers)
            result = noop_throughput(dsn, root, launchers, noop_tasks)
            add("noop", f"{launchers} launcher(s), 16 nodes each", result["db_rate"], "tasks/s")
            add("noop", f"{launchers} launcher(s), wall clock incl. launcher start-up",
                result["wall_rate"], "tasks/s")
            add("noop", f"start-up ceiling: {launchers} process(es) only starting /bin/true",
                ceiling["rate"], "tasks/s")
            add("noop", f"{launchers} launcher(s): share of the start-up ceiling",
                100 * result["db_rate"] / ceiling["rate"], "%")
            _cpu_rows(add, launchers, result, ceiling)

        if "utilisation" in parts:
            _utilisation_rows(dsn, root, quick, add)
        if "claim" in parts:
            _claim_rows(dsn, quick, add)
    return rows


def _cpu_rows(add: Callable[[str, str, float, str], None], launchers: int,
              result: dict[str, float], ceiling: dict[str, float]) -> None:
    """Where the CPU goes, per task, and the share of the ceiling it allows."""
    label = f"{launchers} launcher(s): CPU per task"
    add("noop", f"{label}, launcher processes and their tasks", 1e3 * result["cpu"], "ms")
    add("noop", f"{label}, PostgreSQL", 1e3 * result["pg_cpu"], "ms")
    add("noop", f"{launchers} launcher(s): cores busy (launchers, tasks, PostgreSQL)",
        result["cores"], "cores")
    add("noop", f"start-up ceiling ({launchers}): CPU per task, its processes and tasks",
        1e3 * ceiling["cpu"], "ms")
    add("noop", f"start-up ceiling ({launchers}): cores busy", ceiling["cpu"] * ceiling["rate"],
        "cores")
    used = result["cpu"] + result["pg_cpu"]
    add("noop", f"{launchers} launcher(s): share of the ceiling its CPU per task allows",
        100 * ceiling["cpu"] / used, "%")
    cores = len(os.sched_getaffinity(0))
    add("noop", f"{launchers} launcher(s): share of the ceiling reachable with all {cores} "
        "cores to itself", 100 * cores / used / ceiling["rate"], "%")


def _utilisation_rows(dsn: str, root: Path, quick: bool,
                      add: Callable[[str, str, float, str], None]) -> None:
    nodes, seconds, rounds = (40, 2.0, 4) if quick else (800, 10.0, 60)
    util = utilisation(dsn, root, 5, nodes, seconds, rounds)
    label = f"5 launchers x {nodes} nodes, {seconds:g} s tasks, {rounds} rounds"
    add("utilisation", f"{label}: whole run", util["utilisation"] * 100, "%")
    add("utilisation", f"{label}: steady state", util["steady"] * 100, "%")
    add("utilisation", f"{label}: idle per node while starting and draining",
        util["idle_at_ends"], "s")
    add("utilisation", f"{label}: ramp-up until every node busy", util["ramp"], "s")
    add("utilisation", f"{label}: restart gap (median)", util["gap_median"], "s")
    add("utilisation", f"{label}: restart gap (90th percentile)", util["gap_p90"], "s")
    add("utilisation", f"{label}: drain after the last task", util["tail"], "s")
    add("utilisation", f"{label}: span (ideal {rounds * seconds:g} s)", util["span"], "s")


def _claim_rows(dsn: str, quick: bool, add: Callable[[str, str, float, str], None]) -> None:
    for batch in (1, 32):
        claim_tasks = (500 if quick else 5000) * (1 if batch == 1 else 8)
        for claimers in (1, 5, 20):
            rate = claim_throughput(dsn, claimers, batch, claim_tasks)
            add("claim", f"{claimers} launcher(s), {batch} task(s) per claim", rate,
                "tasks/s")
    ahead = 1000 if quick else 10000
    for untrusted in (0, ahead):
        rate = claim_throughput(dsn, 5, 32, 4000 if quick else 40000, untrusted)
        add("claim", f"5 launcher(s), 32 task(s) per claim, {untrusted:,} untrusted ahead",
            rate, "tasks/s")


if __name__ == "__main__":
    import sys

    for row in run(quick="--full" not in sys.argv):
        print(f"{row['benchmark']:12} {row['metric']:70} {row['value']:>12,.3f} {row['unit']}")
