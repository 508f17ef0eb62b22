"""The control zone's checks: who may have written a path, reading without following a symlink,
writing without following one."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from balsam.errors import UnsafeFile
from balsam.zones import Guard, write_new

ALICE = 1002
GUARD = Guard(ALICE, "ask alice")


def st(mode: int, uid: int = ALICE, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.mark.parametrize("mode, uid, private, reason", [
    (stat.S_IFREG | 0o640, ALICE, False, None),
    (stat.S_IFREG | 0o640, 0, False, None),  # root writes anything anyway
    (stat.S_IFDIR | 0o2750, ALICE, False, None),
    (stat.S_IFREG | 0o660, ALICE, False, "writable by group"),
    (stat.S_IFREG | 0o646, ALICE, False, "writable by everyone"),
    (stat.S_IFREG | 0o600, 4242, False, "owned by 4242, not"),
    (stat.S_IFLNK | 0o777, ALICE, False, "a symbolic link, which balsam does not follow"),
    (stat.S_IFDIR | 0o700, ALICE, True, None),
    (stat.S_IFDIR | 0o750, ALICE, True, "mode 0750: others may reach it"),
])
def test_problem(mode, uid, private, reason):
    found = GUARD.problem(st(mode, uid), private=private)
    assert (found is None) if reason is None else (reason in found)


def test_group_write_on_the_owners_private_group_is_the_owners_alone():
    me = pwd.getpwuid(os.geteuid())
    guard = Guard(me.pw_uid, "x")
    assert guard.problem(st(stat.S_IFREG | 0o660, me.pw_uid, me.pw_gid)) is None
    other = next(g.gr_gid for g in grp.getgrall() if g.gr_gid != me.pw_gid)
    assert "writable by group" in guard.problem(st(stat.S_IFREG | 0o660, me.pw_uid, other))


def test_modes_are_not_judged_inside_a_private_directory():
    assert GUARD.problem(st(stat.S_IFREG | 0o666), modes=False) is None
    assert "owned by" in GUARD.problem(st(stat.S_IFREG | 0o600, uid=4242), modes=False)


def test_read_refuses_a_symlink_and_a_file_others_can_write(tmp_path):
    guard = Guard(os.geteuid(), "fix it")
    good = tmp_path / "good"
    good.write_text("x")
    os.chmod(good, 0o640)
    assert guard.read(good) == "x"
    link = tmp_path / "link"
    link.symlink_to(good)
    with pytest.raises(UnsafeFile, match=r"^refusing .*/link: a symbolic link, which balsam does "
                                         r"not follow; fix it$"):
        guard.read(link)
    os.chmod(good, 0o646)
    with pytest.raises(UnsafeFile, match="writable by everyone"):
        guard.read(good)
    with pytest.raises(FileNotFoundError):
        guard.read(tmp_path / "missing")


def test_read_refuses_what_someone_else_owns(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    theirs = tmp_path / "theirs"
    theirs.write_text("x")
    os.chown(theirs, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(UnsafeFile, match="owned by nobody, not root"):
        Guard(0, "x").read(theirs)


def test_write_new_replaces_a_planted_symlink_never_its_target(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "server-info"
    planted.symlink_to(victim)
    write_new(planted, "mine", 0o640)
    assert victim.read_text() == "precious"
    assert not planted.is_symlink() and planted.read_text() == "mine"
    assert stat.S_IMODE(planted.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["server-info", "victim"]


def test_write_new_sets_the_mode_whatever_the_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        path = write_new(tmp_path / "f", b"x", 0o640)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o640
