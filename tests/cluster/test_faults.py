"""Faults across hosts that Balsam survives today, with every run counted: a network partition
shorter than the heartbeat timeout, and Slurm cancelling a running multi-node job.

(Losing a node, a partition longer than the timeout and a second --consume-all job during
recovery do not pass yet: see docs/multihost.md, "When a node dies".)"""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]


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
