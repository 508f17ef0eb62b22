"""The installs of scripts/setup.sh, from uv.lock: the users' runtime carries no test tools and no
test plugin, the test environment (the one running this suite) carries both, the lock matches
every pyproject.toml, and a package's version is written in its pyproject.toml alone."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _setup(venv: Path, *args: str) -> None:
    env = {**os.environ, "BALSAM_VENV": str(venv)}
    out = subprocess.run(["bash", str(REPO / "scripts/setup.sh"), *args], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def _imports(venv: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(venv / "bin/python"), "-c", code]).returncode == 0


def _commands(run_as, user: str, venv: Path) -> set[str]:
    """The subcommands ``balsam --help`` lists when ``user`` runs the environment's balsam."""
    out = run_as(user, [str(venv / "bin/balsam"), "--help"]).stdout
    return set(re.findall(r"^  (\S+)", out.split("Commands:", 1)[1], re.MULTILINE))


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory other users may enter, for an environment they run."""
    path = Path(tempfile.mkdtemp(prefix="balsam-install-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.multiuser
def test_runtime_has_no_test_tools_and_the_test_environment_has_them(scratch, run_as):
    venv = scratch / "venv"
    _setup(venv)
    assert not (venv / "bin/pytest").exists()
    assert not _imports(venv, "pytest") and not _imports(venv, "balsam_testplugin")
    assert not _imports(venv, "balsam_testing")   # fixtures, helpers, fault-injection SQL
    assert not any((venv / "lib").glob("python*/site-packages/balsam*/testing.py"))
    commands = _commands(run_as, "dave", venv)   # any user runs it: dave is in no group of ours
    assert {"init", "server", "perms", "launcher", "web"} <= commands
    assert "hello" not in commands
    # Installed, not editable: the users' balsam does not change when someone edits the clone.
    code = "import balsam; print(balsam.__file__)"
    where = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert where.startswith(str(venv))

    _setup(venv, "--tests")
    assert "hello" in _commands(run_as, "dave", venv)
    assert all((venv / "bin" / tool).exists() for tool in ("pytest", "ruff", "mypy", "uv"))
    assert _imports(venv, "pytest_postgresql") and _imports(venv, "playwright")
    where = subprocess.run([str(venv / "bin/python"), "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert Path(where.strip()).is_relative_to(REPO / "packages/core/src")   # editable

    _setup(venv)   # the runtime asked of a test environment: it stays one (BALSAM_VENV exported)
    assert _imports(venv, "pytest") and "hello" in _commands(run_as, "dave", venv)


def test_lock_matches_every_pyproject():
    """``uv sync --locked`` refuses a stale lock; this says so before anyone installs."""
    uv = BIN / "uv"
    assert uv.exists(), "no uv in the test environment: run scripts/setup.sh --tests"
    out = subprocess.run([str(uv), "lock", "--check"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr


def test_versions_are_written_once():
    """Only pyproject.toml names a package's version; ``balsam --version`` reads it from there."""
    copies = [str(path) for path in REPO.glob("packages/*/src/**/*.py")
              if "__version__" in path.read_text()]
    assert copies == []
    cli = tomllib.loads((REPO / "packages/cli/pyproject.toml").read_text())["project"]
    out = subprocess.run([str(BIN / "balsam"), "--version"], capture_output=True, text=True,
                         check=True).stdout
    assert cli["version"] in out
