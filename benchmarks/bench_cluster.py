"""Across hosts: Balsam on the namespace cluster of ``scripts/cluster-up.sh`` (root; 4 compute
nodes, alice's project with its server on the login node, shared with bob).

- utilisation: alice and bob each submit a 2-node serial-mode batch job with
  ``balsam submit-launch`` at once; their tasks sleep 2 seconds, 8 to a node, with enough work to
  keep the jobs busy for about 3 minutes (they ask for 5: a launcher stops a minute early and
  starts no task whose 1-minute wall time would not fit), then they end on their own.
  Busy node-seconds (each run's RUNNING interval, 1/8 of a node) over available node-seconds
  (each job's nodes from the moment slurmctld allocated them to the job's end), over the whole
  allocation and in steady state (from the moment every slot of a job is busy to its last start);
  ramp-up (Slurm's start until every slot is busy, of which the launcher's own start-up) and drain
  (the last task's end until Slurm's end) apart;
- no-op throughput: one launcher on the login node driving the agents of 3 remote compute nodes
  (``salloc -N 3``: its agents start through srun and talk to it over TCP), beside the same
  launcher with 3 nodes on one host (agents started by mpirun on the login node, and direct
  starts without agents); ``/bin/true`` tasks, 16 to a node.

The machine's 2 cores run every node, so the figures are ratios between these set-ups, not what a
real cluster would do. Quick mode: about 45 s of work in 3-minute jobs, and fewer no-ops.
It uses the namespace cluster: run it under ``flock /tmp/balsam-slurm.lock`` like the cluster
tests, never beside them.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

from balsam.queries import parse_queries

HERE = Path(__file__).resolve().parent
SQL = parse_queries((HERE / "bench_cluster.sql").read_text())
GROUP = "balsamtest"
NODES = 4
PACKING = 8
TASK_SECONDS = 2.0


def _driver() -> Any:
    """The cluster and project driver shared with the cluster tests."""
    path = HERE.parent / "tests" / "cluster" / "namespace_cluster.py"
    spec = importlib.util.spec_from_file_location("namespace_cluster", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["namespace_cluster"] = module
    spec.loader.exec_module(module)
    return module


def _ensure_users() -> None:
    """alice and bob in group balsamtest, as the test suite makes them."""
    subprocess.run(["groupadd", "-f", GROUP], check=True)
    for user in ("alice", "bob"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", user], check=True)
        subprocess.run(["usermod", "-a", "-G", GROUP, user], check=True)


def _floats(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON rows from the project's database: numbers came as strings."""
    return [{k: float(v) if k != "id" and v is not None else v for k, v in r.items()}
            for r in rows]


# --- utilisation ---------------------------------------------------------------------------------


def allocation_use(jobs: list[dict[str, Any]], runs: list[dict[str, Any]],
                   packing: int) -> dict[str, float]:
    """Busy over available node-seconds of batch jobs, whole and in steady state, and where the
    rest went. ``jobs``: launcher id, nodes, Slurm's start and end, the launcher's start;
    ``runs``: launcher id, start and end of each run (a run holds 1/packing of a node)."""
    busy = sum(r["ended"] - r["started"] for r in runs) / packing
    available = sum(j["nodes"] * (j["end"] - j["start"]) for j in jobs)
    window_busy = window_slots = 0.0
    ramps, startups, drains = [], [], []
    for job in jobs:
        mine = [r for r in runs if r["launcher_id"] == job["launcher"]]
        slots = job["nodes"] * packing
        starts = sorted(r["started"] for r in mine)
        if len(starts) < slots:
            message = (f"launcher {job['launcher']} never had its {slots} slots busy "
                       f"({len(starts)} runs)")
            raise RuntimeError(message)
        full, last = starts[slots - 1], starts[-1]
        ramps.append(full - job["start"])
        startups.append(job["launcher_started"] - job["start"])
        drains.append(job["end"] - max(r["ended"] for r in mine))
        window_busy += sum(max(0.0, min(r["ended"], last) - max(r["started"], full))
                           for r in mine)
        window_slots += slots * max(0.0, last - full)
    return {
        "whole": busy / available,
        "steady": window_busy / window_slots if window_slots else float("nan"),
        "ramp": sum(ramps) / len(ramps),
        "startup": sum(startups) / len(startups),
        "drain": sum(drains) / len(drains),
        "span": max(j["end"] for j in jobs) - min(j["start"] for j in jobs),
    }


