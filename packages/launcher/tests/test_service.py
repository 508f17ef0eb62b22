"""``balsam service`` as a real process with the local scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.pg, pytest.mark.slow]

BALSAM = str(Path(sys.executable).parent / "balsam")

# Stands in for the launcher: holds its node(s) until told to stop, claims nothing.
HOLD = """#!/bin/bash
trap 'exit 0' TERM
sleep 60 & wait
"""


def add_tasks(db, count, num_nodes=1, workflow=""):
    app = db.execute("INSERT INTO apps (name, executable) VALUES ('a' || gen_random_uuid(), "
                     "'true') RETURNING id").fetchone()["id"]
    db.execute("INSERT INTO tasks (app_id, name, workflow, num_nodes, state) "
               "SELECT %s, 't' || i, %s, %s, 'READY' FROM generate_series(1, %s) i",
               (app, workflow, num_nodes, count))


def jobs(db):
    return db.execute("SELECT * FROM batch_jobs ORDER BY id").fetchall()


def wait_until(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def services(db):
    """Backends holding a service's session lock: {pid: the start of their latest query}."""
    return {r["pid"]: r["query_start"] for r in db.execute(
        "SELECT l.pid, a.query_start FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.pid <> pg_backend_pid()")}


def rounds_pass(db, interval=0.3, timeout=20.0):
    """Return once the one running service has run a whole round after this call: it has begun
    two rounds since (their queries an interval apart), so the first of them has ended."""
    since = db.execute("SELECT clock_timestamp() AS t").fetchone()["t"]
    starts = []
    deadline = time.monotonic() + timeout
    while len(starts) < 2:
        assert time.monotonic() < deadline, "the service ran no round"
        [latest] = wait_until(lambda: services(db), what="a running service").values()
        if latest > since and (not starts or (latest - starts[-1]).total_seconds() > interval / 2):
            starts.append(latest)
        time.sleep(0.02)


@dataclass
class Service:
    proc: subprocess.Popen[str]
    out: str = ""

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode


@contextmanager
def service(*args: str) -> Iterator[Service]:
    """``balsam service`` running for the block, then stopped as a scheduler stops it (SIGTERM;
    killed if it does not stop); its exit code and output are read after the block."""
    env = dict(os.environ)
    env.pop("BALSAM_SCHEDULER", None)
    svc = Service(subprocess.Popen([BALSAM, "service", "--interval", "0.3", *args], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        yield svc
    finally:
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
        try:
            svc.out, _ = svc.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.out, _ = svc.proc.communicate()


@pytest.fixture
def held(project):
    (project.root / "job-templates" / "local.sh").write_text(HOLD)
    yield project
    for path in (project.qsubmit_dir / ".local").glob("*.start"):
        try:
            os.killpg(int(path.stem), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_service_submits_for_work_within_policy_and_stops_on_sigterm(db, held):
    with service("--max-queued", "2", "--max-nodes", "4", "--wall-time", "10",
                 "--job-mode", "serial", "-q", "local") as svc:
        rounds_pass(db)
        assert jobs(db) == [], "no runnable work: nothing to submit"
        add_tasks(db, 3)
        first = wait_until(lambda: jobs(db), what="a first job")
        assert [(j["num_nodes"], j["wall_time_minutes"], j["queue"], j["job_mode"])
                for j in first] == [(3, 10, "local", "serial")]
        rounds_pass(db)
        assert len(jobs(db)) == 1, "the waiting job already covers the work"
        add_tasks(db, 5)
        both = wait_until(lambda: len(jobs(db)) == 2 and jobs(db), what="a second job")
        assert both[1]["num_nodes"] == 4  # 8 tasks - 3 covered, capped at --max-nodes
        rounds_pass(db)
        assert len(jobs(db)) == 2, "--max-queued 2 reached"
        assert all((held.root / j["script_path"]).exists() for j in both)
    assert svc.returncode == 0, svc.out
    assert "service started" in svc.out and "service stopped" in svc.out
    assert svc.out.count("submitted batch job") == 2


def test_one_service_per_queue_and_filter(db, held):
    with service("-q", "x") as first:
        wait_until(lambda: services(db), what="the first service's lock")
        second = subprocess.run([BALSAM, "service", "-q", "x", "--interval", "0.3"],
                                capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "a balsam service already runs for queue 'x'" in second.stderr
        with service("-q", "y") as other:  # another queue is fine
            wait_until(lambda: len(services(db)) == 2, what="both services' locks")
            assert other.proc.poll() is None
        assert other.returncode == 0, other.out
    assert first.returncode == 0, first.out


def test_once_and_bad_policy(db, held):
    add_tasks(db, 2, workflow="wf")
    env = {k: v for k, v in os.environ.items() if k != "BALSAM_SCHEDULER"}
    ok = subprocess.run([BALSAM, "service", "--once", "--wf-filter", "other"], env=env,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and jobs(db) == []  # tasks of another workflow
    ok = subprocess.run([BALSAM, "service", "--once", "--wf-filter", "wf", "--max-nodes", "4"],
                        env=env, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert [(j["num_nodes"], j["wf_filter"]) for j in jobs(db)] == [(2, "wf")]
    bad = subprocess.run([BALSAM, "service", "--max-nodes", "0"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: need 1 <= --min-nodes <= --max-nodes (got 1 and 0)"
    for interval in ("nan", "inf", "-inf"):  # "interval=nans" ran a service that never waited
        bad = subprocess.run([BALSAM, "service", "--interval", interval], env=env,
                             capture_output=True, text=True, timeout=30)
        expected = f"--interval must be positive and at most 86,400 seconds (got {interval})"
        assert (bad.returncode, bad.stderr.strip()) == (1, f"Error: {expected}")


def test_service_with_real_launchers_until_the_work_is_done(db, project, tmp_path):
    from balsam_testing import launchers as testing

    app = testing.record_app(db, tmp_path)
    counts = tmp_path / "counts"
    ids = testing.add_tasks(db, app, [{"name": f"t{i}", "args": f"0.3 {counts}"}
                                      for i in range(6)])
    with service("--max-queued", "1", "--max-nodes", "2", "--wall-time", "5",
                 "--job-mode", "serial") as svc:
        testing.wait_until_final(db, ids, timeout=90)
        assert testing.executions(counts) == {i: 1 for i in ids}
        wait_until(lambda: all(j["state"] == "finished" for j in jobs(db)), timeout=60,
                   what="every batch job finished")
        submitted = len(jobs(db))
        assert 1 <= submitted <= 6
        assert all(j["num_nodes"] <= 2 for j in jobs(db))
        rounds_pass(db)
        assert len(jobs(db)) == submitted, "no work left: nothing more submitted"
    assert svc.returncode == 0, svc.out


def test_service_survives_a_database_restart(db_dsn, held, pg_server):
    from balsam.db import connect

    with service("--max-queued", "3", "--max-nodes", "1") as svc:
        with connect(db_dsn) as db:
            add_tasks(db, 1)
            wait_until(lambda: [j["state"] for j in jobs(db)] in (["submitted"], ["running"]),
                       what="a first job")
        time.sleep(0.5)  # the test cluster commits asynchronously: let the WAL reach disk
        pg_server.restart()  # every connection drops, the service's too
        time.sleep(1.0)
        with connect(db_dsn) as db:
            add_tasks(db, 1)
            wait_until(lambda: len(jobs(db)) == 2, what="a job after the restart")
    assert svc.returncode == 0, svc.out
    assert "retrying" in svc.out or "round failed" in svc.out
