"""A task's whole life in a launcher: stage-in, preprocess once, the run (envscript, environment,
working directory, output file), postprocess, error and timeout handling, retries, MPI mode,
the umask and the log; plus ``balsam log`` and the launcher's command-line checks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_launcher import steps
from balsam_launcher.launcher import Launcher, Options
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg

BALSAM = str(Path(sys.executable).parent / "balsam")


def run_launcher(project, **options) -> Launcher:
    """Run a launcher in this process until it runs out of work (five minutes at most)."""
    settings = {"job_mode": "serial", "nodes": 4, "consume_all": True, "time_limit_minutes": 5,
                "poll_interval": 0.2, **options}
    launcher = Launcher(project, Options(**settings), get_plugin_manager())
    launcher.exit_code = launcher.run()
    return launcher


def history(db, tid) -> list[str]:
    return [e["to_state"] for e in lt.events(db) if e["task_id"] == tid]


def script(path: Path, text: str) -> str:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return str(path)


def workdir(project, db, tid) -> Path:
    row = db.execute("SELECT id, name, workflow, user_workdir FROM tasks WHERE id = %s",
                     [tid]).fetchone()
    return project.root / "data" / (row["workflow"] or "_") / f"{row['name']}_{tid}"


PRODUCE = """echo "data from $BALSAM_TASK_ID" > result.dat
echo produced
"""
CONSUME = """echo "task=$BALSAM_TASK_ID db=$BALSAM_DB_PATH parents=$BALSAM_PARENT_IDS"
echo "greeting=$GREETING envscript=$FROM_ENVSCRIPT args=$*"
cat result.dat
"""


def test_full_life_with_stage_in_scripts_envscript_and_environment(project, tmp_path):
    with connect(project) as db:
        produce = script(tmp_path / "produce.sh", PRODUCE)
        producer = lt.add_app(db, "producer", f"/bin/sh {produce}")
        pre = script(tmp_path / "pre.sh", 'echo "pre $BALSAM_TASK_ID" >> pre.txt\n')
        post = script(tmp_path / "post.sh", 'echo "post $BALSAM_TASK_ID" > post.txt\n')
        env = tmp_path / "env.sh"
        env.write_text("export FROM_ENVSCRIPT='sourced it'\n")
        consume = script(tmp_path / "consume.sh", CONSUME)
        consumer = lt.add_app(db, "consumer", f"/bin/sh {consume}", preprocess=pre,
                              postprocess=post, envscript=str(env))
        [parent] = lt.add_tasks(db, producer, [{"name": "parent", "workflow": "wf"}])
        [child] = lt.add_tasks(db, consumer, [{
            "name": "child", "workflow": "wf", "args": "one 'two three'",
            "input_files": "*.dat", "state": "AWAITING_PARENTS",
            "environ_vars": {"GREETING": "hi there"}}])
        lt.add_edges(db, [(parent, child)])
        launcher = run_launcher(project)
        assert launcher.exit_code == 0 and launcher.stopping == "no work left"
        assert history(db, child) == ["AWAITING_PARENTS", "READY", "STAGED_IN", "PREPROCESSED",
                                      "RUNNING", "RUN_DONE", "POSTPROCESSED", "JOB_FINISHED"]
        events = [e for e in lt.events(db) if e["task_id"] == child][2:]
        assert {e["launcher_id"] for e in events} == {launcher.id}
        assert all(r["launcher_id"] is None for r in lt.states(db).values())
        cwd = workdir(project, db, child)
        linked = cwd / "result.dat"
        assert linked.is_symlink() and linked.resolve() == workdir(project, db, parent) / \
            "result.dat"
        out = (cwd / "child.out").read_text().splitlines()
        assert out[0] == f"task={child} db={project.root} parents=[{parent}]"
        assert out[1] == "greeting=hi there envscript=sourced it args=one two three"
        assert out[2] == f"data from {parent}"
        assert (cwd / "pre.txt").read_text() == f"pre {child}\n"
        assert (cwd / "post.txt").read_text() == f"post {child}\n"
        assert "preprocess" in (cwd / "preprocess.log").read_text()
        # the project's umask (0007): what the launcher and its tasks create is group-writable
        assert stat.S_IMODE((cwd / "child.out").stat().st_mode) == 0o660
        assert stat.S_IMODE(cwd.stat().st_mode) & 0o777 == 0o770
        log = (project.log_dir / f"launcher_{launcher.id}.log").read_text()
        assert f"launcher {launcher.id} started: serial mode, 4 node(s)" in log
        assert "no work left" in log


def test_run_error_fails_or_is_retried(project, tmp_path):
    with connect(project) as db:
        app = lt.add_app(db, "fail", f"/bin/sh {script(tmp_path / 'f.sh', 'echo oops; exit 3')}")
        [once] = lt.add_tasks(db, app, [{"name": "once"}])
        run_launcher(project)
        row = lt.states(db)[once]
        assert history(db, once)[-3:] == ["RUNNING", "RUN_ERROR", "FAILED"]
        error = next(e for e in lt.events(db) if e["task_id"] == once
                     and e["to_state"] == "RUN_ERROR")
        assert error["message"] == "exit 3: oops"
        assert row["state_message"] == "exit 3: oops; no error handler, no retries left"
        assert row["attempts"] == 1
        [retried] = lt.add_tasks(db, app, [{"name": "retried"}])
        run_launcher(project, max_retries=2)
        assert history(db, retried).count("RUN_ERROR") == 3
        assert lt.states(db)[retried]["attempts"] == 3
        assert lt.states(db)[retried]["state"] == "FAILED"
        missing = lt.add_app(db, "missing", "/no/such/program")
        [broken] = lt.add_tasks(db, missing, [{"name": "broken"}])
        run_launcher(project)
        assert "cannot start: No such file or directory" in next(
            e["message"] for e in lt.events(db) if e["task_id"] == broken
            and e["to_state"] == "RUN_ERROR")
        assert lt.states(db)[broken]["state"] == "FAILED"


#: A post-processing command that sets the task's state through balsam.api, with the handler
#: flags (BALSAM_TASK_ERROR / BALSAM_TASK_TIMEOUT) as the message.
SET_STATE = ('{py} -c "import os, sys; from balsam import api; e = os.environ.get; '
             "api.set_state([int(e('BALSAM_TASK_ID'))], sys.argv[1], "
             "message=e('BALSAM_TASK_ERROR', '') + e('BALSAM_TASK_TIMEOUT', ''))\" {state}")


def test_error_handler_decides(project, tmp_path):
    py = Path(sys.executable)
    fail = f"/bin/sh {script(tmp_path / 'f.sh', 'exit 1')}"
    with connect(project) as db:
        handled = lt.add_app(db, "handled", fail,
                             postprocess=SET_STATE.format(py=py, state="POSTPROCESSED"))
        idle = lt.add_app(db, "idle", fail, postprocess="/bin/true")
        crashing = lt.add_app(db, "crashing", fail, postprocess="/bin/false")
        ids = [lt.add_tasks(db, a, [{"name": n, "post_error_handler": True}])[0]
               for a, n in ((handled, "h"), (idle, "i"), (crashing, "c"))]
        run_launcher(project)
        states = lt.states(db)
        assert history(db, ids[0])[-3:] == ["RUN_ERROR", "POSTPROCESSED", "JOB_FINISHED"]
        assert next(e["message"] for e in lt.events(db) if e["task_id"] == ids[0]
                    and e["to_state"] == "POSTPROCESSED") == "1"  # BALSAM_TASK_ERROR=1
        assert states[ids[1]]["state"] == "FAILED"
        assert "left the task in RUN_ERROR" in states[ids[1]]["state_message"]
        assert states[ids[2]]["state"] == "FAILED"
        assert "error handler exited with 1" in states[ids[2]]["state_message"]


def test_timeouts_restart_without_preprocessing_again(project, tmp_path):
    once = script(tmp_path / "slow_once.sh", 'if [ -e marker ]; then echo second; exit 0; fi\n'
                                             'touch marker; sleep 60\n')
    pre = script(tmp_path / "pre.sh", "echo pre >> pre.txt\n")
    with connect(project) as db:
        app = lt.add_app(db, "slow", f"/bin/sh {once}", preprocess=pre)
        [tid] = lt.add_tasks(db, app, [{"name": "slow", "wall_time_minutes": 0}])
        first = run_launcher(project, time_limit_minutes=0.05, kill_grace=1)
        assert first.stopping == "time limit reached" and first.exit_code == 0
        assert history(db, tid)[-2:] == ["RUNNING", "RUN_TIMEOUT"]
        assert lt.states(db)[tid]["launcher_id"] is None
        run_launcher(project)
        assert history(db, tid)[-6:] == ["RUN_TIMEOUT", "RESTART_READY", "RUNNING", "RUN_DONE",
                                         "POSTPROCESSED", "JOB_FINISHED"]
        stops = [r["s"] for r in db.execute(
            "SELECT date_part('epoch', stops_at - started_at) AS s FROM launchers ORDER BY id")]
        assert 0 < stops[0] <= 3 and 297 < stops[1] <= 300  # when each stops (3 s, 5 min)
        cwd = workdir(project, db, tid)
        assert (cwd / "pre.txt").read_text() == "pre\n"  # preprocessed once
        assert (cwd / "slow.out").read_text().strip().endswith("second")


def test_timeout_handler_and_no_retry(project, tmp_path):
    py = Path(sys.executable)
    sleep = f"/bin/sh {script(tmp_path / 's.sh', 'sleep 60')}"
    with connect(project) as db:
        handled = lt.add_app(db, "handled", sleep,
                             postprocess=SET_STATE.format(py=py, state="FAILED"))
        [h] = lt.add_tasks(db, handled, [{"name": "h", "post_timeout_handler": True,
                                          "wall_time_minutes": 0}])
        plain = lt.add_app(db, "plain", sleep)
        [n] = lt.add_tasks(db, plain, [{"name": "n", "auto_timeout_retry": False,
                                        "wall_time_minutes": 0}])
        run_launcher(project, time_limit_minutes=0.04, kill_grace=1)
        assert {lt.states(db)[t]["state"] for t in (h, n)} == {"RUN_TIMEOUT"}
        run_launcher(project)  # the next launcher handles the timeouts it finds
        states = lt.states(db)
        assert states[h]["state"] == "FAILED" and states[h]["state_message"] == "1"
        assert states[n]["state"] == "FAILED"
        assert "without automatic retry" in states[n]["state_message"]


def test_mpi_mode_starts_ranks_through_mpirun(project, tmp_path):
    show = script(tmp_path / "rank.sh", 'echo "rank ${OMPI_COMM_WORLD_RANK:-?} of '
                                        '${OMPI_COMM_WORLD_SIZE:-?} task $BALSAM_TASK_ID"\n')
    with connect(project) as db:
        app = lt.add_app(db, "ranks", f"/bin/sh {show}")
        [tid] = lt.add_tasks(db, app, [{"name": "mpi", "num_nodes": 2, "ranks_per_node": 2}])
        [too_big] = lt.add_tasks(db, app, [{"name": "big", "num_nodes": 3}])
        launcher = run_launcher(project, job_mode="mpi", nodes=2)
        assert lt.states(db)[tid]["state"] == "JOB_FINISHED"
        assert lt.states(db)[too_big]["state"] == "READY"  # never fits 2 nodes: left alone
        out = (workdir(project, db, tid) / "mpi.out").read_text().splitlines()
        assert sorted(out) == [f"rank {r} of 4 task {tid}" for r in range(4)]
        running = next(e for e in lt.events(db) if e["task_id"] == tid
                       and e["to_state"] == "RUNNING")
        assert running["launcher_id"] == launcher.id and "pid" in running["message"]


def test_concurrent_mpiruns_get_private_session_dirs(project, tmp_path):
    """Open MPI 4 fails a share of simultaneous first mpiruns of one user (``mkdir
    /tmp/ompi.<host>.<uid>: File exists``); each task gets its own session directory."""
    import shutil

    shutil.rmtree(f"/tmp/ompi.{os.uname().nodename}.{os.geteuid()}", ignore_errors=True)
    with connect(project) as db:
        app = lt.add_app(db, "quick", "/bin/true")
        tids = lt.add_tasks(db, app, [{"name": f"m{i}"} for i in range(16)])
        launcher = run_launcher(project, job_mode="mpi", nodes=8)
        states = lt.states(db)
        assert {states[t]["state"] for t in tids} == {"JOB_FINISHED"}
    assert not launcher.scratch.exists()  # removed at exit


def test_a_killed_launchers_scratch_is_removed_by_the_next(project, tmp_path, monkeypatch):
    """A launcher killed cannot remove its scratch directory: the next one of its user on that
    host does, and leaves a live launcher's alone."""
    import signal
    import tempfile

    from balsam_launcher import scratch

    base = tmp_path / "tmp"
    base.mkdir()
    killed = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                               env={"TMPDIR": str(base)})
    try:
        deadline = time.monotonic() + 30
        while not list(base.glob("balsam-launcher-*/.alive")):
            assert time.monotonic() < deadline and killed.poll() is None
            time.sleep(0.05)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    [dead] = base.glob("balsam-launcher-*")
    live, lock = scratch.make(str(base))  # a live launcher's (this process holds its lock)
    try:
        while not _lock_free(dead / ".alive"):  # its fence ends the launcher with P
            assert time.monotonic() < deadline
            time.sleep(0.05)
        monkeypatch.setattr(tempfile, "tempdir", str(base))
        launcher = run_launcher(project)
        assert launcher.stale_scratch == 1
        assert not dead.exists() and not launcher.scratch.exists()
        assert list(base.iterdir()) == [live]
    finally:
        os.close(lock)


