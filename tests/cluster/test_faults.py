"""Faults across hosts, with every run counted: a network partition shorter than the heartbeat
timeout, Slurm cancelling a running multi-node job, a compute node lost mid-run and a partition
longer than the timeout (both recovered by a second --consume-all batch job that waits for them).
See docs/multihost.md, "When a node dies"."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import dataclass

import pytest

nc = sys.modules["namespace_cluster"]

pytestmark = [pytest.mark.cluster, pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]


#: The launchers' heartbeat timeout (``balsam launcher`` default, as submit-launch runs it).
HEARTBEAT_TIMEOUT = 60
#: A task that says it is alive every second: ``tick.sh SECONDS FILE`` appends
#: "TASK_ID HOST PID tick|end EPOCH" lines to FILE; a run cut short has no "end".
TICK = """#!/bin/sh
i=0
while [ "$i" -lt "$1" ]; do
    echo "$BALSAM_TASK_ID $(hostname) $$ tick $(date +%s.%N)" >> "$2"
    sleep 1
    i=$((i + 1))
done
echo "$BALSAM_TASK_ID $(hostname) $$ end $(date +%s.%N)" >> "$2"
"""


@dataclass(frozen=True)
class Run:
    """One execution of a task, as its ticks tell it."""

    task: int
    host: str
    first: float
    last: float
    ended: bool


def ticked_runs(path) -> list[Run]:
    """Every run a TICK task wrote to ``path``, in the order they started."""
    seen: dict[tuple[int, str, str], list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        task, host, pid, what, at = line.split()
        seen.setdefault((int(task), host, pid), []).append((what, float(at)))
    return sorted((Run(task, host, min(t for _, t in marks), max(t for _, t in marks),
                       any(w == "end" for w, _ in marks))
                   for (task, host, _), marks in seen.items()), key=lambda r: r.first)


def assert_once_each(runs: list[Run], ids: list[int]) -> None:
    """Every task ran to its end exactly once, and no two runs of a task overlapped."""
    assert Counter(r.task for r in runs if r.ended) == Counter(ids)
    for task in ids:
        mine = [r for r in runs if r.task == task]
        for before, after in zip(mine, mine[1:], strict=False):
            assert before.last < after.first, f"task {task} ran twice at once: {mine}"


def wait_states(project, ids, wanted, timeout=60.0):
    """Wait until every task in ``ids`` is in state ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        states = project.sql("SELECT state FROM tasks WHERE id = ANY(%s)", ids)
        if [r["state"] for r in states] == [wanted] * len(ids):
            return
        assert time.monotonic() < deadline, f"not all {wanted}: {states}"
        time.sleep(0.5)


def test_a_short_partition_of_the_launchers_node_loses_nothing(project, healed):
    cluster = healed
    app = project.script("alice", "record-alice")
    counts = project.root / "data" / "partition.runs"
    ids = project.add_tasks("alice", "record-alice", app, [
        {"name": f"p{i}", "workflow": "partition", "args": f"6 {counts}",
         "node_packing_count": 2} for i in range(12)])  # two rounds on 3 nodes
    job = project.submit("alice", "-n", "3", "-t", "5", "--job-mode", "serial",
                         "--wf-filter", "partition")
    wait_states(project, ids[:6], "RUNNING")
    # The launcher's node is cut off from the server and from its agents while the first round
    # ends, well under the heartbeat timeout (60 s) and Slurm's (30 s).
    cluster.link_down("node1")
    time.sleep(10)
    cluster.link_up("node1")
    project.wait(job)

    assert Counter(t for t, _ in project.runs(counts)) == Counter(ids)
    wait_states(project, ids, "JOB_FINISHED", timeout=5)
    [launcher] = project.sql("SELECT ended_at IS NOT NULL AS ended FROM launchers "
                             "WHERE batch_job_id = %s", job.id)
    assert launcher["ended"]


def test_scancel_of_a_running_multi_node_job_times_its_task_out(project, healed):
    cluster = healed
    [task] = project.add_tasks("alice", "sleeper", "/bin/sleep", [
        {"name": "long", "workflow": "scancel", "args": "300", "num_nodes": 2}])
    job = project.submit("alice", "-n", "2", "-t", "5", "--wf-filter", "scancel")
    wait_states(project, [task], "RUNNING")
    cluster.scancel(job.slurm_id)
    cluster.wait_job_ended(job.slurm_id, 60)

    history = project.sql("SELECT to_state, message FROM task_events WHERE task_id = %s "
                          "ORDER BY id", task)
    assert [e["to_state"] for e in history][-2:] == ["RUNNING", "RUN_TIMEOUT"]
    assert "SIGTERM" in history[-1]["message"]
    [launcher] = project.sql("SELECT ended_at IS NOT NULL AS ended FROM launchers "
                             "WHERE batch_job_id = %s", job.id)
    assert launcher["ended"]


def lost_node_setup(project, name, seconds, count=4):
    """``count`` TICK tasks of ``seconds`` in workflow ``name``, all running in one batch job on
    node1 (serial mode, packed on its one node); returns (ids, job, launcher id, runs file)."""
    app = project.script("alice", "tick", TICK)
    path = project.root / "data" / f"{name}.runs"
    ids = project.add_tasks("alice", "tick", app, [
        {"name": f"{name}{i}", "workflow": name, "args": f"{seconds} {path}",
         "node_packing_count": count} for i in range(count)])
    job = project.submit("alice", "-n", "1", "-t", "10", "--job-mode", "serial",
                         "--wf-filter", name)
    wait_states(project, ids, "RUNNING")
    [launcher] = project.sql("SELECT id, hostname FROM launchers WHERE batch_job_id = %s",
                             job.id)
    assert launcher["hostname"] == "node1"
    return ids, job, launcher["id"], path