def utilisation(proj: Any, minutes: int, work_seconds: float) -> dict[str, float]:
    """Two users' 2-node jobs at once, each with ``work_seconds`` of 2-second tasks per slot."""
    per_user = int(2 * PACKING * work_seconds / TASK_SECONDS)
    jobs = []
    for user in ("alice", "bob"):
        proj.add_tasks(user, f"sleep-{user}", "/bin/sleep", [
            {"name": f"{user}{i}", "workflow": "util", "args": str(TASK_SECONDS),
             "node_packing_count": PACKING} for i in range(per_user)])
    for user in ("alice", "bob"):
        jobs.append(proj.submit(user, "-n", "2", "-t", str(minutes), "--job-mode", "serial",
                                "--wf-filter", "util"))
    proj.wait(*jobs, timeout=minutes * 60 + 120)
    launchers = _floats(proj.sql(SQL["launchers"], [j.id for j in jobs]))
    if len(launchers) != len(jobs):
        message = f"expected one launcher per batch job, got {launchers}"
        raise RuntimeError(message)
    spans = {j.id: proj.cluster.allocation(j.slurm_id) for j in jobs}
    described = [{"launcher": la["id"], "nodes": int(la["num_nodes"]),
                  "start": spans[la["batch_job_id"]][0], "end": spans[la["batch_job_id"]][1],
                  "launcher_started": la["started"]} for la in launchers]
    return allocation_use(described, _floats(proj.sql(SQL["runs"], "util")), PACKING)


# --- no-op throughput -----------------------------------------------------------------------------


def noop_rate(proj: Any, workflow: str, tasks: int, prefix: list[str], options: list[str],
              env: dict[str, str]) -> float:
    """Tasks per second of a launcher on the login node (started through ``prefix``, with
    ``options``) running ``tasks`` no-ops of ``workflow``."""
    proj.add_tasks("alice", "noop", "/bin/true", [
        {"name": f"n{i}", "workflow": workflow, "node_packing_count": 16} for i in range(tasks)])
    launcher = [*prefix, "balsam", "launcher", "--job-mode", "serial", "--consume-all",
                "--wf-filter", workflow, *options]
    proj.cluster.run("login", launcher, user="alice", timeout=900,
                     env=proj.env({"BALSAM_DB_PATH": str(proj.root), **env}))
    [row] = _floats(proj.sql(SQL["throughput"], workflow))
    if row["finished"] != tasks:
        message = f"{workflow}: {row['finished']:.0f} of {tasks} no-op tasks finished"
        raise RuntimeError(message)
    return float(row["finished"] / row["seconds"])


def run(quick: bool) -> list[dict[str, Any]]:
    if os.geteuid() != 0:
        message = "bench_cluster needs root: it builds a cluster of namespaces on this machine"
        raise RuntimeError(message)
    rows: list[dict[str, Any]] = []

    def add(name: str, metric: str, value: float, unit: str) -> None:
        rows.append({"benchmark": name, "metric": metric, "value": round(value, 4),
                     "unit": unit})

    nc = _driver()
    _ensure_users()
    cluster = nc.Cluster.up(NODES)
    try:
        with nc.project(cluster, GROUP) as proj:
            minutes, work = (3, 45.0) if quick else (5, 170.0)
            use = utilisation(proj, minutes, work)
            label = (f"2 users x 2-node jobs, {PACKING}/node, {TASK_SECONDS:g} s tasks, "
                     f"~{work:.0f} s of work")
            add("cluster", f"{label}: whole allocation", use["whole"] * 100, "%")
            add("cluster", f"{label}: steady state", use["steady"] * 100, "%")
            add("cluster", f"{label}: ramp-up until every slot busy", use["ramp"], "s")
            add("cluster", f"{label}: of which launcher start-up", use["startup"], "s")
            add("cluster", f"{label}: drain after the last task", use["drain"], "s")
            add("cluster", f"{label}: span of both jobs", use["span"], "s")

            tasks = 300 if quick else 2000
            variants = [
                ("3 remote nodes (salloc, agents over TCP)", ["salloc", "-N", "3", "--exclusive"],
                 [], {}),
                ("3 nodes on one host (agents)", [], ["--nodes", "3"],
                 {"BALSAM_LAUNCHER_AGENTS": "always"}),
                ("3 nodes on one host (direct starts)", [], ["--nodes", "3"], {}),
            ]
            for i, (name, prefix, options, env) in enumerate(variants):
                rate = noop_rate(proj, f"noop{i}", tasks, prefix, options, env)
                add("cluster", f"no-op tasks, one launcher: {name}", rate, "tasks/s")
    finally:
        nc.Cluster.down()
    return rows
