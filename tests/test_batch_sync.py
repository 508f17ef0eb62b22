"""Batch job state sync as a state machine (hypothesis), on a real database.

A fake scheduler reports whatever the model says; launchers come and go in the launchers table;
users cancel; the scheduler has outages. After every sync the row must agree with the world and
never have moved backwards or out of an ended state.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from balsam import hookimpl
from balsam.db import wrap_db_errors
from balsam.errors import InvalidTransition, SchedulerError
from balsam.plugins import get_plugin_manager
from balsam.scheduler import JobStatus, Scheduler
from balsam_launcher import batch_jobs
from balsam_launcher.batch_jobs import RANK

pytestmark = pytest.mark.pg

WORLD: dict[str, JobStatus | None] = {}
OUTAGE = {"on": False}


class FakeScheduler(Scheduler):
    name = "fake"
    template = "local.sh"

    def submit(self, script, job):
        raise NotImplementedError

    def status(self, ids):
        if OUTAGE["on"]:
            raise SchedulerError("fake scheduler is down")
        return {i: WORLD[i] for i in ids if WORLD.get(i) is not None}

    def cancel(self, scheduler_id, *, force=False):
        pass


class FakePlugin:
    @hookimpl
    def register_schedulers(self):
        return {"fake": FakeScheduler}


def test_sync_state_machine(db, project):
    pm = get_plugin_manager()
    pm.register(FakePlugin(), name="fake-sched")
    counter = iter(range(10**6))

    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            OUTAGE["on"] = False
            self.sid = f"s{next(counter)}"
            job = batch_jobs.create(db, "fake", {
                "project": "", "queue": "", "num_nodes": 1, "wall_time_minutes": 5,
                "job_mode": "serial", "wf_filter": ""})
            self.id = batch_jobs.mark_submitted(db, job["id"], self.sid)["id"]
            self.phase = "queued"  # the truth: queued, running, or an ended state
            WORLD[self.sid] = JobStatus("queued")
            self.cancelled = False
            self.launchers: list[int] = []
            self.alive: list[int] = []
            self.seen = self.row()

        def row(self):
            return db.execute("SELECT * FROM batch_jobs WHERE id = %s", (self.id,)).fetchone()

        def now(self):
            return datetime.now(UTC)

        @precondition(lambda self: self.phase == "queued")
        @rule()
        def start(self):
            self.phase = "running"
            WORLD[self.sid] = JobStatus("running", self.now())

        @precondition(lambda self: self.phase in ("queued", "running"))
        @rule(outcome=st.sampled_from(["finished", "failed"]))
        def end(self, outcome):
            if self.cancelled:
                outcome = "cancelled"
            for lid in self.alive:
                db.execute("UPDATE launchers SET ended_at = now() WHERE id = %s", (lid,))
            self.alive = []
            started = self.now() if self.phase == "running" else None
            self.phase = outcome
            WORLD[self.sid] = JobStatus(outcome, started, self.now())

        @precondition(lambda self: self.phase not in ("queued", "running"))
        @rule()
        def forget(self):
            WORLD[self.sid] = None

        @precondition(lambda self: self.phase == "running")
        @rule()
        def launcher_starts(self):
            lid = db.execute(
                "INSERT INTO launchers (batch_job_id, hostname, pid, job_mode, num_nodes) "
                "VALUES (%s, 'h', 1, 'serial', 1) RETURNING id", (self.id,)).fetchone()["id"]
            self.launchers.append(lid)
            self.alive.append(lid)

        @precondition(lambda self: self.alive)
        @rule()
        def launcher_ends(self):
            lid = self.alive.pop()
            db.execute("UPDATE launchers SET ended_at = now() WHERE id = %s", (lid,))

        @rule()
        def outage(self):
            OUTAGE["on"] = not OUTAGE["on"]

        @precondition(lambda self: not self.cancelled)
        @rule()
        def user_cancels(self):
            self.cancelled = True
            db.execute("UPDATE batch_jobs SET state = 'cancelled', state_message = 'by test' "
                       "WHERE id = %s AND state IN ('pending','submitted','queued','running')",
                       (self.id,))

        @rule()
        def sync(self):
            before = self.row()
            batch_jobs.sync(db, project, pm)
            after = self.row()
            if OUTAGE["on"]:
                assert after == before, "a scheduler outage must change nothing"
                return
            ended = self.phase not in ("queued", "running")
            if after["state"] == "cancelled":
                if ended:
                    assert after["ended_at"] is not None
            elif ended and (WORLD[self.sid] is not None or not self.alive):
                assert after["state"] in ("finished", "failed", "cancelled")
                if WORLD[self.sid] is not None:
                    assert after["state"] == WORLD[self.sid].state
            elif self.phase == "running":
                assert after["state"] == "running"
                assert after["started_at"] is not None
            elif self.launchers:
                assert after["state"] == "running"
            else:
                assert after["state"] == "queued"

        @invariant()
        def never_backwards(self):
            now = self.row()
            old = self.seen
            if old["state"] in ("finished", "failed", "cancelled"):
                assert now["state"] == old["state"]
                if old["ended_at"] is not None:
                    assert now["ended_at"] == old["ended_at"]
            assert RANK[now["state"]] >= RANK[old["state"]]
            if old["started_at"] is not None:
                assert now["started_at"] == old["started_at"]
            self.seen = now

    Machine.TestCase.settings = settings(
        max_examples=60, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    try:
        Machine.TestCase().runTest()
    finally:
        pm.unregister(name="fake-sched")
        OUTAGE["on"] = False


def test_ended_batch_job_cannot_be_revived_by_any_client(db):
    job = batch_jobs.create(db, "local", {"project": "", "queue": "", "num_nodes": 1,
                                          "wall_time_minutes": 5, "job_mode": "mpi",
                                          "wf_filter": ""})
    db.execute("UPDATE batch_jobs SET state = 'finished' WHERE id = %s", (job["id"],))
    with pytest.raises(InvalidTransition, match=r"finished -> running is not allowed"), \
            wrap_db_errors():
        db.execute("UPDATE batch_jobs SET state = 'running' WHERE id = %s", (job["id"],))
    db.execute("UPDATE batch_jobs SET state_message = 'note' WHERE id = %s", (job["id"],))
