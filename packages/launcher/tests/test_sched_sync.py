"""The batch-job reconciliation rule (pure: a row, the scheduler's word, the launchers')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from balsam.scheduler import JobStatus
from balsam_launcher.batch_jobs import Launchers, Update, reconcile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def row(state="submitted", scheduler_id="17", **extra):
    return {"state": state, "scheduler_id": scheduler_id, "state_message": "", "started_at": None,
            "ended_at": None, **extra}


def test_scheduler_status_moves_the_job_forward():
    assert reconcile(row(), JobStatus("queued"), Launchers(), NOW) == Update("queued")
    start = T0 + timedelta(minutes=1)
    assert reconcile(row("queued"), JobStatus("running", start), Launchers(), NOW) == \
        Update("running", started_at=start)
    end = T0 + timedelta(minutes=9)
    assert reconcile(row("running"), JobStatus("finished", start, end), Launchers(), NOW) == \
        Update("finished", started_at=start, ended_at=end)


def test_never_backwards_and_ended_jobs_stay_ended():
    assert reconcile(row("running"), JobStatus("queued"), Launchers(), NOW) is None
    for state in ("finished", "failed"):
        assert reconcile(row(state), JobStatus("running"), Launchers(1, 1), NOW) is None
    assert reconcile(row("queued"), JobStatus("queued"), Launchers(), NOW) is None


def test_launchers_prove_a_job_runs_before_the_scheduler_says_so():
    update = reconcile(row("queued"), JobStatus("queued"), Launchers(1, 1, T0), NOW)
    assert update == Update("running", started_at=T0)


def test_forgotten_job_judged_by_its_launchers():
    end = T0 + timedelta(minutes=5)
    assert reconcile(row("running"), None, Launchers(2, 0, T0, end), NOW) == \
        Update("finished", started_at=T0, ended_at=end)
    assert reconcile(row("queued"), None, Launchers(1, 1, T0), NOW) == \
        Update("running", started_at=T0)
    failed = reconcile(row("queued"), None, Launchers(), NOW)
    assert failed.state == "failed" and "no longer knows job 17" in failed.message
    assert failed.ended_at == NOW


def test_pending_without_scheduler_id_waits():
    assert reconcile(row("pending", None), None, Launchers(), NOW) is None
    assert reconcile(row("pending", None), None, Launchers(1, 1, T0), NOW) == \
        Update("running", started_at=T0)


def test_cancelled_job_gets_its_end_time_once_over():
    cancelled = row("cancelled", state_message="cancelled by alice")
    assert reconcile(cancelled, JobStatus("running", T0), Launchers(1, 1, T0), NOW) is None
    end = T0 + timedelta(minutes=3)
    update = reconcile(cancelled, JobStatus("finished", T0, end), Launchers(), NOW)
    assert update == Update("cancelled", "cancelled by alice", T0, end)
    assert reconcile(cancelled, None, Launchers(1, 0, T0, end), NOW).ended_at == end
    assert reconcile({**cancelled, "ended_at": end}, None, Launchers(), NOW) is None


def test_scheduler_end_without_time_uses_launchers_or_now():
    end = T0 + timedelta(minutes=2)
    assert reconcile(row("running"), JobStatus("finished"), Launchers(1, 0, T0, end),
                     NOW).ended_at == end
    assert reconcile(row("running"), JobStatus("failed", message="x"), Launchers(),
                     NOW).ended_at == NOW
