"""Copying or moving a project: with the server stopped, ``cp -a`` or ``mv`` keeps everything
working at the new path (server, tasks, working directories, collaborators, permissions, both
zones). A copy keeps the port too: running both at once, the second start says how to move it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from balsam.project import Project
from balsam_pgserver.server import free_port

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

ACTIVATE = '. balsamactivate "$P" >/dev/null'
COUNT = ("from balsam.db import connect; from balsam.project import Project; "
         "print(connect(Project.from_env()).execute("
         "'SELECT count(*) AS n, string_agg(owner, \\',\\') AS who FROM tasks').fetchone())")


def sh(run_as, user: str, root: Path, script: str, check: bool = True, **env: str):
    return run_as(user, ["bash", "-c", script], cwd=root.parent, env={"P": str(root), **env},
                  check=check)


def tasks_seen(run_as, user: str, root: Path, **env: str) -> str:
    proc = sh(run_as, user, root, f'{ACTIVATE} && python -c "$CODE"', CODE=COUNT, **env)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture
def populated(run_as, shared_dir) -> Path:
    """alice's project with bob added, a task of bob's and a file in its working directory."""
    run_as("alice", ["balsam", "init", "my-balsam-project"], cwd=shared_dir)
    root = shared_dir / "my-balsam-project"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    add = ("from balsam.db import connect; from balsam.project import Project; "
           "c = connect(Project.from_env()); "
           "c.execute(\"INSERT INTO apps (name, executable) VALUES ('hello', '/bin/echo')\"); "
           "c.execute(\"INSERT INTO tasks (name, app_id, user_workdir) "
           "SELECT 't1', id, 'data/wf/t1' FROM apps\")")
    sh(run_as, "bob", root, f'{ACTIVATE} && python -c "$CODE" && mkdir -p "$P/data/wf/t1" '
                            '&& echo result > "$P/data/wf/t1/out.txt"', CODE=add)
    return root


def stop(run_as, root: Path) -> None:
    run_as("alice", ["balsam", "server", "stop"], env={"BALSAM_DB_PATH": str(root)})


def test_cp_a_then_mv_keep_working(run_as, populated):
    root = populated
    stop(run_as, root)
    copy = root.parent / "copied"
    sh(run_as, "alice", root, 'cp -a "$P" "$C"', C=str(copy))
    assert str(root) not in (copy / "server-info").read_text()
    assert tasks_seen(run_as, "alice", copy) == "{'n': 1, 'who': 'bob'}"
    # bob's role and password came along (same project uuid), over the socket and over TCP.
    assert tasks_seen(run_as, "bob", copy) == "{'n': 1, 'who': 'bob'}"
    tcp = {"BALSAM_DB_TRANSPORT": "tcp", "BALSAM_DB_HOST": "127.0.0.1"}
    assert tasks_seen(run_as, "bob", copy, **tcp) == "{'n': 1, 'who': 'bob'}"
    assert (copy / "data/wf/t1/out.txt").read_text() == "result\n"
    sh(run_as, "alice", copy, 'echo more >> "$P/data/wf/t1/out.txt"')  # group-writable
    check = run_as("bob", ["balsam", "perms", "check"], env={"BALSAM_DB_PATH": str(copy)})
    assert "shared with group balsamtest" in check.stdout
    # The original is untouched. It keeps its port, which the running copy holds: its start
    # says so, and moves to another port when told.
    port = Project.load(root).info.port
    taken = sh(run_as, "alice", root, ACTIVATE, check=False)
    assert taken.returncode == 1
    assert taken.stderr.strip() == (f"Error: port {port} on {Project.load(root).info.host} is "
                                    f"taken by another program; the server keeps its port so "
                                    f"that clients find it: pick another with balsam server "
                                    f"start --port N")
    other = free_port()
    run_as("alice", ["balsam", "server", "start", "--port", str(other)],
           env={"BALSAM_DB_PATH": str(root)})
    assert Project.load(root).info.port == other
    assert tasks_seen(run_as, "alice", root) == "{'n': 1, 'who': 'bob'}"
    assert tasks_seen(run_as, "bob", root, **tcp) == "{'n': 1, 'who': 'bob'}"
    stop(run_as, copy)
    moved = root.parent / "moved" / "here"
    moved.parent.mkdir()
    os.chown(moved.parent, pwd.getpwnam("alice").pw_uid, -1)
    sh(run_as, "alice", copy, 'mv "$P" "$M"', M=str(moved))
    assert tasks_seen(run_as, "alice", moved) == "{'n': 1, 'who': 'bob'}"
    assert tasks_seen(run_as, "bob", moved) == "{'n': 1, 'who': 'bob'}"
    assert run_as("alice", ["balsam", "perms", "check"],
                  env={"BALSAM_DB_PATH": str(moved)}).returncode == 0


def test_cp_without_a_is_named_by_perms_check_and_fixed(run_as, populated):
    root = populated
    stop(run_as, root)
    private = Path(tempfile.mkdtemp(prefix="balsam-alice-"))
    alice = pwd.getpwnam("alice")
    os.chown(private, alice.pw_uid, alice.pw_gid)
    copy = private / "plain-copy"
    env = {"BALSAM_DB_PATH": str(copy)}
    try:
        sh(run_as, "alice", root, 'umask 022 && cp -r "$P" "$C"', C=str(copy))
        check = run_as("alice", ["balsam", "perms", "check"], env=env, check=False)
        assert check.returncode == 1
        lines = check.stdout.splitlines()
        assert ".: mode 0750, needs 2750 (group rx, setgid); group alice, not balsamtest " \
               "(owner alice)" in lines
        assert "data: mode 1750, needs 3770 (group rwx, setgid, sticky); group alice, not " \
               "balsamtest (owner alice)" in lines
        assert "data/wf/t1/out.txt: mode 0640, needs 0660 (group rw); group alice, not " \
               "balsamtest (owner alice)" in lines
        assert not any(ln.startswith("balsamdb") for ln in lines), "cp kept balsamdb 0700"
        fix = run_as("alice", ["balsam", "perms", "fix"], env=env)
        assert "fixed data/wf/t1/out.txt" in fix.stdout
        assert run_as("alice", ["balsam", "perms", "check"], env=env).returncode == 0
        assert tasks_seen(run_as, "alice", copy) == "{'n': 1, 'who': 'bob'}"
    finally:
        run_as("alice", ["balsam", "server", "stop"], env=env, check=False)
        shutil.rmtree(private)


def test_copy_of_a_running_project_starts_its_own_server(run_as, populated):
    root = populated
    copy = root.parent / "hot-copy"
    # Copied while running (after a checkpoint, or the copy may miss the last commits): the
    # copy holds the original's postmaster.pid and socket.
    checkpoint = ("from balsam.db import connect; from balsam.project import Project; "
                  "connect(Project.from_env(), admin=True).execute('CHECKPOINT')")
    sh(run_as, "alice", root, f'{ACTIVATE} && python -c "$CODE" && cp -a "$P" "$C"',
       CODE=checkpoint, C=str(copy))
    assert (copy / "balsamdb/postmaster.pid").exists()
    proc = sh(run_as, "alice", copy, ACTIVATE, check=False)
    assert "was copied while its server was running" in proc.stderr
    assert proc.returncode == 1 and "balsam server start --port N" in proc.stderr
    run_as("alice", ["balsam", "server", "start", "--port", str(free_port())],
           env={"BALSAM_DB_PATH": str(copy)})
    assert tasks_seen(run_as, "alice", copy) == "{'n': 1, 'who': 'bob'}"
    original, copied = Project.load(root), Project.load(copy)
    assert original.info.port != copied.info.port
    # Stopping the copy never signals the original's server.
    stop(run_as, copy)
    status = run_as("alice", ["balsam", "server", "status"], env={"BALSAM_DB_PATH": str(root)})
    assert "state    running" in status.stdout
    assert tasks_seen(run_as, "bob", root) == "{'n': 1, 'who': 'bob'}"


def test_move_to_a_path_too_long_for_the_socket_is_refused_clearly(run_as, populated):
    root = populated
    stop(run_as, root)
    deep = root.parent / ("d" * 60) / ("e" * 30)
    sh(run_as, "alice", root, 'mkdir -p "$D" && mv "$P" "$D/"', D=str(deep))
    moved = deep / root.name
    proc = sh(run_as, "alice", moved, ACTIVATE, check=False)
    assert proc.returncode == 1
    assert f"Error: project path {moved} is too long for a unix socket inside it" in proc.stderr
    info = json.loads((moved / "server-info").read_text())
    assert info["owner"] == "alice"
    sh(run_as, "alice", moved, 'mv "$P" "$B"', B=str(root))
    assert tasks_seen(run_as, "alice", root) == "{'n': 1, 'who': 'bob'}"
