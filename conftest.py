"""Fixtures shared by every package's tests and the cross-package tests.

Database fixtures come from ``balsam_testing.pg``. The multi-user fixtures below create
real UNIX users and a group (root only) and run commands as them with ``runuser``.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from balsam_testing.servers import stop_servers_under

pytest_plugins = ["balsam_testing.pg"]

GROUP = "balsamtest"
MEMBERS = ("alice", "bob", "carol")
OUTSIDER = "dave"
VENV_BIN = str(Path(sys.executable).parent)


@dataclass(frozen=True)
class Users:
    group: str
    members: tuple[str, ...]
    outsider: str


def _ensure_group(name: str) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        subprocess.run(["groupadd", name], check=False)
        grp.getgrnam(name)


def _ensure_user(name: str, groups: Sequence[str] = ()) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        args = ["useradd", "--create-home", "--shell", "/bin/bash", name]
        if groups:
            args[1:1] = ["-G", ",".join(groups)]
        subprocess.run(args, check=False)
        pwd.getpwnam(name)
    if groups:
        subprocess.run(["usermod", "-a", "-G", ",".join(groups), name], check=True)


@pytest.fixture(scope="session")
def unix_users() -> Users:
    """alice, bob and carol in group balsamtest; dave outside it (created if missing)."""
    if os.geteuid() != 0:
        pytest.skip("multi-user tests create UNIX users: run the suite as root")
    _ensure_group(GROUP)
    for name in MEMBERS:
        _ensure_user(name, [GROUP])
    _ensure_user(OUTSIDER)
    return Users(GROUP, MEMBERS, OUTSIDER)


def user_env(user: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean login-like environment for ``user`` with the test venv first on PATH."""
    pw = pwd.getpwnam(user)
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
        "BALSAM_PG_FAST": "1",
    }
    env.update(extra or {})
    return env


RunAs = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_as(unix_users: Users) -> RunAs:
    """``run_as(user, [args...], cwd=..., env={...}, check=True)``: run a command as a user."""

    def run(user: str, args: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
            env: dict[str, str] | None = None, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = ["runuser", "-u", user, "--", "env", "-i",
               *(f"{k}={v}" for k, v in user_env(user, env).items()), *args]
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            command = " ".join(args)
            pytest.fail(f"{user}$ {command} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def shared_dir(unix_users: Users) -> Iterator[Path]:
    """A setgid directory of group balsamtest (mode 2770) under /tmp; servers left running by
    projects inside it are stopped afterwards."""
    path = Path(tempfile.mkdtemp(prefix="balsam-shared-"))
    os.chown(path, 0, grp.getgrnam(unix_users.group).gr_gid)
    os.chmod(path, 0o2770)
    try:
        yield path
    finally:
        try:
            stop_servers_under(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)
