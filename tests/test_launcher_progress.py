"""A real launcher's progress: live on a terminal (a pseudo-terminal here), nothing on a pipe but
its log (the line a minute is balsam_launcher.progress's, tested without I/O)."""

from __future__ import annotations

import os
import pty
import subprocess

import pytest

from balsam.db import connect
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg


def _tasks(project) -> None:
    with connect(project) as db:
        ok, bad = lt.add_app(db, "ok", "/bin/true"), lt.add_app(db, "bad", "/bin/false")
        lt.add_tasks(db, ok, [{"name": f"ok{i}"} for i in range(3)])
        lt.add_tasks(db, bad, [{"name": "bad"}])


def test_a_terminal_sees_running_finished_failed_and_busy_nodes(project):
    _tasks(project)
    command = lt.launcher_command("--consume-all", "--nodes", "2", "--job-mode", "serial")
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(command, env={**os.environ, "BALSAM_DB_PATH": str(project.root)},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=secondary)
        os.close(secondary)
        seen = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the launcher closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(60) == 0
    finally:
        os.close(primary)
    text = seen.decode()
    drawn = [part.split("\x1b[K")[0] for part in text.split("\r") if "busy nodes" in part]
    assert drawn[-1] == "running 0, finished 3, failed 1, busy nodes 0/2", text
    assert all(line.startswith("running ") for line in drawn)


def test_without_a_terminal_no_progress_line_is_drawn(project, tmp_path):
    _tasks(project)
    proc = lt.start_launcher(project.root, "--consume-all", "--job-mode", "serial",
                             output=tmp_path / "out")
    assert proc.wait(60) == 0
    assert "busy nodes" not in (tmp_path / "out").read_text()
