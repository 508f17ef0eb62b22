"""The service's sizing rule (pure)."""

from __future__ import annotations

import pytest

from balsam.claim import Work
from balsam.errors import InvalidInput
from balsam_launcher.service import Policy, nodes_needed, plan


def test_nodes_needed_by_mode():
    work = [Work(1, 4, 10), Work(2, 1, 3), Work(16, 1, 2)]
    assert nodes_needed(work, "serial", 8) == (9, 2)  # ceil(10/4 + 6), two tasks too big
    assert nodes_needed(work, "mpi", 8) == (16, 2)
    assert nodes_needed([], "mpi", 8) == (0, 0)


def test_no_work_no_jobs():
    assert plan(Policy(max_queued=3, max_nodes=8), [], 0, 0) == []


def test_sized_to_the_work_within_limits():
    policy = Policy(max_queued=3, max_nodes=4, min_nodes=2, wall_time_minutes=30, queue="q",
                    project="A", job_mode="serial", wf_filter="wf")
    [job] = plan(policy, [Work(1, 1, 1)], 0, 0)
    assert (job.num_nodes, job.wall_time_minutes, job.queue, job.project, job.job_mode,
            job.wf_filter) == (2, 30, "q", "A", "serial", "wf")  # at least min_nodes
    jobs = plan(policy, [Work(1, 1, 9)], 0, 0)
    assert [j.num_nodes for j in jobs] == [4, 4, 2]


def test_waiting_jobs_count_against_both_limits():
    policy = Policy(max_queued=2, max_nodes=4)
    assert plan(policy, [Work(1, 1, 3)], 1, 4) == []  # the waiting job covers the work
    assert [j.num_nodes for j in plan(policy, [Work(1, 1, 9)], 1, 4)] == [4]
    assert plan(policy, [Work(1, 1, 9)], 2, 8) == []  # max_queued reached


def test_tasks_larger_than_max_nodes_are_not_submitted_for():
    assert plan(Policy(max_queued=2, max_nodes=4), [Work(8, 1, 5)], 0, 0) == []


@pytest.mark.parametrize("fields, message", [
    ({"max_queued": 0}, "--max-queued must be at least 1"),
    ({"min_nodes": 3, "max_nodes": 2}, "--min-nodes <= --max-nodes"),
    ({"interval": 0}, "--interval must be positive"),
    ({"interval": -1}, "--interval must be positive"),
    ({"interval": float("nan")}, "--interval must be positive and at most 86,400 seconds"),
    ({"interval": float("inf")}, "--interval must be positive and at most 86,400 seconds"),
    ({"interval": 1e300}, "--interval must be positive and at most 86,400 seconds"),
    ({"wall_time_minutes": 0}, "--wall-time must be at least 1 minute"),
    ({"queue": "a b"}, "--queue 'a b'"),
])
def test_bad_policies(fields, message):
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        Policy(**fields).validate()
