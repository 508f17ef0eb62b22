"""Why a connection failed, in one line that says what to do."""

from __future__ import annotations

import psycopg

from balsam.contracts import ServerInfo
from balsam.db import _connect_error
from balsam.errors import PermissionDenied, ServerDown
from balsam.project import Project, current_user


def test_no_password_on_a_compute_node_says_where_to_activate(tmp_path):
    project = Project(tmp_path, ServerInfo(owner="alice", host="login", dsn=None))
    for reason in ("fe_sendauth: no password supplied",
                   'FATAL:  password authentication failed for user "bob"'):
        exc = psycopg.OperationalError(
            f'connection to server at "10.78.0.1", port 5432 failed: {reason}')
        error = _connect_error(project, exc)
        assert isinstance(error, PermissionDenied)
        assert str(error) == (
            f"you ({current_user()}) have no working database password for {tmp_path} on this "
            f"host: activate the project once on login, its server's host, where balsam sets "
            f"one up")


def test_a_server_that_is_down_is_still_reported_as_down(tmp_path):
    project = Project(tmp_path, ServerInfo(owner="alice", host="login", dsn=None))
    exc = psycopg.OperationalError('connection to server at "10.78.0.1", port 5432 failed: '
                                   "Connection refused")
    error = _connect_error(project, exc)
    assert isinstance(error, ServerDown) and "is the server up?" in str(error)
