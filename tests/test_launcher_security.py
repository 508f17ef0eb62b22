"""A launcher under attack and under faults, with real users, real processes and a real server:
a forged kill notification, a fake ``mpirun`` on a task's PATH, symlinks a group member plants in
the work zone, working directories outside the project, a full disk, server errors that are not
a lost connection, absurd options, a server back on another port, and the lease's renewals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import make_conninfo

from balsam.contracts import InitOptions
from balsam.db import connect
from balsam.lifecycle import init_project
from balsam.migrate import plugin_packages, upgrade
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_cli.main import build_cli
from balsam_launcher import lease
from balsam_launcher.launcher import Launcher, Options
from balsam_pgserver import server
from balsam_testing import launchers as lt
from balsam_testing.pg import throwaway_cluster

pytestmark = pytest.mark.pg


def run_launcher(project, **options) -> Launcher:
    """Run a launcher in this process until it runs out of work."""
    settings = {"job_mode": "serial", "nodes": 2, "consume_all": True, "time_limit_minutes": 5,
                "poll_interval": 0.2, **options}
    launcher = Launcher(project, Options(**settings), get_plugin_manager())
    launcher.exit_code = launcher.run()
    return launcher


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def logs(project) -> str:
    return "".join(p.read_text() for p in project.log_dir.glob("launcher_*.log"))


# --- kill notifications are hints ------------------------------------------------------------


@pytest.fixture
def stranger(db_dsn):
    """A login role with no privilege at all (less than a viewer): anyone can NOTIFY."""
    name = f"mallory_{uuid.uuid4().hex[:8]}"
    with connect(db_dsn) as admin:
        admin.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(
            psycopg.sql.Identifier(name)))
    try:
        yield make_conninfo(db_dsn, user=name)
    finally:
        with connect(db_dsn) as admin:
            admin.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(name)))


def test_a_forged_kill_notification_stops_nothing(project, stranger, tmp_path):
    counts = tmp_path / "counts"
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        [tid] = lt.add_tasks(db, app, [{"name": "t", "args": f"2 {counts}"}])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "1",
                                 "--consume-all", output=tmp_path / "out")
        try:
            wait_for(lambda: lt.states(db)[tid]["state"] == "RUNNING", 30, "the task to run")
            event = next(e for e in lt.events(db) if e["to_state"] == "RUNNING")
            pid = int(event["message"].split()[1])
            with psycopg.connect(stranger, autocommit=True) as mallory:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    mallory.execute("UPDATE tasks SET state = 'USER_KILLED'")
                for payload in (str(tid), f"{tid},{tid}", f"{tid} 1 2 3"):
                    mallory.execute("SELECT pg_notify('balsam_kill', %s)", [payload])
            time.sleep(1.0)
            assert alive(pid) and lt.states(db)[tid]["state"] == "RUNNING"
            final = lt.wait_until_final(db, [tid], 60, [proc])
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        assert final[tid]["state"] == "JOB_FINISHED" and final[tid]["launcher_id"] is None
    assert lt.executions(counts) == Counter({tid: 1})
    assert "killed by a user" not in logs(project)


# --- programs come from the launcher's PATH --------------------------------------------------


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun")
def test_a_fake_mpirun_on_the_tasks_path_is_not_run(project, tmp_path):
    evil, planted = tmp_path / "evil", tmp_path / "planted-ran"
    evil.mkdir()
    for name in ("mpirun", "bash", "hello-evil"):
        (evil / name).write_text(f"#!/bin/sh\necho {name} >> {planted}\n")
        (evil / name).chmod(0o755)
    counts = tmp_path / "counts"
    env = tmp_path / "env.sh"
    env.write_text("export SOURCED=1\n")
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        wrapped = lt.add_app(db, "wrapped", f"/bin/sh {tmp_path / 'record.sh'}",
                             envscript=str(env))
        bare = lt.add_app(db, "bare", "hello-evil")
        path = {"PATH": f"{evil}:/usr/local/bin:/usr/bin:/bin"}
        [plain] = lt.add_tasks(db, app, [{"name": "p", "args": f"0 {counts}",
                                          "environ_vars": path}])
        [sourced] = lt.add_tasks(db, wrapped, [{"name": "s", "args": f"0 {counts}",
                                                "environ_vars": path}])
        [named] = lt.add_tasks(db, bare, [{"name": "n", "environ_vars": path}])
        run_launcher(project, job_mode="mpi", nodes=1)
        states = lt.states(db)
    assert not planted.exists()  # neither mpirun, nor bash, nor the app from the task's PATH
    assert states[plain]["state"] == states[sourced]["state"] == "JOB_FINISHED"
    assert states[named]["state"] == "FAILED"
    assert "cannot start: not found on the launcher's PATH: hello-evil" in \
        states[named]["state_message"]
    assert lt.executions(counts) == Counter({plain: 1, sourced: 1})


# --- working directories ---------------------------------------------------------------------


def test_working_directories_stay_inside_the_project_unless_allowed(project, tmp_path):
    outside = tmp_path / "scratch"
    outside.mkdir()
    with connect(project) as db:
        app = lt.add_app(db, "touch", "/bin/sh -c 'touch made-here'")
        workdirs = [str(outside / "a"), "../escaped", "balsamdb/x", "data/mine"]
        ids = lt.add_tasks(db, app, [{"name": n} for n in ("abs", "up", "zone", "ok")])
        for tid, workdir in zip(ids, workdirs, strict=True):
            db.execute("UPDATE tasks SET user_workdir = %s WHERE id = %s", [workdir, tid])
        run_launcher(project)
        states = lt.states(db)
        assert [states[i]["state"] for i in ids] == ["FAILED", "FAILED", "FAILED", "JOB_FINISHED"]
        assert "is outside the project (a launcher may allow it with --allow-workdir" in \
            states[ids[0]]["state_message"]
        assert "climbs out of the project" in states[ids[1]]["state_message"]
        assert "control zone" in states[ids[2]]["state_message"]
        assert not (outside / "a").exists() and not (project.root.parent / "escaped").exists()
        assert (project.root / "data" / "mine" / "made-here").exists()
        [allowed] = lt.add_tasks(db, app, [{"name": "abs2"}])
        db.execute("UPDATE tasks SET user_workdir = %s WHERE id = %s", [str(outside / "b"),
                                                                        allowed])
        run_launcher(project, allow_workdir=(str(outside),))
        assert lt.states(db)[allowed]["state"] == "JOB_FINISHED"
        events = [e["to_state"] for e in lt.events(db) if e["task_id"] == ids[0]]
    assert events == ["READY", "FAILED"]  # refused before anything ran
    assert (outside / "b" / "made-here").exists()


@pytest.mark.multiuser
def test_symlinks_a_member_plants_are_never_followed(shared_dir, run_as, db_dsn):
    """alice, a member of the project's group, plants symlinks into the launcher user's home
    where the launcher will create a task directory, an output file and its log."""
    root = shared_dir / "proj"
    project = init_project(root, InitOptions(dsn=db_dsn), get_plugin_manager())
    for zone in (project.data_dir, project.log_dir):
        os.chmod(zone, 0o3770)  # the work zone: the group writes, sticky
    victim = Path(os.path.expanduser("~")) / f"balsam-victim-{uuid.uuid4().hex[:8]}"
    victim.mkdir()
    try:
        with connect(project) as db:
            app = lt.add_app(db, "talk", "/bin/sh -c 'echo secret-overwritten'")
            [in_dir, in_out, fine] = lt.add_tasks(db, app, [
                {"name": "d", "workflow": "w1"}, {"name": "o"}, {"name": "f"}])
            run_as("alice", ["ln", "-s", str(victim), str(root / "data" / "w1")])
            task_dir = root / "data" / "_" / f"o_{in_out}"
            run_as("alice", ["mkdir", "-p", str(task_dir)])
            run_as("alice", ["ln", "-s", str(victim / "o.out"), str(task_dir / "o.out")])
            run_as("alice", ["ln", "-s", str(victim / "log"), str(root / "log" / "launcher_1.log")])
            launcher = run_launcher(project)
            states = lt.states(db)
        assert list(victim.iterdir()) == []  # nothing written through any of them
        assert states[in_dir]["state"] == states[in_out]["state"] == "FAILED"
        assert "cannot create its working directory: a symlink or not a directory (not " \
               "followed)" in states[in_dir]["state_message"]
        assert "cannot create its output file: a symlink or not a directory (not followed)" \
               in states[in_out]["state_message"]
        assert states[fine]["state"] == "JOB_FINISHED"
        assert launcher.log_path.name.startswith("launcher_1-")
        assert "launcher 1 started" in launcher.log_path.read_text()
        assert (root / "log" / "launcher_1.log").is_symlink()
    finally:
        shutil.rmtree(victim)


def test_scratch_look_alikes_a_member_plants_are_never_removed(shared_dir, run_as, project,
                                                              monkeypatch):
    """bob shares the launcher host's temporary directory (sticky and world-writable, as /tmp).
    He plants look-alikes of a dead launcher's scratch directory, with free locks: one of his own,
    and a symlink to a directory of the launcher user's that holds such a lock. A launcher that
    followed the symlink or trusted the name would delete that directory. The next launcher
    removes neither, and removes nothing of the launcher user's."""
    import tempfile

    base = shared_dir / "tmp"
    base.mkdir()
    os.chmod(base, 0o1777)
    victim = base / "victim-data"  # the launcher user's own, shaped as a dead scratch directory
    victim.mkdir()
    (victim / ".alive").touch()
    (victim / "results").write_text("precious")
    run_as("bob", ["mkdir", str(base / "balsam-launcher-bob")])
    run_as("bob", ["touch", str(base / "balsam-launcher-bob" / ".alive")])
    run_as("bob", ["ln", "-s", str(victim), str(base / "balsam-launcher-link")])
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    launcher = run_launcher(project)
    assert launcher.stale_scratch == 0
    assert (victim / "results").read_text() == "precious"
    assert sorted(p.name for p in base.iterdir()) == [
        "balsam-launcher-bob", "balsam-launcher-link", "victim-data"]


