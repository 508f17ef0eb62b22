"""Reports on hand-built histories: the figures are recomputed here independently (direct interval
overlaps per bin), and checked against hand-worked numbers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balsam import analytics, durations
from balsam.errors import InvalidInput

pytestmark = pytest.mark.pg

T0 = datetime(2024, 3, 1, tzinfo=UTC)
INF = float("inf")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Launcher:
    id: int
    owner: str
    nodes: int
    start: float
    end: float  # ended_at, or the last heartbeat while it runs
    job_mode: str
    batch_job: int | None


@dataclass
class Run:
    task: int
    launcher: Launcher | None
    start: float
    end: float | None  # None: no exit recorded yet
    weight: float
    owner: str
    workflow: str


@dataclass
class History:
    """Inserts rows with chosen times and remembers what it inserted, for the reference."""

    db: object
    app: int = 0
    launchers: list[Launcher] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    tasks: dict[int, tuple[str, str, int, int]] = field(default_factory=dict)
    finished: list[tuple[float, int, Launcher | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = self.db.execute(
            "INSERT INTO apps (name, executable) VALUES ('hist', '/bin/true') RETURNING id"
        ).fetchone()["id"]

    def batch_job(self, owner: str, nodes: int, start: float | None, end: float | None,
                  state: str = "finished") -> int:
        return self.db.execute(
            "INSERT INTO batch_jobs (owner, scheduler, scheduler_id, num_nodes, "
            "wall_time_minutes, state, started_at, ended_at) "
            "VALUES (%s, 'slurm', '77', %s, 60, %s, %s, %s) RETURNING id",
            (owner, nodes, state, None if start is None else at(start),
             None if end is None else at(end))).fetchone()["id"]

    def launcher(self, owner: str, nodes: int, start: float, end: float | None = None,
                 heartbeat: float | None = None, job_mode: str = "mpi",
                 batch_job: int | None = None) -> Launcher:
        heartbeat = heartbeat if heartbeat is not None else (end if end is not None else start)
        row = self.db.execute(
            "INSERT INTO launchers (batch_job_id, owner, hostname, pid, job_mode, num_nodes, "
            "started_at, heartbeat_at, ended_at) VALUES (%s, %s, 'h', 1, %s, %s, %s, %s, %s) "
            "RETURNING id",
            (batch_job, owner, job_mode, nodes, at(start), at(heartbeat),
             None if end is None else at(end))).fetchone()
        launcher = Launcher(row["id"], owner, nodes, start, end if end is not None else heartbeat,
                            job_mode, batch_job)
        self.launchers.append(launcher)
        return launcher

    def task(self, owner: str = "alice", workflow: str = "wf", nodes: int = 1,
             packing: int = 1) -> int:
        task = self.db.execute(
            "INSERT INTO tasks (app_id, owner, workflow, num_nodes, node_packing_count) "
            "VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (self.app, owner, workflow, nodes, packing)).fetchone()["id"]
        # The insert trigger recorded an event now: these histories choose every time themselves.
        self.db.execute("DELETE FROM task_events WHERE task_id = %s", (task,))
        self.tasks[task] = (owner, workflow, nodes, packing)
        return task

    def event(self, task: int, from_state: str | None, to_state: str, seconds: float,
              launcher: Launcher | None = None, message: str = "") -> None:
        self.db.execute(
            "INSERT INTO task_events (task_id, from_state, to_state, at, launcher_id, message) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (task, from_state, to_state, at(seconds), launcher.id if launcher else None,
             message))

    def run(self, task: int, launcher: Launcher | None, start: float, end: float | None = None,
            exit_state: str = "RUN_DONE", message: str = "",
            exit_launcher: Launcher | None = None) -> None:
        """RUNNING from ``start`` to ``end`` (open if None); the exit names ``exit_launcher``
        (the reaper records none)."""
        self.event(task, "PREPROCESSED", "RUNNING", start, launcher)
        if end is not None:
            self.event(task, "RUNNING", exit_state, end, exit_launcher, message)
        owner, workflow, nodes, packing = self.tasks[task]
        serial = launcher is None or launcher.job_mode == "serial"
        weight = 1 / packing if nodes == 1 and serial else float(nodes)
        self.runs.append(Run(task, launcher, start, end, weight, owner, workflow))

    def finish(self, task: int, seconds: float, launcher: Launcher | None) -> None:
        self.event(task, "POSTPROCESSED", "JOB_FINISHED", seconds, launcher)
        self.finished.append((seconds, task, launcher))

    # --- the reference: direct overlaps, no steps, no SQL ----------------------------------

    def expected_bins(self, since: float, until: float, width: float,
                      key=lambda run: "") -> list[tuple[float, float, dict[str, float], float]]:
        """Per bin: (start, end, busy node-seconds per key, available node-seconds)."""
        out = []
        start = since
        while start < until:
            end = min(start + width, until)
            busy: dict[str, float] = {}
            for r in self.runs:
                s, e = r.start, INF if r.end is None else r.end
                if r.launcher is not None:
                    s, e = max(s, r.launcher.start), min(e, r.launcher.end)
                overlap = max(0.0, min(e, end) - max(s, start))
                if overlap > 0:
                    busy[key(r)] = busy.get(key(r), 0.0) + r.weight * overlap
            available = sum(la.nodes * max(0.0, min(la.end, end) - max(la.start, start))
                            for la in self.launchers)
            out.append((start, end, busy, available))
            start = end
        return out


@pytest.fixture
def history(db):
    return History(db)


def worked_example(h: History) -> dict[str, Launcher]:
    """The history the hand-worked numbers below describe (times in seconds from T0).

    Launcher A: alice, 4 nodes, mpi, batch job 1, [0, 1000). Launcher B: bob, 2 nodes, serial,
    no batch job, [500, 1500).
    t1 alice/sim 2 nodes on A [100, 600), finished at 620 by A.
    t5 alice/sim 1 node on A [200, 300): RUN_ERROR 'exit status 1', FAILED 'giving up' at 310.
    t2 bob/ana 1 node packed 4 on B [600, 1000), finished at 1010 by B: a quarter node.
    t3 carol/sim 4 nodes on A [700, 900) RUN_ERROR 'exit status 1', then again from 950 with no
       exit recorded: busy until A ends at 1000.
    """
    job = h.batch_job("alice", 4, 0, 1000)
    a = h.launcher("alice", 4, 0, 1000, batch_job=job)
    b = h.launcher("bob", 2, 500, 1500, job_mode="serial")
    t1 = h.task("alice", "sim", nodes=2)
    t5 = h.task("alice", "sim")
    t2 = h.task("bob", "ana", packing=4)
    t3 = h.task("carol", "sim", nodes=4)
    h.run(t1, a, 100, 600, exit_launcher=a)
    h.finish(t1, 620, a)
    h.run(t5, a, 200, 300, "RUN_ERROR", "exit status 1", exit_launcher=a)
    h.event(t5, "RUN_ERROR", "FAILED", 310, a, "giving up")
    h.run(t2, b, 600, 1000, exit_launcher=b)
    h.finish(t2, 1010, b)
    h.run(t3, a, 700, 900, "RUN_ERROR", "exit status 1", exit_launcher=a)
    h.event(t3, "RUN_ERROR", "RESTART_READY", 920, None)
    h.event(t3, "RESTART_READY", "RUNNING", 950, a)
    h.runs.append(Run(t3, a, 950, None, 4.0, "carol", "sim"))
    return {"A": a, "B": b}


WINDOW = {"since": at(0), "until": at(1500), "bin_width": timedelta(seconds=500)}


# --- hand-worked figures ------------------------------------------------------------------------


def test_worked_example_utilization(history, db):
    worked_example(history)
    report = analytics.utilization(db, **WINDOW)
    # [0,500): A 4x500 available; t1 2x400 + t5 1x100 busy.
    # [500,1000): A 2000 + B 2x500; t1 2x100 + t2 0.25x400 + t3 4x200 + 4x50.
    # [1000,1500): B 1000 available, nothing busy.
    assert [b.available_node_seconds for b in report.bins] == pytest.approx([2000, 3000, 1000])
    assert [b.busy_node_seconds for b in report.bins] == pytest.approx([900, 1300, 0])
    assert [b.busy_nodes for b in report.bins] == pytest.approx([1.8, 2.6, 0])
    assert report.utilization == pytest.approx(2200 / 6000)
    assert [b.start for b in report.bins] == [at(0), at(500), at(1000)]


def test_worked_example_per_group(history, db):
    worked_example(history)
    by_user = {g.key: g for g in analytics.utilization(db, by="user", **WINDOW).groups}
    # Per user is the launcher's owner: everything on A is alice's, even carol's task.
    assert by_user["alice"].busy_node_seconds == pytest.approx(2100)
    assert by_user["alice"].available_node_seconds == pytest.approx(4000)
    assert by_user["bob"].busy_node_seconds == pytest.approx(100)
    assert by_user["bob"].utilization == pytest.approx(100 / 2000)
    assert set(by_user) == {"alice", "bob"}
    by_workflow = {g.key: g for g in analytics.utilization(db, by="workflow", **WINDOW).groups}
    assert by_workflow["sim"].busy_node_seconds == pytest.approx(2100)
    assert by_workflow["ana"].busy_node_seconds == pytest.approx(100)
    assert by_workflow["sim"].available_node_seconds is None
    by_job = analytics.utilization(db, by="batch-job", **WINDOW)
    groups = {g.key: g for g in by_job.groups}
    job = str(history.launchers[0].batch_job)
    assert groups[job].busy_node_seconds == pytest.approx(2100)
    assert groups[job].utilization == pytest.approx(2100 / 4000)
    assert groups[""].available_node_seconds == pytest.approx(2000)
    assert by_job.bins[1].busy_by == pytest.approx({job: 1200, "": 100})


def test_worked_example_throughput_and_errors(history, db):
    worked_example(history)
    report = analytics.throughput(db, **WINDOW)
    assert [b.count for b in report.bins] == [0, 1, 1]
    assert report.cumulative == [0, 1, 2]
    by_user = analytics.throughput(db, by="user", **WINDOW)
    assert by_user.groups == {"alice": 1, "bob": 1}  # the task's owner
    by_job = analytics.throughput(db, by="batch-job", **WINDOW)
    assert by_job.groups == {str(history.launchers[0].batch_job): 1, "": 1}

    errors = analytics.errors(db, **WINDOW)
    groups = [(g.state, g.message, g.events, g.tasks) for g in errors.groups]
    assert groups == [("RUN_ERROR", "exit status 1", 2, 2), ("FAILED", "giving up", 1, 1)]
    assert errors.groups[0].first_at == at(300) and errors.groups[0].last_at == at(900)
    assert errors.by_state == {"RUN_ERROR": 2, "FAILED": 1}
    assert [b.by for b in errors.bins] == [{"RUN_ERROR": 1, "FAILED": 1}, {"RUN_ERROR": 1}, {}]
    by_user = analytics.errors(db, by="user", **WINDOW)
    assert {(g.key, g.state): g.events for g in by_user.groups} == {
        ("alice", "RUN_ERROR"): 1, ("carol", "RUN_ERROR"): 1, ("alice", "FAILED"): 1}


def test_worked_example_summary_and_batch_jobs(history, db):
    worked_example(history)
    summary = analytics.summary(db, since=at(0), until=at(1500))
    assert summary.tasks_finished == 2
    assert summary.errors == {"RUN_ERROR": 2, "RUN_TIMEOUT": 0, "FAILED": 1}
    assert summary.busy_node_seconds == pytest.approx(2200)
    assert summary.available_node_seconds == pytest.approx(6000)
    groups = {g.key: g for g in summary.groups}
    assert (groups["alice"].tasks_finished, groups["alice"].errors) == (1, 2)
    assert groups["alice"].busy_node_seconds == pytest.approx(2100)
    assert (groups["carol"].errors, groups["carol"].busy_node_seconds) == (1, 0)
    assert groups["carol"].available_node_seconds == 0
    [job] = summary.batch_jobs
    assert (job.owner, job.num_nodes, job.tasks_finished) == ("alice", 4, 1)
    assert job.allocated_node_seconds == pytest.approx(4000)
    assert job.busy_node_seconds == pytest.approx(2100)
    assert job.utilization == pytest.approx(2100 / 4000)
    assert summary.task_states == {"CREATED": 4}
    assert analytics.batch_jobs(db, since=at(0), until=at(1500)) == summary.batch_jobs
    by_workflow = analytics.summary(db, since=at(0), until=at(1500), by="workflow")
    assert {g.key: g.tasks_finished for g in by_workflow.groups} == {"sim": 1, "ana": 1}
    assert all(g.utilization is None for g in by_workflow.groups)


def test_window_clips_and_partial_last_bin(history, db):
    worked_example(history)
    report = analytics.utilization(db, since=at(250), until=at(1100),
                                   bin_width=timedelta(seconds=400))
    # Bins [250,650), [650,1050), [1050,1100).
    assert [(b.start, b.end) for b in report.bins] == [(at(250), at(650)), (at(650), at(1050)),
                                                       (at(1050), at(1100))]
    # [250,650): t1 2x350, t5 1x50, t2 0.25x50. [650,1050): t2 0.25x350, t3 4x200 + 4x50.
    assert [b.busy_node_seconds for b in report.bins] == pytest.approx([762.5, 1087.5, 0])
    assert [b.available_node_seconds for b in report.bins] == pytest.approx(
        [4 * 400 + 2 * 150, 4 * 350 + 2 * 400, 2 * 50])
    assert report.bins[-1].available_nodes == pytest.approx(2)


def test_live_launcher_counts_until_its_last_heartbeat(history, db):
    live = history.launcher("alice", 3, 0, None, heartbeat=800)
    task = history.task(nodes=3)
    history.run(task, live, 600)  # still running: busy until the heartbeat
    unknown = history.task(nodes=2)
    history.run(unknown, None, 1000)  # no launcher: busy until the window ends
    report = analytics.utilization(db, since=at(0), until=at(1200),
                                   bin_width=timedelta(seconds=600))
    assert [b.available_node_seconds for b in report.bins] == pytest.approx([1800, 600])
    assert [b.busy_node_seconds for b in report.bins] == pytest.approx([0, 3 * 200 + 2 * 200])


def test_reaped_task_is_not_busy_after_its_launcher_died(history, db):
    dead = history.launcher("bob", 2, 0, 100)
    task = history.task(nodes=2)
    history.run(task, dead, 50, 300, "RESTART_READY", "launcher presumed dead")
    report = analytics.utilization(db, since=at(0), until=at(400),
                                   bin_width=timedelta(seconds=400))
    assert report.busy_node_seconds == pytest.approx(2 * 50)
    assert report.utilization == pytest.approx(100 / 200)


def test_packing_only_in_serial_mode(history, db):
    serial = history.launcher("alice", 1, 0, 100, job_mode="serial")
    mpi = history.launcher("alice", 1, 0, 100, job_mode="mpi")
    for _ in range(4):
        history.run(history.task(packing=4), serial, 0, 100)
    history.run(history.task(packing=4), mpi, 0, 50)  # mpi mode: a whole node
    report = analytics.utilization(db, since=at(0), until=at(100), by="user")
    assert report.busy_node_seconds == pytest.approx(100 + 50)
    assert report.utilization == pytest.approx(150 / 200)


def test_default_window_covers_the_activity(history, db):
    worked_example(history)
    report = analytics.throughput(db)
    # Activity spans 0..1500 s: 30 s bins (at most 60), aligned on the grid; the last
    # activity (B's end at 1500) opens a last bin, so the event at 1010 is inside.
    assert report.window.bin_seconds == 30
    assert report.window.since == at(0) and report.window.until == at(1530)
    assert report.total == 2
    assert analytics.utilization(db).busy_node_seconds == pytest.approx(2200)


def test_default_ends_fall_back_when_the_activity_is_outside(history, db):
    worked_example(history)
    before = analytics.utilization(db, until=at(-600))
    assert (before.window.since, before.window.until) == (at(-4200), at(-600))
    assert before.busy_node_seconds == 0 and before.available_node_seconds == 0
    after = analytics.throughput(db, since=at(2000))
    assert after.window.since == at(2000) and after.window.until > datetime.now(UTC) - timedelta(
        minutes=1)
    assert after.total == 0


def test_real_transitions_through_the_triggers(db, history):
    """A task moved through the state machine by UPDATEs: events come from the triggers."""
    launcher = db.execute(
        "INSERT INTO launchers (owner, hostname, pid, job_mode, num_nodes) "
        "VALUES ('alice', 'h', 1, 'mpi', 2) RETURNING id").fetchone()["id"]
    task = db.execute("INSERT INTO tasks (app_id, num_nodes, state) VALUES (%s, 2, 'READY') "
                      "RETURNING id", (history.app,)).fetchone()["id"]
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", (launcher, task))
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING"):
        db.execute("UPDATE tasks SET state = %s WHERE id = %s", (state, task))
    time.sleep(0.05)
    for state in ("RUN_DONE", "POSTPROCESSED", "JOB_FINISHED"):
        db.execute("UPDATE tasks SET state = %s WHERE id = %s", (state, task))
    db.execute("UPDATE launchers SET ended_at = clock_timestamp(), "
               "heartbeat_at = clock_timestamp() WHERE id = %s", (launcher,))
    run = db.execute(
        "SELECT max(at) FILTER (WHERE to_state = 'RUNNING') AS start, "
        "max(at) FILTER (WHERE from_state = 'RUNNING') AS stop FROM task_events").fetchone()
    expected = 2 * (run["stop"] - run["start"]).total_seconds()
    assert expected >= 0.1
    assert analytics.utilization(db).busy_node_seconds == pytest.approx(expected)
    assert analytics.throughput(db, by="user").groups == {"postgres": 1}
    assert analytics.summary(db).task_states == {"JOB_FINISHED": 1}


# --- the reference, on random histories -----------------------------------------------------

USERS = st.sampled_from(["alice", "bob", "carol"])
SECOND = st.integers(min_value=0, max_value=1000)


@st.composite
def histories(draw):
    """Launchers, tasks with a few runs each (some still open, some outliving their launcher),
    finished events, a window and a grouping."""
    launchers = draw(st.lists(st.tuples(USERS, st.integers(1, 8), SECOND, SECOND,
                                        st.sampled_from(["mpi", "serial"]), st.booleans()),
                              min_size=1, max_size=3))
    tasks = draw(st.lists(st.tuples(USERS, st.sampled_from(["", "a", "b"]), st.integers(1, 3),
                                    st.integers(1, 4)), min_size=1, max_size=5))
    runs = []
    for index in range(len(tasks)):
        clock = draw(SECOND)
        for _ in range(draw(st.integers(0, 3))):
            length = draw(st.integers(0, 400))
            runs.append((index, draw(st.integers(-1, len(launchers) - 1)), clock,
                         None if draw(st.integers(0, 5)) == 0 else clock + length))
            if runs[-1][3] is None:
                break
            clock += length + draw(st.integers(0, 50))
    finished = draw(st.lists(st.tuples(st.integers(0, len(tasks) - 1), SECOND,
                                       st.integers(-1, len(launchers) - 1)), max_size=6))
    since = draw(st.integers(-100, 900))
    until = since + draw(st.integers(1, 1500))
    width = draw(st.integers(1, 600))
    by = draw(st.sampled_from([None, *analytics.BY_CHOICES]))
    return launchers, tasks, runs, finished, (since, until, width), by


def _key(by, run: Run) -> str:
    if by == "user":
        return run.launcher.owner if run.launcher else ""
    if by == "workflow":
        return run.workflow
    if by == "batch-job":
        return str(run.launcher.batch_job) if run.launcher and run.launcher.batch_job else ""
    return ""


def _finished_key(by, task: tuple[str, str, int, int], launcher: Launcher | None) -> str:
    if by == "user":
        return task[0]
    if by == "workflow":
        return task[1]
    return str(launcher.batch_job) if launcher and launcher.batch_job else ""


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=histories())
def test_random_histories_match_the_reference(db, spec):
    db.execute("TRUNCATE task_events, tasks, launchers, batch_jobs, apps RESTART IDENTITY CASCADE")
    h = History(db)
    launcher_specs, task_specs, run_specs, finished_specs, (since, until, width), by = spec
    launchers = []
    for owner, nodes, a, b, mode, in_job in launcher_specs:
        start, end = min(a, b), max(a, b)
        job = h.batch_job(owner, nodes, start, end) if in_job else None
        launchers.append(h.launcher(owner, nodes, start, end, job_mode=mode, batch_job=job))
    tasks = [h.task(owner, workflow, nodes, packing)
             for owner, workflow, nodes, packing in task_specs]
    for index, which, start, end in run_specs:
        launcher = launchers[which] if which >= 0 else None
        h.run(tasks[index], launcher, start, end, exit_launcher=None)
    for index, seconds, which in finished_specs:
        h.finish(tasks[index], seconds, launchers[which] if which >= 0 else None)

    window = {"since": at(since), "until": at(until), "bin_width": timedelta(seconds=width)}
    report = analytics.utilization(db, by=by, **window)
    expected = h.expected_bins(since, until, width, key=lambda r: _key(by, r))
    assert [(b.start, b.end) for b in report.bins] == [(at(s), at(e)) for s, e, _, _ in expected]
    for got, (_, _, busy, available) in zip(report.bins, expected, strict=True):
        assert got.busy_node_seconds == pytest.approx(sum(busy.values()), abs=1e-6)
        assert got.available_node_seconds == pytest.approx(available, abs=1e-6)
        if by is not None:
            nonzero = {k: v for k, v in busy.items() if v > 1e-9}
            assert {k: v for k, v in got.busy_by.items() if v > 1e-9} == pytest.approx(nonzero)

    throughput = analytics.throughput(db, by=by, **window)
    counts = [sum(1 for s, _, _ in h.finished if b.start <= at(s) < b.end) for b in throughput.bins]
    assert [b.count for b in throughput.bins] == counts
    if by is not None:
        groups: dict[str, int] = {}
        for seconds, task, launcher in h.finished:
            if since <= seconds < until:
                key = _finished_key(by, h.tasks[task], launcher)
                groups[key] = groups.get(key, 0) + 1
        assert throughput.groups == groups

    summary = analytics.summary(db, since=at(since), until=at(until), by=by)
    assert summary.busy_node_seconds == pytest.approx(report.busy_node_seconds, abs=1e-6)
    assert summary.available_node_seconds == pytest.approx(report.available_node_seconds,
                                                           abs=1e-6)
    assert summary.tasks_finished == throughput.total
    [(_, _, busy_per_job, _)] = h.expected_bins(
        since, until, until - since, key=lambda r: r.launcher.batch_job if r.launcher else None)
    assert {j.id for j in summary.batch_jobs} >= {k for k, v in busy_per_job.items() if k and v}
    for job in summary.batch_jobs:
        mine = [la for la in h.launchers if la.batch_job == job.id]
        available = sum(la.nodes * max(0, min(la.end, until) - max(la.start, since)) for la in mine)
        assert job.available_node_seconds == pytest.approx(available, abs=1e-6)
        assert job.busy_node_seconds == pytest.approx(busy_per_job.get(job.id, 0), abs=1e-6)


# --- input checking and pure helpers -------------------------------------------------------


def test_bad_windows_are_refused(db):
    with pytest.raises(InvalidInput, match="must be before"):
        analytics.utilization(db, since=at(100), until=at(100))
    with pytest.raises(InvalidInput, match="at most"):
        analytics.throughput(db, since=at(0), until=at(86400 * 30),
                             bin_width=timedelta(seconds=1))
    with pytest.raises(InvalidInput, match="positive"):
        analytics.errors(db, since=at(0), until=at(10), bin_width=timedelta(0))
    with pytest.raises(InvalidInput, match="grouping"):
        analytics.summary(db, by="team")


def test_empty_project_reports_zeros(db):
    report = analytics.utilization(db)
    assert report.utilization is None and report.busy_node_seconds == 0
    assert report.window.until - report.window.since <= timedelta(hours=1, minutes=1)
    summary = analytics.summary(db)
    assert (summary.tasks_finished, summary.batch_jobs, summary.groups) == (0, [], [])


def test_without_a_connection_the_active_project_is_used(project, history):
    worked_example(history)
    assert analytics.throughput(since=at(0), until=at(1500)).total == 2


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("5m", 300), ("5min", 300), ("1.5h", 5400), ("2d", 172800),
    ("1w", 604800), ("1h30m", 5400), (" 2 H ", 7200), (".5m", 30),
])
def test_parse_duration(text, seconds):
    assert analytics.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "abc", "0", "0s", "5x", "-5m", "m", "1h 30", "5m5"])
def test_parse_duration_refuses(text):
    with pytest.raises(InvalidInput, match="invalid duration"):
        analytics.parse_duration(text)


@pytest.mark.parametrize("text", ["100000000000000000000000h", "9" * 400 + "s", "36526d",
                                  "5300w", "100000000000000000000h"])
def test_durations_are_at_most_a_century(text):
    """Beyond that no date arithmetic is safe (timedelta and datetime overflow)."""
    with pytest.raises(InvalidInput, match=r"invalid duration .*: it must be at most 100 years"):
        analytics.parse_duration(text)
    assert analytics.parse_duration("36525d") == durations.MAX_SPAN


@pytest.mark.parametrize("text", ["100000000000000000000000h", "36526d ago", "-5300w",
                                  "0001-01-01", "1900-01-01T00:00:00+00:00", "9999-12-31",
                                  "9999-12-31T23:59:59-12:00"])
def test_times_are_within_a_century_of_now(text):
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(InvalidInput, match=r"invalid time .*: it must be within 100 years of now"):
        analytics.parse_time(text, now)
    assert analytics.parse_time("36525d", now) == now - durations.MAX_SPAN
    assert analytics.parse_time("2124-04-30", now).year == 2124


def test_parse_time():
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert analytics.parse_time("now", now) == now
    assert analytics.parse_time("2h", now) == now - timedelta(hours=2)
    assert analytics.parse_time("-30m", now) == now - timedelta(minutes=30)
    assert analytics.parse_time("7d ago", now) == now - timedelta(days=7)
    assert analytics.parse_time("2024-04-01T08:00:00+02:00", now) == datetime(
        2024, 4, 1, 6, 0, tzinfo=UTC)
    local = analytics.parse_time("2024-04-01", now)
    assert local.tzinfo is not None and local == datetime(2024, 4, 1).astimezone()
    with pytest.raises(InvalidInput, match="invalid time"):
        analytics.parse_time("yesterday-ish", now)


def test_default_bin_and_fold_groups():
    assert analytics.default_bin(10) == 1
    assert analytics.default_bin(3600) == 60
    assert analytics.default_bin(86400) == 1800
    assert analytics.default_bin(86400 * 365) == 7 * 86400
    assert analytics.default_bin(86400 * 365 * 10) / 86400 % 7 == 0
    folded = analytics.fold_groups({"a": [1, 1], "b": [5, 0], "c": [0, 1], "d": [2, 2]}, 3)
    assert folded == {"d": [2, 2], "b": [5, 0], "other": [1, 2]}
    assert analytics.fold_groups({"a": [1]}, 3) == {"a": [1]}
    texts = [analytics.duration_text(s) for s in (1, 90, 1800, 7200, 86400 * 2, 604800, 0.5)]
    assert texts == ["1s", "90s", "30min", "2h", "2d", "1w", "0.5s"]


def test_to_plain_is_json_ready(history, db):
    import json

    worked_example(history)
    plain = analytics.to_plain(analytics.summary(db, since=at(0), until=at(1500)))
    text = json.dumps(plain)
    assert plain["utilization"] == pytest.approx(2200 / 6000)
    assert plain["window"]["since"] == at(0).isoformat()
    assert plain["batch_jobs"][0]["utilization"] == pytest.approx(2100 / 4000)
    assert json.loads(text)["errors"]["FAILED"] == 1
