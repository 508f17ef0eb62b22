"""Projects on the embedded cluster: init, activate, which, server start/stop, crash recovery.

Run as real users (PostgreSQL refuses root): alice owns the project, bob is a collaborator.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_cli.main import build_cli

pytestmark = [pytest.mark.pg, pytest.mark.multiuser]

ACTIVATE = '. balsamactivate "$P" && balsam which'


def _init(run_as, shared_dir, name="proj"):
    run_as("alice", ["balsam", "init", name], cwd=shared_dir)
    return shared_dir / name


def test_init_layout_and_modes(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    for sub in ("balsamdb", "data", "log", "qsubmit", "server-info"):
        assert (root / sub).exists(), sub
    assert stat.S_IMODE((root / "balsamdb").stat().st_mode) == 0o700
    assert (root / "balsamdb" / "PG_VERSION").exists()
    info_text = (root / "server-info").read_text()
    assert str(root) not in info_text and str(shared_dir) not in info_text
    info = json.loads(info_text)
    assert info["owner"] == "alice" and info["dsn"] is None
    hba = (root / "balsamdb" / "pg_hba.conf").read_text()
    words = [w for ln in hba.splitlines() if not ln.startswith("#") for w in ln.split()]
    assert "trust" not in words
    assert not (root / "balsamdb" / "postmaster.pid").exists()  # init leaves the server stopped


def test_init_refuses_non_empty_dir(run_as, shared_dir):
    (shared_dir / "busy").mkdir()
    (shared_dir / "busy" / "keep.txt").write_text("mine")
    proc = run_as("alice", ["balsam", "init", "busy"], cwd=shared_dir, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("Error:") and "not empty" in proc.stderr
    assert sorted(p.name for p in (shared_dir / "busy").iterdir()) == ["keep.txt"]


def test_init_as_root_says_postgres_cannot_run_as_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["init", str(tmp_path / "p")])
    assert result.exit_code == 1
    assert "PostgreSQL cannot run as root" in result.output
    assert not (tmp_path / "p").exists()


def test_activate_starts_server_and_exports_environment(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    script = (f'PS1="$ "; {ACTIVATE} && echo "DB=$BALSAM_DB_PATH" && echo "PS1=$PS1" && umask && '
              '. balsamdeactivate && echo "after=${BALSAM_DB_PATH:-unset}" && umask')
    proc = run_as("alice", ["bash", "-c", script], env={"P": str(root)},
                  cwd=shared_dir)
    out = proc.stdout
    assert f"DB={root}" in out
    assert "PS1=[proj] $ " in out
    assert "state    running" in out and "owner    alice" in out
    umasks = [ln for ln in out.splitlines() if ln.strip().isdigit()]
    assert umasks[0] == "0007"
    assert "after=unset" in out


def test_activate_by_unique_substring(run_as, shared_dir):
    root = _init(run_as, shared_dir, "substring-target-xyz")
    run_as("alice", ["bash", "-c", '. balsamactivate "$P"'], env={"P": str(root)})
    proc = run_as("alice", ["bash", "-c", '. balsamactivate target-xyz && echo "$BALSAM_DB_PATH"'])
    assert proc.stdout.strip().splitlines()[-1] == str(root)
    missing = run_as("alice", ["bash", "-c", ". balsamactivate no-such-project-abc"], check=False)
    assert missing.returncode != 0 and "no Balsam project" in missing.stderr


def test_second_activation_reuses_running_server(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    run_as("alice", ["bash", "-c", '. balsamactivate "$P"'], env={"P": str(root)})
    pid = (root / "balsamdb" / "postmaster.pid").read_text().split()[0]
    run_as("alice", ["bash", "-c", '. balsamactivate "$P"'], env={"P": str(root)})
    assert (root / "balsamdb" / "postmaster.pid").read_text().split()[0] == pid


def test_killed_server_is_restarted_by_owner_activation(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    run_as("alice", ["bash", "-c", '. balsamactivate "$P"'], env={"P": str(root)})
    pid = int((root / "balsamdb" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (root / "balsamdb" / "postmaster.pid").exists()  # stale
    proc = run_as("alice", ["bash", "-c", ACTIVATE], env={"P": str(root)})
    assert "state    running" in proc.stdout
    new_pid = int((root / "balsamdb" / "postmaster.pid").read_text().split()[0])
    assert new_pid != pid


def test_server_down_tells_collaborator_the_owner(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    proc = run_as("bob", ["bash", "-c", '. balsamactivate "$P"'], env={"P": str(root)},
                  check=False)
    assert proc.returncode != 0
    assert "not running" in proc.stderr and "alice" in proc.stderr


def test_only_owner_starts_and_stops(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    env = {"BALSAM_DB_PATH": str(root)}
    start = run_as("bob", ["balsam", "server", "start"], env=env, check=False)
    assert start.returncode == 1 and "only the project owner (alice)" in start.stderr
    run_as("alice", ["balsam", "server", "start"], env=env)
    stop = run_as("bob", ["balsam", "server", "stop"], env=env, check=False)
    assert stop.returncode == 1 and "only the project owner (alice)" in stop.stderr
    assert "running" in run_as("alice", ["balsam", "server", "status"], env=env).stdout
    run_as("alice", ["balsam", "server", "stop"], env=env)
    assert "stopped" in run_as("alice", ["balsam", "server", "status"], env=env).stdout


def test_which_without_project_is_a_clear_error(run_as, shared_dir):
    proc = run_as("alice", ["balsam", "which"], cwd=shared_dir, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("Error: no active project: run 'source balsamactivate "
                                    "PROJECT' or set BALSAM_DB_PATH")


def test_unauthorised_user_with_project_path_is_told_whom_to_ask(run_as, shared_dir):
    root = _init(run_as, shared_dir)
    run_as("alice", ["balsam", "server", "start"], env={"BALSAM_DB_PATH": str(root)})
    proc = run_as("carol", ["balsam", "server", "connections"], env={"BALSAM_DB_PATH": str(root)},
                  check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f"Error: you (carol) are not authorised on the project {root}; "
                                   "ask its owner (alice) to run: balsam server --add-user carol")


def test_a_project_path_with_shell_syntax_runs_nothing(run_as, shared_dir):
    """No shell ever sees the project's path: init, start (the postmaster is started directly,
    not through pg_ctl's shell), a batch job script, stop."""
    name = "we $(touch PWNED) `touch PWNED2` \"q\" 'x'"
    root = _init(run_as, shared_dir, name)
    script = ('. balsamactivate "$P" && balsam submit-launch -t 5 -n 1 --dry-run >/dev/null && '
              'balsam which && balsam server stop')
    out = run_as("alice", ["bash", "-c", script], env={"P": str(root)}, cwd=shared_dir).stdout
    assert f"project  {root}" in out and "state    running" in out
    assert Project.load(root).info.port
    planted = [p for where in (shared_dir, Path("/home/alice"), root / "balsamdb")
               for p in where.rglob("PWNED*")]
    assert planted == []
    assert not (root / "balsamdb" / "postmaster.pid").exists()
