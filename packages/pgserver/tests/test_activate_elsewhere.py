"""Activation on a host other than the server's (a batch job on a compute node) only checks the
server: it cannot see the server host's processes, so starting one there would put two servers
on one data directory."""

from __future__ import annotations

import pytest

from balsam.contracts import ServerInfo
from balsam.errors import ServerDown
from balsam.project import Project, current_user
from balsam_pgserver import cluster


def test_the_owner_on_another_host_never_starts_the_server(tmp_path, monkeypatch):
    project = Project(tmp_path, ServerInfo(owner=current_user(), host="login.invalid", port=5999,
                                 dsn=None))
    monkeypatch.setattr(cluster, "start", lambda project: pytest.fail("started a server"))
    with pytest.raises(ServerDown) as down:
        cluster.activate(project, current_user())
    assert str(down.value) == (
        f"the database server of {tmp_path} is not running on login.invalid; only its owner "
        f"({current_user()}) can start it, with: source balsamactivate {tmp_path} on login.invalid")
