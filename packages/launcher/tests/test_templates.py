"""Job templates: the shipped defaults, the override order, strictness and quoting."""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from balsam.contracts import ServerInfo
from balsam.errors import InvalidInput
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_launcher.schedulers import get_scheduler
from balsam_launcher.submit import JobRequest, TemplateError, render

JOB = {"id": 7, "owner": "alice", "scheduler": "", "project": "Proj1", "queue": "debug",
       "num_nodes": 5, "wall_time_minutes": 15, "job_mode": "mpi", "wf_filter": "wf one"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "my project's dir"
    (root / "qsubmit").mkdir(parents=True)
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    return Project(root, ServerInfo(owner="alice", umask=0o027))


def rendered(project, scheduler, job=JOB, template=None):
    sched = get_scheduler(project, get_plugin_manager(), scheduler)
    return render(project, sched, {**job, "scheduler": scheduler}, template)


def exec_line(text):
    return shlex.split(next(ln for ln in text.splitlines() if ln.startswith("exec ")))[1:]


@pytest.mark.parametrize("scheduler, directives", [
    ("slurm", ["#SBATCH --nodes=5", "#SBATCH --time=15", "#SBATCH --partition=debug",
               "#SBATCH --account=Proj1", "#SBATCH --job-name=balsam-7"]),
    ("pbs", ["#PBS -l select=5", "#PBS -l walltime=00:15:00", "#PBS -q debug", "#PBS -A Proj1"]),
    ("cobalt", ["#COBALT -n 5", "#COBALT -t 15", "#COBALT -q debug", "#COBALT -A Proj1"]),
    ("local", []),
])
def test_default_templates(project, scheduler, directives):
    text = rendered(project, scheduler)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for d in directives:
        assert d in lines, d
    assert "umask 0027" in lines
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    argv = exec_line(text)
    assert argv[:2] == ["balsam", "launcher"]
    assert argv[argv.index("--batch-job-id") + 1] == "7"
    assert argv[argv.index("--job-mode") + 1] == "mpi"
    assert argv[argv.index("--wf-filter") + 1] == "wf one"
    assert argv[argv.index("--time-limit-minutes") + 1] == "14"
    assert "--consume-all" in argv
    source = shlex.split(next(ln for ln in lines if ln.startswith("source ")))
    assert source[1].endswith("/balsamactivate") and source[2] == str(project.root)
    if scheduler == "local":
        assert argv[-2:] == ["--nodes", "5"]


def test_no_queue_or_account_means_no_directive(project):
    text = rendered(project, "slurm", {**JOB, "queue": "", "project": ""})
    assert "--partition" not in text and "--account" not in text


def test_project_template_beats_home_beats_package(project, tmp_path):
    home = tmp_path / "home" / "job-templates"
    home.mkdir(parents=True)
    (home / "slurm.sh").write_text("home {{ job.id }}\n")
    assert rendered(project, "slurm") == "home 7\n"
    (project.root / "job-templates").mkdir()
    (project.root / "job-templates" / "slurm.sh").write_text("project {{ job.num_nodes }}\n")
    assert rendered(project, "slurm") == "project 5\n"
    assert rendered(project, "pbs").startswith("#!/bin/bash\n#PBS")  # others untouched


def test_undefined_variable_is_a_one_line_error(project):
    (project.root / "job-templates").mkdir()
    (project.root / "job-templates" / "local.sh").write_text("a\n{{ job.id }} {{ nodez }}\n")
    with pytest.raises(TemplateError, match=r"^job template 'local.sh': 'nodez' is undefined$"):
        rendered(project, "local")


def test_syntax_error_names_the_line(project):
    (project.root / "job-templates").mkdir()
    (project.root / "job-templates" / "local.sh").write_text("a\nb\n{% if %}\n")
    with pytest.raises(TemplateError, match=r"job template 'local.sh' \(line 3\)"):
        rendered(project, "local")


def test_missing_named_template(project):
    with pytest.raises(TemplateError, match="job template 'nope.sh' not found"):
        rendered(project, "local", template="nope.sh")


@pytest.mark.parametrize("fields, message", [
    ({"num_nodes": 0}, "--nodes must be between 1 and 100,000 (got 0)"),
    ({"num_nodes": 10**30}, "--nodes must be between 1 and 100,000 (got 1000000000000"),
    ({"wall_time_minutes": 0}, "--time-minutes must be between 1 and 525,600 (a year; got 0)"),
    ({"wall_time_minutes": 525_601}, "--time-minutes must be between 1 and 525,600"),
    ({"job_mode": "threads"}, "--job-mode must be mpi or serial"),
    ({"queue": "debug\n#SBATCH --uid=0"}, "--queue"),
    ({"project": "a b"}, "--project"),
    ({"wf_filter": "$(rm -rf ~)"}, "--wf-filter"),
])
def test_bad_requests_are_refused(fields, message):
    request = JobRequest(**{"num_nodes": 1, "wall_time_minutes": 10, **fields})
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        request.validate()


# --- trust -------------------------------------------------------------------------------------


def write_template(path, text, mode=0o640):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_a_template_someone_else_could_write_is_refused(project, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")
    local = write_template(project.root / "job-templates" / "local.sh", "mine\n")
    assert rendered(project, "local") == "mine\n"
    os.chown(local, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(TemplateError, match=r"^job template 'local.sh': refusing .*local.sh: "
                                            r"owned by nobody, not root"):
        rendered(project, "local")
    os.chown(local, 0, grp.getgrnam("nogroup").gr_gid)
    os.chmod(local, 0o664)
    with pytest.raises(TemplateError, match="writable by group nogroup"):
        rendered(project, "local")
    os.chmod(local, 0o644)
    os.chmod(local.parent, 0o777)
    with pytest.raises(TemplateError, match=r"refusing .*/job-templates: writable by everyone"):
        rendered(project, "local")


def test_a_planted_symlink_is_refused_not_followed(project, tmp_path):
    target = write_template(tmp_path / "elsewhere.sh", "followed\n")
    (project.root / "job-templates").mkdir()
    (project.root / "job-templates" / "slurm.sh").symlink_to(target)
    with pytest.raises(TemplateError, match="a symbolic link, which balsam does not follow"):
        rendered(project, "slurm")


def test_a_home_template_others_can_write_is_refused(project, tmp_path):
    write_template(tmp_path / "home" / "job-templates" / "pbs.sh", "home\n", 0o646)
    with pytest.raises(TemplateError, match=r"writable by everyone; it must be yours and "
                                            r"writable only by you \(chmod go-w\)"):
        rendered(project, "pbs")


@pytest.mark.parametrize("text", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__.os.system('true') }}",
    "{{ job.update({'id': 1}) }}",
])
def test_templates_render_in_a_sandbox(project, text):
    write_template(project.root / "job-templates" / "local.sh", text + "\n")
    with pytest.raises(TemplateError, match="unsafe|not safely callable"):
        rendered(project, "local")


