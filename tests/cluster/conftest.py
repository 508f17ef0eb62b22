"""The multi-host cluster of ``scripts/cluster-up.sh`` for the tests in this directory: one
session brings it up and tears it down; one project, owned by alice, whose server runs on the
login node, shared with bob. Tests keep apart by workflow (each submits with ``--wf-filter``).
The cluster and project drivers are in ``namespace_cluster.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from balsam_testing import machine

NODES = 3


def _load(name: str) -> Any:
    """A helper module of this directory (pytest's importlib mode does not put it on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


nc = _load("namespace_cluster")


@pytest.fixture(scope="session")
def cluster(unix_users: Any) -> Iterator[Any]:
    """A login node and three compute nodes (``scripts/cluster-up.sh 3``), torn down after."""
    if os.geteuid() != 0:
        pytest.skip("the namespace cluster needs root (scripts/cluster-up.sh)")
    with machine.slurm():  # another session's cluster is not ours to bring up or down
        up = nc.Cluster.up(NODES)
        try:
            yield up
        finally:
            nc.Cluster.down()


@pytest.fixture(scope="session")
def project(cluster: Any, unix_users: Any) -> Iterator[Any]:
    """alice's project (``namespace_cluster.project``), shared with bob."""
    with nc.project(cluster, unix_users.group) as proj:
        yield proj


@pytest.fixture
def healed(cluster: Any) -> Iterator[Any]:
    """The cluster, brought back to health after a test that breaks nodes."""
    try:
        yield cluster
    finally:
        cluster.heal()
