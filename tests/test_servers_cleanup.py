"""The suite's own clean-up: no embedded server a test started outlives its directory."""

from __future__ import annotations

import pytest

from balsam_testing import launchers as lt
from balsam_testing.servers import stop_servers_under

pytestmark = [pytest.mark.pg, pytest.mark.multiuser]


def test_a_server_pg_ctl_cannot_see_is_ended_and_named(run_as, shared_dir):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    run_as("alice", ["bash", "-c", ". balsamactivate proj"], cwd=shared_dir)
    pidfile = shared_dir / "proj" / "balsamdb" / "postmaster.pid"
    pid = int(pidfile.read_text().split()[0])
    pidfile.unlink()  # as if lost: pg_ctl no longer knows the server runs
    assert lt.alive(pid)
    with pytest.warns(UserWarning, match=f"postmaster {pid} of .*proj/balsamdb ended by signal"):
        stop_servers_under(shared_dir)
    assert not lt.alive(pid)


def test_a_server_pg_ctl_stops_leaves_no_warning(run_as, shared_dir, recwarn):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    run_as("alice", ["bash", "-c", ". balsamactivate proj"], cwd=shared_dir)
    pid = int((shared_dir / "proj" / "balsamdb" / "postmaster.pid").read_text().split()[0])
    stop_servers_under(shared_dir)
    assert not lt.alive(pid)
    assert [str(w.message) for w in recwarn] == []