@pytest.fixture
def full_data_dir(project):
    """The project's data/ on a tmpfs whose inodes are all used (as root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    data = project.data_dir
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=64,mode=0770",
                             "tmpfs", str(data)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        for i in range(1000):
            try:
                (data / f"fill{i}").touch()
            except OSError:
                break
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_a_full_disk_fails_the_task_with_a_clear_message(project, full_data_dir):
    with connect(project) as db:
        app = lt.add_app(db, "true", "/bin/true")
        ids = lt.add_tasks(db, app, [{"name": f"t{i}"} for i in range(3)])
        launcher = run_launcher(project)
        states = lt.states(db)
    assert launcher.exit_code == 0 and launcher.stopping == "no work left"
    for tid in ids:
        assert states[tid]["state"] == "FAILED"
        assert states[tid]["state_message"].startswith(
            "cannot create its working directory: No space left on device: ")
    assert "Traceback" not in logs(project)


# --- faults of the database --------------------------------------------------------------------

DISK_FULL = """
CREATE SEQUENCE balsam_test_full;
CREATE FUNCTION balsam_test_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('balsam_test_full') <= 3 THEN
        RAISE EXCEPTION 'could not extend file: No space left on device'
            USING ERRCODE = 'disk_full';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER balsam_test_full AFTER UPDATE OF state ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION balsam_test_full();
