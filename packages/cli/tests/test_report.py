"""``balsam report``: tables, JSON and plots over a hand-built history, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW = ["--since", "2024-03-01T00:00:00+00:00", "--until", "2024-03-01T00:25:00+00:00"]
BALSAM = str(Path(sys.executable).parent / "balsam")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Tables show local time: make it UTC so the rows are predictable."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _insert(db, sql: str, *params):
    return db.execute(sql, params).fetchone()


@pytest.fixture
def history(project, db):
    """Two launchers of 4 nodes: alice's [0, 1200) in batch job 1, bob's [600, 1500) outside.

    Busy: a 2-node sim task of alice on alice's launcher [60, 660) then finished; a 4-node ana
    task of bob on bob's launcher [600, 1200) then RUN_ERROR 'exit status 3'. Over [0, 1500):
    available 4x1200 + 4x900 = 8400, busy 2x600 + 4x600 = 3600 node-seconds.
    """
    app = _insert(db, "INSERT INTO apps (name, executable) VALUES ('a', '/bin/true') "
                      "RETURNING id")["id"]
    job = _insert(db, "INSERT INTO batch_jobs (owner, scheduler, scheduler_id, num_nodes, "
                      "wall_time_minutes, state, started_at, ended_at) VALUES "
                      "('alice', 'slurm', '4242', 4, 30, 'finished', %s, %s) RETURNING id",
                  at(0), at(1200))["id"]
    launchers = {}
    for owner, start, end, batch in (("alice", 0, 1200, job), ("bob", 600, 1500, None)):
        launchers[owner] = _insert(
            db, "INSERT INTO launchers (batch_job_id, owner, hostname, pid, job_mode, num_nodes, "
                "started_at, heartbeat_at, ended_at) VALUES (%s, %s, 'h', 1, 'mpi', 4, %s, %s, %s) "
                "RETURNING id", batch, owner, at(start), at(end), at(end))["id"]
    events = []
    for owner, workflow, nodes, start, end, outcome, message in (
            ("alice", "sim", 2, 60, 660, "JOB_FINISHED", ""),
            ("bob", "ana", 4, 600, 1200, "RUN_ERROR", "exit status 3")):
        task = _insert(db, "INSERT INTO tasks (app_id, owner, workflow, num_nodes) "
                           "VALUES (%s, %s, %s, %s) RETURNING id", app, owner, workflow,
                       nodes)["id"]
        launcher = launchers[owner]
        events += [(task, "PREPROCESSED", "RUNNING", at(start), launcher, ""),
                   (task, "RUNNING", "RUN_DONE" if outcome == "JOB_FINISHED" else outcome,
                    at(end), launcher, message)]
        if outcome == "JOB_FINISHED":
            events.append((task, "POSTPROCESSED", "JOB_FINISHED", at(end + 30), launcher, ""))
    db.execute("DELETE FROM task_events")
    with db.cursor() as cur:
        cur.executemany("INSERT INTO task_events (task_id, from_state, to_state, at, launcher_id, "
                        "message) VALUES (%s, %s, %s, %s, %s, %s)", events)
    return {"job": job}


@pytest.fixture
def run_cli(project):
    cli = build_cli(get_plugin_manager())

    def run(*args: str):
        return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)

    return run


def test_utilization_table(history, run_cli):
    result = run_cli("utilization", *WINDOW, "--bin", "5m", "--by", "user")
    assert result.exit_code == 0, result.output
    assert "Utilisation 42.9%: 1.00 of 2.33 node-hours busy" in result.output
    lines = result.output.splitlines()
    # Bin [00:10, 00:15): alice's and bob's 4 nodes available; alice's task ends at 00:11.
    row = next(line for line in lines if "00:10:00" in line)
    assert row.split()[1:4] == ["8.00", "4.40", "55.0"]
    alice = next(line for line in lines if line.startswith("alice "))
    assert alice.split()[1:4] == ["0.33", "1.33", "25.0"]


def test_utilization_json_matches_the_api(history, run_cli):
    result = run_cli("utilization", *WINDOW, "--bin", "300", "--json", "--by", "batch-job")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["utilization"] == pytest.approx(3600 / 8400)
    assert [b["busy_node_seconds"] for b in data["bins"]] == pytest.approx(
        [2 * 240, 2 * 300, 2 * 60 + 4 * 300, 4 * 300, 0])
    assert data["bins"][0]["start"] == T0.isoformat()
    groups = {g["key"]: g for g in data["groups"]}
    assert groups[str(history["job"])]["utilization"] == pytest.approx(1200 / 4800)
    assert groups[""]["busy_node_seconds"] == pytest.approx(2400)


def test_throughput_and_errors(history, run_cli):
    result = run_cli("throughput", *WINDOW, "--bin", "5m", "--json", "--by", "workflow")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["total"] == 1 and data["groups"] == {"sim": 1}
    assert [b["count"] for b in data["bins"]] == [0, 0, 1, 0, 0]
    table = run_cli("throughput", *WINDOW, "--bin", "5m")
    assert "Finished 1 tasks (2.4 per hour)" in table.output

    errors = run_cli("errors", *WINDOW, "--by", "user")
    assert errors.exit_code == 0, errors.output
    row = next(line for line in errors.output.splitlines() if "exit status 3" in line)
    assert row.split()[:3] == ["RUN_ERROR", "bob", "1"]
    assert "1 error events: RUN_ERROR 1" in errors.output


def test_summary(history, run_cli):
    result = run_cli("summary", *WINDOW)
    assert result.exit_code == 0, result.output
    assert "Tasks finished     1 (2.4 per hour)" in result.output
    assert "Errors             1 (RUN_ERROR 1, RUN_TIMEOUT 0, FAILED 0)" in result.output
    assert "Utilisation        42.9%" in result.output
    job = next(line for line in result.output.splitlines() if "4242" in line)
    assert "alice" in job and "finished" in job and job.endswith("25.0")
    data = json.loads(run_cli("summary", *WINDOW, "--json", "--by", "workflow").output)
    assert {g["key"]: g["tasks_finished"] for g in data["groups"]} == {"sim": 1, "ana": 0}
    assert data["batch_jobs"][0]["allocated_node_seconds"] == pytest.approx(4800)


@pytest.mark.parametrize("report", ["utilization", "throughput", "errors", "summary"])
def test_plots_are_written(history, run_cli, tmp_path, report):
    from matplotlib.image import imread

    target = tmp_path / f"{report}.png"
    result = run_cli(report, *WINDOW, "--by", "user", "--plot", str(target))
    assert result.exit_code == 0, result.output
    assert f"Plot written to {target}" in result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(target)
    assert pixels.shape[0] > 400 and pixels.shape[1] > 800
    colours = {tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[2]).tolist()}
    assert len(colours) > 20  # drawn, not blank


def test_plot_with_json_keeps_stdout_parseable(history, project, tmp_path):
    target = tmp_path / "u.png"
    env = {**os.environ, "BALSAM_DB_PATH": str(project.root)}
    proc = subprocess.run([BALSAM, "report", "utilization", *WINDOW, "--json", "--plot",
                           str(target)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["utilization"] == pytest.approx(3600 / 8400)
    assert "Plot written" in proc.stderr and target.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["utilization", "--since", "last tuesday"], "invalid time 'last tuesday'"),
    (["throughput", "--bin", "0"], "invalid duration '0'"),
    (["errors", "--since", "2024-03-02", "--until", "2024-03-01"], "the window is empty"),
    (["utilization", "--bin", "1s", "--since", "30d"], "use a wider bin"),
    (["summary", "--plot", "/nonexistent/dir/x.png"], "no directory /nonexistent/dir"),
    (["summary", "--since", "100000000000000000000000h"], "must be within 100 years of now"),
    (["errors", "--until", "9999-12-31"], "must be within 100 years of now"),
    (["utilization", "--since", "0001-01-01"], "must be within 100 years of now"),
    (["throughput", "--bin", "100000000000000000000h"], "must be at most 100 years"),
    (["utilization", "--bin", "1000000000h"], "must be at most 100 years"),
])
def test_bad_input_is_one_clear_line(history, run_cli, args, message):
    result = run_cli(*args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_grouping_is_refused(history, run_cli):
    result = run_cli("utilization", "--by", "team")
    assert result.exit_code == 1
    assert result.output == ("Error: invalid grouping 'team'; expected one of: user, workflow, "
                             "batch-job\n")


def test_no_active_project(run_cli, monkeypatch):
    monkeypatch.delenv("BALSAM_DB_PATH")
    result = run_cli("summary")
    assert result.exit_code == 1 and "Error: no active project" in result.output


def test_every_report_has_help(run_cli):
    for name in ("utilization", "throughput", "errors", "summary"):
        result = run_cli(name, "--help")
        assert result.exit_code == 0 and "--since" in result.output and "--plot" in result.output
