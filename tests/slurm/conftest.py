"""A real single-host Slurm for the tests in this directory (started by scripts/slurm-up.sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam_testing import machine

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def slurm_is_up() -> bool:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split() == ["idle"] * len(proc.stdout.split()) \
        and bool(proc.stdout.split())


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A one-node Slurm (partition ``debug``), installed with apt and started if needed; it is
    stopped afterwards only if this session started it. Yields the partition name."""
    if os.geteuid() != 0:
        pytest.skip("starting a test Slurm cluster needs root (scripts/slurm-up.sh)")
    with machine.slurm():  # another session's Slurm is not ours to start or stop
        started = not slurm_is_up()
        if started:
            proc = subprocess.run(["bash", str(SCRIPTS / "slurm-up.sh")], capture_output=True,
                                  text=True, timeout=900)
            if proc.returncode != 0:
                pytest.fail(f"scripts/slurm-up.sh failed:\n{proc.stdout}\n{proc.stderr}")
        try:
            yield "debug"
        finally:
            if started:
                subprocess.run(["bash", str(SCRIPTS / "slurm-down.sh")], capture_output=True,
                               timeout=120)