def _lock_free(path: Path) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_output_tail_and_log_command(project, tmp_path):
    with connect(project) as db:
        app = lt.add_app(db, "talk", f"/bin/sh {script(tmp_path / 't.sh', 'seq 1 5')}")
        [tid] = lt.add_tasks(db, app, [{"name": "talk"}])
        launcher = run_launcher(project)
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    result = runner.invoke(cli, ["log", str(tid), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert result.output == "4\n5\n"
    result = runner.invoke(cli, ["log", str(tid), "--follow", "-n", "1"])  # final: returns
    assert (result.exit_code, result.output) == (0, "5\n")
    result = runner.invoke(cli, ["log"])
    assert f"launcher {launcher.id} started" in result.output
    result = runner.invoke(cli, ["log", "--follow", "-n", "1"])  # it has ended: returns
    assert result.exit_code == 0 and result.output.count("\n") == 1, result.output
    result = runner.invoke(cli, ["log", "--list"])
    assert result.output.startswith(f"{launcher.id}\t")
    result = runner.invoke(cli, ["log", "--launcher", "999"])
    assert result.exit_code == 1 and "Error: no log for launcher 999" in result.output
    result = runner.invoke(cli, ["log", "424242"])
    assert result.exit_code == 1 and "Error:" in result.output


def test_launcher_command_line_checks(project):
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    result = runner.invoke(cli, ["launcher", "--nodes", "0"])
    assert result.exit_code == 2 and "--nodes" in result.output
    result = runner.invoke(cli, ["launcher", "--job-mode", "threads"])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["launcher", "--wf-substring"])
    assert result.exit_code == 2 and "--wf-substring needs --wf-filter" in result.output
    result = runner.invoke(cli, ["launcher", "--batch-job-id", "77", "--consume-all"])
    assert result.exit_code == 1 and "Error: no batch job 77 in this project" in result.output


def test_batch_job_id_is_recorded(project, monkeypatch):
    with connect(project) as db:
        job = db.execute("INSERT INTO batch_jobs (scheduler, num_nodes, wall_time_minutes) "
                         "VALUES ('local', 1, 5) RETURNING id").fetchone()["id"]
        monkeypatch.setenv("BALSAM_BATCH_JOB_ID", str(job))
        result = CliRunner().invoke(build_cli(get_plugin_manager()),
                                    ["launcher", "--consume-all", "--nodes", "2"])
        assert result.exit_code == 0, result.output
        row = db.execute("SELECT * FROM launchers").fetchone()
        assert row["batch_job_id"] == job and row["num_nodes"] == 2
        assert row["ended_at"] is not None and row["end_reason"] == "no work left"


def test_output_path_is_safe():
    from balsam.models import Task
    assert steps.output_path(Path("/w"), Task(id=3, name="")).name == "task3.out"
    assert steps.output_path(Path("/w"), Task(id=3, name="a/b")).name == "a_b.out"


def test_following_a_launchers_log_ends_with_the_launcher(project, tmp_path):
    live = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                             output=tmp_path / "launcher")
    try:
        deadline = time.monotonic() + 30
        while not list((project.root / "log").glob("launcher_*.log")):
            assert time.monotonic() < deadline and live.poll() is None
            time.sleep(0.05)
        follower = subprocess.Popen([BALSAM, "log", "--follow"], stdout=subprocess.PIPE,
                                    text=True, env={**os.environ, "BALSAM_DB_PATH": str(
                                        project.root)})
        assert follower.stdout is not None
        assert "started" in follower.stdout.readline()  # following, while the launcher runs
        assert follower.poll() is None
        live.terminate()
        assert live.wait(timeout=30) == 0
        follower.stdout.read()
        assert follower.wait(timeout=10) == 0
    finally:
        for proc in (live, locals().get("follower")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()
