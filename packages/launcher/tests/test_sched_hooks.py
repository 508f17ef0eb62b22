"""Choosing a scheduler: the register_schedulers hook, site overrides, the precedence rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from balsam import hookimpl
from balsam.contracts import ServerInfo
from balsam.errors import InvalidInput
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam.scheduler import Scheduler
from balsam_launcher.schedulers import available, chosen_name, get_scheduler
from balsam_launcher.schedulers.local import LocalScheduler
from balsam_launcher.schedulers.slurm import SlurmScheduler


class SiteSlurm(Scheduler):
    name = "slurm"
    template = "site-slurm.sh"

    def submit(self, script, job):
        return "site-1"

    def status(self, ids):
        return {}

    def cancel(self, scheduler_id, *, force=False):
        pass


class Lsf(SiteSlurm):
    name = "lsf"
    template = "lsf.sh"


class SitePlugin:
    @hookimpl
    def register_schedulers(self):
        return {"slurm": SiteSlurm, "lsf": Lsf}


@pytest.fixture
def bare_project(tmp_path):
    (tmp_path / "qsubmit").mkdir()
    return Project(tmp_path, ServerInfo(owner="x"))


def test_hook_register_schedulers(bare_project):
    pm = get_plugin_manager()
    shipped = available(pm)
    assert {"local": LocalScheduler, "slurm": SlurmScheduler}.items() <= shipped.items()
    assert {"pbs", "cobalt"} <= set(shipped)
    pm.register(SitePlugin(), name="site-sched")
    try:
        found = available(pm)
        assert found["slurm"] is SiteSlurm  # the site's replaces the built-in one
        assert found["lsf"] is Lsf and found["local"] is LocalScheduler
        sched = get_scheduler(bare_project, pm, "lsf")
        assert isinstance(sched, Lsf) and sched.project is bare_project
    finally:
        pm.unregister(name="site-sched")
    assert available(pm)["slurm"] is SlurmScheduler


def test_scheduler_choice_precedence(bare_project, monkeypatch):
    monkeypatch.delenv("BALSAM_SCHEDULER", raising=False)
    assert chosen_name(bare_project) == "local"
    bare_project.info = replace(bare_project.info, scheduler="pbs")
    assert chosen_name(bare_project) == "pbs"
    monkeypatch.setenv("BALSAM_SCHEDULER", "cobalt")
    assert chosen_name(bare_project) == "cobalt"
    assert chosen_name(bare_project, "slurm") == "slurm"


def test_unknown_scheduler_lists_the_known_ones(bare_project):
    with pytest.raises(InvalidInput, match=r"unknown scheduler 'lsf'; registered schedulers: "
                                           r"cobalt, local, pbs, slurm"):
        get_scheduler(bare_project, get_plugin_manager(), "lsf")
