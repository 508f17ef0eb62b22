"""The embedded cluster's configuration, as values: settings, pg_hba.conf, pg_ident.conf."""

from __future__ import annotations

import pytest

from balsam.contracts import ServerInfo
from balsam.errors import InvalidInput
from balsam.project import Project
from balsam_pgserver import cluster, server


def test_settings_keep_room_for_the_admin_and_time_out_authentication():
    found = dict(s.split("=", 1) for s in cluster.settings(15))
    assert found["authentication_timeout"] == "5s"
    assert found["superuser_reserved_connections"] == "3"
    assert found["max_connections"] == "300"
    assert found["ssl"] == "on" and found["ssl_cert_file"] == "server.crt"  # relative: movable
    assert "reserved_connections" not in found  # PostgreSQL 15 has no such setting
    assert dict(s.split("=", 1) for s in cluster.settings(16, 40))["reserved_connections"] == "4"


@pytest.mark.parametrize("value", [5, 20000])
def test_max_connections_from_server_info_is_checked(value, tmp_path):
    project = Project(tmp_path, ServerInfo(max_connections=value))
    with pytest.raises(InvalidInput, match="max_connections in .* must be a whole number"):
        cluster.max_connections(project)


def test_hba_has_no_trust_and_tcp_only_with_tls():
    lines = [ln.split() for ln in server.HBA.splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        ["local", "all", "balsam_admin", "peer", "map=owner"],
        ["local", "all", "all", "peer"],
        ["hostssl", "all", "balsam_admin", "all", "reject"],
        ["hostssl", "all", "all", "all", "scram-sha-256"],
        ["hostnossl", "all", "all", "all", "reject"],
    ]


def test_only_the_owner_is_mapped_to_the_admin():
    lines = [ln.split() for ln in server.ident_map("alice").splitlines()
             if ln and not ln.startswith("#")]
    assert lines == [["owner", "alice", "balsam_admin"]]
    for bad in ("/^.*$", "a b", ""):
        with pytest.raises(server.PostgresError, match="cannot map"):
            server.ident_map(bad)
