"""Serial mode across nodes: one agent per node started by a single mpirun, running the tasks
the launcher sends (forced onto this host with BALSAM_LAUNCHER_AGENTS=always)."""

from __future__ import annotations

import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from balsam.db import connect
from balsam_launcher.agent import Lines, rank_from_env
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mpirun") is None, reason="needs mpirun")]

#: Prints its parent's command line, then records itself. (Behind the launcher's fence $PPID is
#: the PID namespace's number, /proc the host's: /proc/self/stat names the parent as /proc does.)
WHO = """#!/bin/sh
seconds=$1 counts=$2
read -r stat < /proc/self/stat
set -- ${stat##*) }
tr '\\0' ' ' < /proc/$2/cmdline; echo
sleep "$seconds"
echo "$BALSAM_TASK_ID" >> "$counts"
"""


def test_rank_and_message_framing():
    assert rank_from_env({"PMI_RANK": "3"}) == 3
    assert rank_from_env({"OMPI_COMM_WORLD_RANK": "1", "PMI_RANK": "3"}) == 1
    assert rank_from_env({}) == 0
    lines = Lines()
    assert lines.feed(b'{"op": "exit", "id": 1') == []
    assert lines.feed(b', "rc": 0}\n{"op"') == [{"op": "exit", "id": 1, "rc": 0}]


def test_agents_run_serial_tasks_on_their_nodes(project, tmp_path):
    counts = tmp_path / "counts"
    (tmp_path / "who.sh").write_text(WHO)
    with connect(project) as db:
        app = lt.add_app(db, "who", f"/bin/sh {tmp_path / 'who.sh'}")
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"0.05 {counts}",
                                      "node_packing_count": 2} for i in range(40)])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "3",
                                 "--consume-all", env={"BALSAM_LAUNCHER_AGENTS": "always"},
                                 output=tmp_path / "out")
        try:
            final = lt.wait_until_final(db, ids, 120, [proc])
            assert proc.wait(timeout=60) == 0, (tmp_path / "out").read_text()
        finally:
            if proc.poll() is None:
                lt.kill_session(proc)
        assert {r["state"] for r in final.values()} == {"JOB_FINISHED"}
        messages = [e["message"] for e in lt.events(db) if e["to_state"] == "RUNNING"]
        assert all("through its node agent on vm:" in m for m in messages)
        nodes = Counter(m.rsplit(":", 1)[1] for m in messages)
        assert set(nodes) == {"0", "1", "2"}
        first = next(iter(project.log_dir.glob("launcher_*.log"))).read_text()
        assert "3 node agent(s) started" in first
    assert lt.executions(counts) == Counter({t: 1 for t in ids})
    parent = (project.root / "data" / "_" / f"t0_{ids[0]}" / "t0.out").read_text()
    assert "balsam_launcher.agent" in parent  # started by an agent, not by the launcher


def test_stopping_a_launcher_stops_the_tasks_on_its_agents(project, tmp_path):
    counts = tmp_path / "counts"
    (tmp_path / "who.sh").write_text(WHO)
    with connect(project) as db:
        app = lt.add_app(db, "who", f"/bin/sh {tmp_path / 'who.sh'}")
        ids = lt.add_tasks(db, app, [{"name": f"t{i}", "args": f"60 {counts}",
                                      "wall_time_minutes": 0} for i in range(2)])
        proc = lt.start_launcher(project.root, "--job-mode", "serial", "--nodes", "2",
                                 env={"BALSAM_LAUNCHER_AGENTS": "always"},
                                 output=tmp_path / "out")
        deadline = time.monotonic() + 60
        while sum(r["state"] == "RUNNING" for r in lt.states(db).values()) < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        states = lt.states(db)
        assert {states[t]["state"] for t in ids} == {"RUN_TIMEOUT"}
    assert not counts.exists()
    alive = [p for p in lt.session_pids(proc.pid)
             if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert alive == []  # agents and tasks are gone (zombies wait for init to reap them)