def restarts(project, ids):
    """When (epoch seconds) each task was given back to run again, and why."""
    rows = project.sql("SELECT task_id, date_part('epoch', at)::float8 AS at, message "
                       "FROM task_events WHERE task_id = ANY(%s) AND to_state = 'RESTART_READY' "
                       "ORDER BY id", ids)
    return {r["task_id"]: (r["at"], r["message"]) for r in rows}


def test_a_lost_node_loses_no_task_and_runs_none_twice(project, healed):
    """The launcher's node is lost mid-run (unplugged, then every process killed). A second
    --consume-all job, started at once, finds no task it could claim but waits: the lost
    launcher is silent. It is reaped at its heartbeat timeout and its tasks run again in the
    second job, each exactly once. Meanwhile ``balsam ls`` says why their launcher is
    suspect."""
    cluster = healed
    ids, _, lost, path = lost_node_setup(project, "lost", 10)
    cluster.lose("node1")
    lost_at = time.time()
    second = project.submit("alice", "-n", "1", "-t", "10", "--job-mode", "serial",
                            "--wf-filter", "lost")
    time.sleep(25)  # past two heartbeats missed, short of the timeout
    listed = json.loads(project.sh("alice", "balsam ls --wf lost -o json").stdout)
    assert {r["state"] for r in listed} == {"RUNNING"}
    assert all(f"launcher {lost} suspect: heartbeat late" in r["info"] for r in listed)
    # (Slurm may requeue the lost job too: whichever job runs them, each runs once.)
    wait_states(project, ids, "JOB_FINISHED", timeout=HEARTBEAT_TIMEOUT + 120)
    project.wait(second)

    runs = ticked_runs(path)
    assert_once_each(runs, ids)
    assert {r.host for r in runs if r.ended} <= {"node2", "node3"}
    assert not any(r.ended for r in runs if r.host == "node1")
    again = restarts(project, ids)
    assert set(again) == set(ids)
    for at, message in again.values():
        # the reaper runs with each heartbeat of the waiting launcher: one poll
        assert at - lost_at < HEARTBEAT_TIMEOUT + 10 + 5
        assert message.startswith(f"launcher {lost} presumed dead: no heartbeat for")
    print(f"restarted {max(at for at, _ in again.values()) - lost_at:.1f}s after the loss")


def test_a_partition_longer_than_the_timeout_fences_the_cut_off_launcher(project, healed):
    """node1 is cut off (its processes live on) for longer than the heartbeat timeout. Its
    launcher's fence kills the tasks before the server presumes it dead; a second job runs
    them again, never two runs of a task at once; when the cable is back, the old launcher's
    late writes are refused and nothing of it is left on node1."""
    cluster = healed
    # Longer than the fence's lease (timeout - 5 s): none can end on node1 while it is cut off.
    ids, _, fenced, path = lost_node_setup(project, "fenced", HEARTBEAT_TIMEOUT + 10, count=2)
    cluster.link_down("node1")
    cut_at = time.time()
    second = project.submit("alice", "-n", "1", "-t", "10", "--job-mode", "serial",
                            "--wf-filter", "fenced")
    nc.wait_for("the cut-off launcher's tasks to be given back",
                lambda: set(restarts(project, ids)) == set(ids) or None, HEARTBEAT_TIMEOUT + 20)
    time.sleep(max(0.0, cut_at + HEARTBEAT_TIMEOUT + 15 - time.time()))
    cluster.link_up("node1")
    wait_states(project, ids, "JOB_FINISHED", timeout=HEARTBEAT_TIMEOUT + 120)
    project.wait(second)

    runs = ticked_runs(path)
    assert_once_each(runs, ids)
    cut_off = [r for r in runs if r.host == "node1" and r.first < cut_at]
    assert len(cut_off) == 2 and not any(r.ended for r in cut_off)
    # the fence acted before the server presumed the launcher dead, let alone restarted a task
    again = restarts(project, ids)
    for run in cut_off:
        assert run.last < again[run.task][0]
    [row] = project.sql("SELECT end_reason, date_part('epoch', ended_at)::float8 AS ended "
                        "FROM launchers WHERE id = %s", fenced)
    assert row["end_reason"].startswith("presumed dead: no heartbeat")
    late = project.sql("SELECT count(*) AS n FROM task_events WHERE launcher_id = %s "
                       "AND date_part('epoch', at) > %s", fenced, row["ended"])
    assert late == [{"n": 0}]  # nothing it wrote after being presumed dead was accepted
    log = (project.root / "log" / f"launcher_{fenced}.log").read_text()
    assert f"launcher {fenced} ended: presumed dead" in log, log  # it learnt, and stopped
    print(f"fenced {max(r.last for r in cut_off) - cut_at:.1f}s after the cut, restarted "
          f"{min(at for at, _ in again.values()) - cut_at:.1f}s after it")

    for node in cluster.compute:  # no run of these tasks is left anywhere
        assert str(path) not in cluster.run(node, ["ps", "-eo", "args"]).stdout
