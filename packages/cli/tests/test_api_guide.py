"""docs/api.md, run: each example of the Python API guide against a real database (the spawn
example as the app of a task that a real launcher runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from balsam import api

pytestmark = pytest.mark.pg

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "api.md"
BALSAM = str(Path(sys.executable).parent / "balsam")


def example(name: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return next(b for b in blocks if b.startswith(f"# example: {name}\n"))


def test_bulk_creation(project):
    exec(compile(example("bulk"), "api.md: bulk", "exec"), {})
    tasks = api.get_tasks(workflow="scan", limit=2)
    assert [t.name for t in tasks] == ["run0000", "run0001"]
    assert tasks[1].data == {"seed": 1} and tasks[1].environ_vars == {"OMP_NUM_THREADS": "4"}


def test_dags(project, capsys):
    exec(compile(example("dag"), "api.md: dag", "exec"), {})
    assert "would create a cycle" in capsys.readouterr().out
    assert api.count_by_state(workflow="pipeline") == {"READY": 1, "AWAITING_PARENTS": 5}


def test_spawning_children_from_a_running_task(project, tmp_path):
    script = tmp_path / "spawn.py"
    script.write_text(example("spawn"))
    api.add_app("spawner", f"{sys.executable} {script}")
    api.add_app("echo", "/bin/echo")
    parent = api.add_task("spawner", name="parent", workflow="tree", data={"children": 2})
    proc = subprocess.run([BALSAM, "launcher", "--job-mode", "serial", "--consume-all",
                           "--nodes", "2"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    children = api.children(parent)
    assert len(children) == 2
    states = {t.name: t.state for t in api.get_tasks(workflow="tree")}
    assert states == {"parent": "JOB_FINISHED", "parent-child0": "JOB_FINISHED",
                      "parent-child1": "JOB_FINISHED"}
    out = project.workdir(api.get_task(parent).workdir) / "parent.out"
    assert f"task {parent.id} spawned 2 children" in out.read_text()
