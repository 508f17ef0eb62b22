"""The select_tasks hook: the default policy, a third-party policy changing the order (the
installed balsam-testplugin), and a broken policy not stopping the launcher."""

from __future__ import annotations

import pytest

from balsam import hookimpl
from balsam.contracts import LauncherInfo
from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam.resources import Resources
from balsam_launcher.launcher import Launcher, Options
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg


def start_order(project, workflow: str, pm=None) -> list[int]:
    """Run a one-node launcher over ``workflow``; the task ids in the order they ran."""
    options = Options(job_mode="serial", nodes=1, consume_all=True, wf_filter=workflow,
                      poll_interval=0.2)
    launcher = Launcher(project, options, pm or get_plugin_manager())
    assert launcher.run() == 0
    with connect(project) as db:
        return [e["task_id"] for e in lt.events(db) if e["to_state"] == "RUNNING"
                and e["launcher_id"] == launcher.id]


def add_walls(project, workflow: str) -> dict[int, int]:
    with connect(project) as db:
        app = lt.add_app(db, f"app-{workflow}", "/bin/true")
        ids = lt.add_tasks(db, app, [{"name": f"w{w}", "workflow": workflow,
                                      "wall_time_minutes": w} for w in (3, 1, 5, 2, 4)])
    return dict(zip(ids, (3, 1, 5, 2, 4), strict=True))


def test_hook_select_tasks(project, monkeypatch):
    walls = add_walls(project, "default")
    assert [walls[t] for t in start_order(project, "default")] == [5, 4, 3, 2, 1]
    monkeypatch.setenv("BALSAM_TESTPLUGIN_POLICY", "smallest-first")
    walls = add_walls(project, "site")
    assert [walls[t] for t in start_order(project, "site")] == [1, 2, 3, 4, 5]


LAUNCHER = LauncherInfo(id=1, owner="alice", hostname="h", job_mode="mpi", wf_filter="",
                        num_nodes=2, simulated=True, scheduler="local", scratch="/tmp")


def test_the_default_policy_is_the_last_resort():
    pm = get_plugin_manager()
    impls = [i.plugin_name for i in pm.hook.select_tasks.get_hookimpls()]
    assert impls[0] == "launcher"  # trylast: called after every site plugin
    from balsam.models import Task
    res = Resources.on_hosts(["a", "b"], "mpi")
    tasks = [Task(id=1, num_nodes=1), Task(id=2, num_nodes=2)]
    assert [t.id for t in pm.hook.select_tasks(candidates=tasks, resources=res,
                                               launcher=LAUNCHER)] == [2]


class Broken:
    @hookimpl(tryfirst=True)
    def select_tasks(self, candidates, resources, launcher):
        raise RuntimeError("site policy bug")


def test_a_broken_policy_falls_back_to_the_default(project, caplog):
    walls = add_walls(project, "broken")
    pm = get_plugin_manager()
    pm.register(Broken(), name="broken-site")
    assert [walls[t] for t in start_order(project, "broken", pm)] == [5, 4, 3, 2, 1]
    assert "a select_tasks plugin failed; using the default policy" in caplog.text
