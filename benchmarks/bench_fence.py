"""The launcher's fence (balsam_launcher.fence): what it costs, and how fast it acts.

- start: from calling ``fence.run`` to the first line of the launcher's code, and the whole
  round trip of a launcher that does nothing (start, exit, the fence's final sweep, back in
  the caller), for each fence: none, subreaper, namespace;
- per task: the only per-task work, naming a task's pid as the host knows it from its pidfd
  (a PID namespace only; outside one the pid is the host's), and the rate at which a process
  behind each fence starts, names and reaps ``/bin/true`` (the launcher's start-up ceiling),
  the fences taking turns;
- lapse: from the lease's expiry to every one of N task trees (``sh`` and two ``sleep``) killed
  and the launcher told, as a fenced launcher sees it.

The no-op task throughput with and without the fence is bench_launcher's, run with
``BALSAM_FENCE=none`` and without.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

from balsam_launcher import fence, lease

MODES = ("none", "subreaper", "namespace")


def _start(mode: str, rounds: int, where: Path) -> tuple[float, float]:
    """Median (ms) of: call -> first line of main; call -> status back."""
    firsts, totals = [], []
    mark = where / "first"
    with mock.patch.dict(os.environ, {fence.VARIABLE: mode}):
        for _ in range(rounds):
            def main() -> int:
                mark.write_text(repr(time.perf_counter()))
                return 0

            began = time.perf_counter()
            assert fence.run(main, lease_timeout=None) == 0
            totals.append(time.perf_counter() - began)
            firsts.append(float(mark.read_text()) - began)
    return statistics.median(firsts) * 1000, statistics.median(totals) * 1000


def _host_pid_cost(calls: int) -> float:
    """Microseconds per host_pid_of on a live child's pidfd."""
    child = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(child.pid)
    try:
        began = time.perf_counter()
        for _ in range(calls):
            fence.host_pid_of(pidfd)
        return (time.perf_counter() - began) / calls * 1e6
    finally:
        os.close(pidfd)
        child.kill()
        child.wait()


def _start_rates(tasks: int, rounds: int, where: Path) -> dict[str, float]:
    """Median tasks/s starting /bin/true as the launcher does, behind each fence."""
    out = where / "rate"

    def main() -> int:
        stdin = os.open(os.devnull, os.O_RDONLY)
        began = time.perf_counter()
        for _ in range(tasks):
            child = subprocess.Popen(["/bin/true"], process_group=0, stdin=stdin)
            pidfd = os.pidfd_open(child.pid)
            fence.host_pid_for(child.pid, pidfd)
            os.close(pidfd)
            child.wait()
        out.write_text(repr(tasks / (time.perf_counter() - began)))
        return 0

    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for mode in MODES:
            with mock.patch.dict(os.environ, {fence.VARIABLE: mode}):
                assert fence.run(main, lease_timeout=None) == 0
            rates.setdefault(mode, []).append(float(out.read_text()))
    return {mode: statistics.median(r) for mode, r in rates.items()}


def _lapse(trees: int, where: Path) -> float:
    """Milliseconds from the lease's expiry to the fence's notice, with ``trees`` task trees."""
    out = where / "lapse"

    def main() -> int:
        procs = [subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], process_group=0)
                 for _ in range(trees)]
        time.sleep(0.5)  # every tree has forked
        sent = time.monotonic()
        lease.renewed(sent)
        expiry = lease.expiry(sent, 2.0)
        while not lease.lapsed():
            time.sleep(0.001)
        out.write_text(repr(time.monotonic() - expiry))
        for p in procs:
            p.wait()
        return 0

    with mock.patch.dict(os.environ, {fence.VARIABLE: "namespace"}):
        assert fence.run(main, lease_timeout=2.0) == 0
    return float(out.read_text()) * 1000


def run(quick: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    rounds = 10 if quick else 50
    with tempfile.TemporaryDirectory(prefix="balsam-bench-fence-") as tmp:
        where = Path(tmp)
        for mode in MODES:
            first, total = _start(mode, rounds, where)
            rows.append({"benchmark": f"fence start ({mode})", "metric": "to the launcher's code",
                         "value": first, "unit": "ms (median)"})
            rows.append({"benchmark": f"fence start ({mode})", "metric": "start and stop",
                         "value": total, "unit": "ms (median)"})
        rows.append({"benchmark": "fence per task", "metric": "host pid from pidfd",
                     "value": _host_pid_cost(2000 if quick else 20000), "unit": "us/task"})
        rates = _start_rates(300 if quick else 2000, 3 if quick else 5, where)
        for mode, rate in rates.items():
            rows.append({"benchmark": f"fence per task ({mode})",
                         "metric": "start, name and reap /bin/true", "value": rate,
                         "unit": "tasks/s (median)"})
        for trees in ((10, 100) if quick else (10, 100, 400)):
            rows.append({"benchmark": f"fence lapse ({trees} task trees)",
                         "metric": "expiry to all killed", "value": _lapse(trees, where),
                         "unit": "ms"})
    return rows
