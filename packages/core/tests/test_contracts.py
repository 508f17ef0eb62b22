"""The typed values between packages: server-info read and written, and the user hooks fired by
core only for a request that passes its checks."""

from __future__ import annotations

import json
import os
from dataclasses import FrozenInstanceError, replace

import pluggy
import pytest

from balsam import hookimpl, hookspecs, users
from balsam.contracts import ServerInfo
from balsam.errors import InvalidInput, PermissionDenied, PluginLoadError, ProjectNotFound
from balsam.project import Project, current_user

WRITTEN = {"version": 1, "uuid": "u-1", "owner": "alice", "dbname": "balsam", "dsn": None,
           "host": "login", "port": 5433, "group": "proj", "umask": "0027"}


def test_server_info_reads_what_was_written_and_keeps_unknown_keys():
    info = ServerInfo.from_json(json.dumps({**WRITTEN, "future_key": [1, 2]}))
    assert (info.owner, info.port, info.umask, info.embedded) == ("alice", 5433, 0o027, True)
    assert info.extra == {"future_key": [1, 2]}
    again = json.loads(info.to_json())
    assert again == {**WRITTEN, "future_key": [1, 2], "scheduler": None, "max_connections": None}
    assert ServerInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize(("key", "value"), [("port", "5432"), ("port", True), ("owner", None),
                                            ("umask", "0999"), ("umask", 7), ("dsn", 5)])
def test_server_info_with_a_wrong_type_is_refused(key, value):
    with pytest.raises(ValueError, match=key):
        ServerInfo.from_json(json.dumps({**WRITTEN, key: value}))


def test_server_info_is_changed_by_replacing_it():
    info = ServerInfo(owner="alice")
    with pytest.raises(FrozenInstanceError):
        info.port = 1  # the point: it cannot be changed in place
    assert replace(info, dsn="host=db").embedded is False


def test_a_corrupt_server_info_is_one_clear_error(tmp_path):
    (tmp_path / "server-info").write_text(json.dumps({**WRITTEN, "port": "x"}))
    with pytest.raises(ProjectNotFound, match=r"server-info is corrupt: port is 'x'"):
        Project.load(tmp_path, check=False)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    @hookimpl
    def on_add_user(self, project, username, role):
        self.calls.append(("add", username, role))

    @hookimpl
    def on_drop_user(self, project, username):
        self.calls.append(("drop", username, None))


@pytest.fixture
def recorder() -> tuple[pluggy.PluginManager, Recorder]:
    pm = pluggy.PluginManager("balsam")
    pm.add_hookspecs(hookspecs)
    rec = Recorder()
    pm.register(rec)
    return pm, rec


def test_user_hooks_fire_for_a_valid_request(tmp_path, recorder):
    pm, rec = recorder
    project = Project(tmp_path, ServerInfo(owner=current_user()))
    users.add_user(project, "bob", "viewer", pm)
    users.drop_user(project, "bob", pm)
    assert rec.calls == [("add", "bob", "viewer"), ("drop", "bob", None)]


@pytest.mark.parametrize(("call", "error"), [
    (lambda p, pm: users.add_user(p, "Bob; DROP", "member", pm), InvalidInput),
    (lambda p, pm: users.add_user(p, "bob", "admin", pm), InvalidInput),
    (lambda p, pm: users.add_user(p, p.owner, "member", pm), InvalidInput),
    (lambda p, pm: users.drop_user(p, p.owner, pm), InvalidInput),
])
def test_user_hooks_never_fire_for_a_bad_request(tmp_path, recorder, call, error):
    pm, rec = recorder
    with pytest.raises(error):
        call(Project(tmp_path, ServerInfo(owner=current_user())), pm)
    assert rec.calls == []


def test_only_the_owner_manages_users(tmp_path, recorder):
    pm, rec = recorder
    project = Project(tmp_path, ServerInfo(owner="someone_else"))
    with pytest.raises(PermissionDenied, match="only the project owner"):
        users.drop_user(project, "bob", pm)
    assert rec.calls == []


class _Exports:
    """A plugin's ``on_activate``: what it returns is exported by ``balsamactivate``."""

    def __init__(self, env: dict[object, object]) -> None:
        self.env = env

    @hookimpl
    def on_activate(self, project, user):
        return self.env


@pytest.mark.parametrize("env", [{"X; touch /tmp/owned": "1"}, {"1X": "1"}, {"X\n": "1"},
                                 {"X": 1}, {"": "1"}])
def test_activation_exports_only_names_to_strings(tmp_path, monkeypatch, env):
    """The shell evaluates ``export KEY=value``: a plugin's key is never code."""
    from balsam.lifecycle import activate
    from balsam.project import new_info

    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    project = Project(tmp_path / "p", new_info(current_user()))
    pm = pluggy.PluginManager("balsam")
    pm.add_hookspecs(hookspecs)
    pm.register(_Exports({"GOOD_1": "ok"}), name="good")
    shell_umask = os.umask(0o022)  # activation applies the project's umask to this process
    try:
        assert activate(project, pm)["GOOD_1"] == "ok"
        pm.register(_Exports(env), name="bad")
        with pytest.raises(PluginLoadError, match="must map environment variable names"):
            activate(project, pm)
    finally:
        os.umask(shell_umask)
