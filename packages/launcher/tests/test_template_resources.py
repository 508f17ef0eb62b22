"""What the default job templates ask the scheduler for: whole nodes, unless a site's copy of the
template says otherwise."""

from __future__ import annotations

import pytest

from balsam.contracts import ServerInfo
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_launcher.schedulers import get_scheduler
from balsam_launcher.submit import environment, render

JOB = {"id": 3, "owner": "alice", "project": "", "queue": "", "num_nodes": 2,
       "wall_time_minutes": 10, "job_mode": "mpi", "wf_filter": ""}


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    (root / "qsubmit").mkdir(parents=True)
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    return Project(root, ServerInfo(owner="alice", umask=0o007))


def directives(project, scheduler):
    sched = get_scheduler(project, get_plugin_manager(), scheduler)
    text = render(project, sched, {**JOB, "scheduler": scheduler})
    return [ln for ln in text.splitlines() if ln.startswith(("#SBATCH", "#PBS"))]


def test_slurm_asks_for_whole_nodes(project):
    lines = directives(project, "slurm")
    assert "#SBATCH --exclusive" in lines and "#SBATCH --nodes=2" in lines


def test_pbs_asks_for_whole_nodes_one_chunk_each(project):
    lines = directives(project, "pbs")
    assert "#PBS -l place=scatter:excl" in lines and "#PBS -l select=2" in lines


def test_a_site_whose_nodes_are_shared_drops_the_line_in_its_copy(project):
    default = environment(project).loader.get_source(environment(project), "slurm.sh")[0]
    (project.root / "job-templates").mkdir()
    shared = default.replace("#SBATCH --exclusive\n", "")
    (project.root / "job-templates" / "slurm.sh").write_text(shared)
    lines = directives(project, "slurm")
    assert "#SBATCH --exclusive" not in lines and "#SBATCH --nodes=2" in lines