def test_a_template_name_cannot_leave_the_template_directories(project):
    write_template(project.root / "server-info", "{}\n")
    with pytest.raises(TemplateError, match="job template '../server-info' not found"):
        rendered(project, "local", template="../server-info")


#: A legacy Balsam 0.5 job template, as its user guide shows it.
LEGACY_TEMPLATE = """#!/bin/bash -x
#COBALT -A {{ project }}
#COBALT -n {{ nodes }}
#COBALT -q {{ queue }}
#COBALT -t {{ time_minutes }}
#COBALT {{ sched_flags }}

export PATH={{ balsam_bin }}:{{ pg_bin }}:$PATH
source balsamactivate {{ balsam_db_path }}
sleep 2
balsam launcher --{{ wf_filter }} --job-mode={{ job_mode }} \\
    --time-limit-minutes={{ time_minutes-2 }}
source balsamdeactivate
"""


def test_a_legacy_template_renders_with_legacy_names(project, tmp_path):
    home = tmp_path / "home" / "job-templates"
    home.mkdir(parents=True)
    (home / "theta.cobaltscheduler.tmpl").write_text(LEGACY_TEMPLATE)
    lines = rendered(project, "cobalt", template="theta.cobaltscheduler.tmpl").splitlines()
    assert lines[1:5] == ["#COBALT -A Proj1", "#COBALT -n 5", "#COBALT -q debug", "#COBALT -t 15"]
    assert f"source balsamactivate {project.root}" in lines
    launch = lines.index("balsam launcher --wf-filter=wf one --job-mode=mpi \\")
    assert lines[launch + 1] == "    --time-limit-minutes=13"
    bins = next(ln for ln in lines if ln.startswith("export PATH="))
    assert bins.split("=", 1)[1].split(":")[0] == str(Path(sys.executable).parent)
    everything = rendered(project, "cobalt", {**JOB, "wf_filter": ""},
                          template="theta.cobaltscheduler.tmpl")
    assert "balsam launcher --consume-all --job-mode=mpi" in everything


def test_a_legacy_variable_with_no_value_is_named_with_what_to_write(project, tmp_path):
    home = tmp_path / "home" / "job-templates"
    home.mkdir(parents=True)
    (home / "old.tmpl").write_text("source {{ activate_path }} {{ conda_path }}\n")
    with pytest.raises(TemplateError, match=re.escape(
            "job template 'old.tmpl': 'activate_path' is undefined; activate_path is a legacy "
            "variable with no value here: source {{ activate }} {{ project_dir }} "
            "(balsamactivate)")):
        rendered(project, "cobalt", template="old.tmpl")