"""


def test_server_errors_are_retried_with_backoff_and_said_in_one_line(project, tmp_path):
    counts = tmp_path / "counts"
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0 {counts}"} for i in range(6)])
        db.execute(DISK_FULL)
        launcher = run_launcher(project)
        states = lt.states(db)
    assert launcher.exit_code == 0
    assert {states[t]["state"] for t in ids} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    text = logs(project)
    assert text.count("database error (SQLSTATE 53100: could not extend file: No space left "
                      "on device): retrying in") == 3
    assert "connection lost" not in text and "Traceback" not in text


def test_absurd_options_are_refused_before_anything_is_registered(project):
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    for args, code, says in [
        (["--nodes", "1000000000"], 1, "Error: --nodes must be between 1 and 100,000, got "
                                       "1000000000"),
        (["--nodes", "1e9"], 2, "Error: Invalid value for '--nodes': '1e9' is not a valid"),
        (["--heartbeat-timeout", "inf"], 1, "Error: --heartbeat-timeout must be between"),
        (["--poll-interval", "nan"], 1, "Error: --poll-interval must be between"),
        (["--allow-workdir", "relative/dir"], 1, "needs an absolute directory"),
        (["--trust", "Robert'); DROP TABLE tasks; --"], 1, "Error: --trust: invalid user name"),
        (["--trust", "nobody_here"], 1, "Error: --trust nobody_here: no such user in this "
                                        "project's database"),
    ]:
        result = runner.invoke(cli, ["launcher", "--consume-all", *args])
        assert result.exit_code == code, (args, result.output)
        assert says in result.output.strip().splitlines()[-1], (args, result.output)
    with connect(project) as db:
        assert db.execute("SELECT count(*) AS n FROM launchers").fetchone()["n"] == 0


def test_a_server_back_on_another_port_is_found_through_server_info(tmp_path):
    counts = tmp_path / "counts"
    with throwaway_cluster(prefix="balsam-moved-", dbname="moved") as pg:
        with connect(pg.dsn("moved")) as conn:
            upgrade(conn, plugin_packages(get_plugin_manager()))
        project = init_project(tmp_path / "project", InitOptions(dsn=pg.dsn("moved")),
                               get_plugin_manager())
        with connect(project) as db:
            app = lt.record_app(db, tmp_path)
            ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0.1 {counts}"}
                                         for i in range(60)])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "2",
                                 "--consume-all", "--poll-interval", "0.5",
                                 output=tmp_path / "out")
        try:
            wait_for(lambda: counts.exists() and len(counts.read_text().split()) >= 10, 60,
                     "some progress")
            pg.stop()
            pg.port = server.free_port()
            pg.start()
            moved = Project.load(project.root)
            moved.info = replace(moved.info, dsn=pg.dsn("moved"))
            moved.save_info()
            assert proc.wait(timeout=120) == 0, (tmp_path / "out").read_text()
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        with connect(Project.load(project.root)) as db:
            states = lt.states(db)
        assert {states[t]["state"] for t in ids} == {"JOB_FINISHED"}
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    text = logs(project)
    assert "database connection lost" in text and "reconnected to the database" in text


def test_the_lease_is_renewed_after_each_committed_heartbeat(project, tmp_path):
    counts = tmp_path / "counts"
    read, write = os.pipe2(os.O_NONBLOCK)
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        lt.add_tasks(db, app, [{"name": "t", "args": f"1.2 {counts}"}])
    began = time.monotonic()
    lease.attach(write, timeout=1.0)
    try:
        run_launcher(project, heartbeat_timeout=1.0)
    finally:
        lease.attach(None)
    ended = time.monotonic()
    with contextlib.closing(os.fdopen(read, "rb")) as f:
        data = f.read() or b""
    os.close(write)
    # Each record is the lease's expiry: when the heartbeat was sent, plus the timeout, less
    # the fence's margin.
    ahead = 1.0 - lease.margin(1.0)
    sent = [t - ahead for (t,) in struct.iter_unpack(lease.RECORD.format, data)]
    assert len(sent) >= 4  # every 0.25 s for about 1.5 s
    assert sent == sorted(sent) and began <= sent[0] and sent[-1] <= ended


def test_sigterm_during_a_large_start_still_times_every_run_out(project, tmp_path):
    """Stop while starting: SIGTERM arrives while 200 tasks start; every one that started ends
    RUN_TIMEOUT (none stays RUNNING, none runs to the end)."""
    counts = tmp_path / "counts"
    with connect(project) as db:
        app = lt.record_app(db, tmp_path)
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"30 {counts}",
                                      "wall_time_minutes": 0} for i in range(200)])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "200",
                                 output=tmp_path / "out")
        try:
            wait_for(lambda: any(e["to_state"] == "RUNNING" for e in lt.events(db)), 60,
                     "the first start")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        states = lt.states(db)
        ran = {e["task_id"] for e in lt.events(db) if e["to_state"] == "RUNNING"}
    assert ran and all(states[t]["state"] == "RUN_TIMEOUT" for t in ran)
    assert all(states[t]["launcher_id"] is None for t in ids)
    assert not counts.exists()
