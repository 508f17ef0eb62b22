"""MPI command lines: mpirun (Open MPI, MPICH), srun, aprun, and the mpi_command hook."""

from __future__ import annotations

import re
import socket
from dataclasses import replace

import pytest

from balsam import hookimpl
from balsam.contracts import LauncherInfo
from balsam.errors import InvalidInput
from balsam.models import Task
from balsam.plugins import get_plugin_manager
from balsam.resources import Resources
from balsam_launcher import mpi

TASK = Task(id=7, num_nodes=2, ranks_per_node=4, threads_per_rank=2, threads_per_core=1,
            cpu_affinity="depth")
CMD = ["./app", "--in", "x y"]
ENV = {"BALSAM_TASK_ID": "7", "FOO": "bar baz"}


def nodes(*hosts, names=()):
    return Resources.on_hosts(list(hosts), "mpi", names=list(names)).nodes


def test_openmpi_on_remote_hosts_forwards_env_and_places_ranks():
    argv = mpi.mpirun(TASK, CMD, nodes("n1", "n2"), ENV, local=False, flavour="openmpi")
    assert argv == ["mpirun", "-n", "8", "--npernode", "4", "--host", "n1:4,n2:4",
                    "-x", "BALSAM_TASK_ID", "-x", "FOO", *CMD]


def test_openmpi_on_simulated_nodes_oversubscribes_without_binding():
    argv = mpi.mpirun(TASK, CMD, nodes("vm", "vm"), ENV, local=True, flavour="openmpi")
    assert argv[:6] == ["mpirun", "-n", "8", "--oversubscribe", "--bind-to", "none"]
    assert "--host" not in argv and argv[-3:] == CMD


def test_openmpi_gets_a_session_directory_per_task_in_the_launcher_scratch():
    argv = mpi.mpirun(TASK, CMD, nodes("vm"), ENV, local=True, flavour="openmpi",
                      scratch="/tmp/balsam-launcher-x")
    at = argv.index("--mca")
    assert argv[at:at + 3] == ["--mca", "orte_tmpdir_base", "/tmp/balsam-launcher-x/7"]
    mpich = mpi.mpirun(TASK, CMD, nodes("vm"), ENV, local=True, flavour="mpich",
                       scratch="/tmp/balsam-launcher-x")
    assert "--mca" not in mpich


def test_mpich_hydra_flags():
    argv = mpi.mpirun(TASK, CMD, nodes("n1", "n2"), ENV, local=False, flavour="mpich")
    assert argv == ["mpirun", "-n", "8", "-ppn", "4", "-hosts", "n1,n2",
                    "-genvlist", "BALSAM_TASK_ID,FOO", *CMD]


def test_srun_inside_slurm():
    argv = mpi.srun(TASK, CMD, nodes("n1", "n2"))
    assert argv == ["srun", "--nodes", "2", "--ntasks", "8", "--ntasks-per-node", "4",
                    "--nodelist", "n1,n2", "--export=ALL", "--cpus-per-task", "2", *CMD]


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "2(x3)"},
     {"n1": 2, "n2": 2, "n3": 2}),
    ({"SLURM_NODELIST": "gpu[01-02],n7", "SLURM_JOB_CPUS_PER_NODE": "64(x2),1"},
     {"gpu01": 64, "gpu02": 64, "n7": 1}),
    ({"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "2(x2)"}, {}),  # miscounted
    ({"SLURM_JOB_NODELIST": "n1", "SLURM_JOB_CPUS_PER_NODE": "lots"}, {}),
    ({"SLURM_JOB_NODELIST": "n[1-", "SLURM_JOB_CPUS_PER_NODE": "1"}, {}),
    ({}, {}),
])
def test_slurm_job_cpus_per_node(env, expected):
    assert mpi.slurm_job_cpus(env) == expected


def test_srun_fits_the_cores_a_shared_node_job_owns():
    one_rank = Task(id=8, num_nodes=2, ranks_per_node=1)
    cpus = {"n1": 1, "n2": 1}
    argv = mpi.srun(one_rank, CMD, nodes("n1", "n2"), cpus=cpus)
    assert argv[:8] == ["srun", "--nodes", "2", "--ntasks", "2", "--ntasks-per-node", "1",
                        "--nodelist"]
    with pytest.raises(InvalidInput) as refused:
        mpi.srun(TASK, CMD, nodes("n1", "n2"), cpus={"n1": 64, "n2": 4})
    assert str(refused.value) == (
        "task 7 needs 8 CPUs on each node (4 rank(s) x 2 thread(s)) but this batch job owns 4 "
        "on n2: submit it on whole nodes (the default job templates ask for them) or ask for "
        "fewer ranks per node")
    assert mpi.srun(TASK, CMD, nodes("n1", "n2"), cpus={"n1": 8, "n2": 8})[0] == "srun"


def test_aprun_uses_nids_and_threads():
    argv = mpi.aprun(TASK, CMD, nodes("nid00012", "nid00013", names=["12", "13"]), ENV)
    assert argv[:13] == ["aprun", "-n", "8", "-N", "4", "-d", "2", "-j", "1", "-cc", "depth",
                         "-L", "12,13"]
    assert argv[13:17] == ["-e", "BALSAM_TASK_ID=7", "-e", "FOO=bar baz"]


LAUNCHER = LauncherInfo(id=1, owner="alice", hostname=socket.gethostname(), job_mode="mpi",
                        wf_filter="", num_nodes=2, simulated=False, scheduler="local",
                        scratch="")


def test_default_choice_on_this_host_is_mpirun():
    argv = mpi.default_command(TASK, CMD, nodes(socket.gethostname()), ENV, LAUNCHER)
    assert argv[0] == "mpirun" and argv[-3:] == CMD


class SiteMpi:
    @hookimpl
    def mpi_command(self, task, command, nodes, env, launcher):
        if launcher.scheduler != "special":
            return None
        return ["site-launch", "--ranks", str(task.num_nodes * task.ranks_per_node), *command]


def test_hook_mpi_command():
    pm = get_plugin_manager()
    args = {"task": TASK, "command": CMD, "nodes": nodes("n1", "n2"), "env": ENV}
    default = pm.hook.mpi_command(**args, launcher=LAUNCHER)
    assert default[0] == "mpirun"  # the launcher's trylast default
    pm.register(SiteMpi(), name="site-mpi")
    special = replace(LAUNCHER, scheduler="special")
    assert pm.hook.mpi_command(**args, launcher=special) == [
        "site-launch", "--ranks", "8", *CMD]
    assert pm.hook.mpi_command(**args, launcher=LAUNCHER)[0] == "mpirun"


# --- the site's mpi_command setting, mpi_flags, gpu_environment -------------------------------


def test_the_site_mpi_command_fills_each_word_alone():
    template = "mpiexec -n {ranks} -ppn {ranks_per_node} --hosts {hosts} -d {threads_per_rank} " \
               "{command}"
    argv = mpi.default_command(TASK, CMD, nodes("n1", "n2"), ENV,
                               replace(LAUNCHER, mpi_command=template, scheduler="slurm"))
    assert argv == ["mpiexec", "-n", "8", "-ppn", "4", "--hosts", "n1,n2", "-d", "2", *CMD]
    odd = Task(id=8, cpu_affinity="a b; rm -rf /")  # a value never becomes two words
    assert mpi.from_template("run --bind={cpu_affinity} {command}", odd, CMD, nodes("n1")) == [
        "run", "--bind=a b; rm -rf /", *CMD]


@pytest.mark.parametrize(("template", "error"), [
    ("mpiexec -n {ranks}", "must end with the word {command}"),
    ("mpiexec {command} {command}", "must end with the word {command}"),
    ("mpiexec -n {rank} {command}", "unknown placeholder {rank}"),
    ("mpiexec 'unclosed {command}", "cannot be split"),
    ("mpiexec -n {ranks {command}", "is malformed"),
])
def test_a_bad_site_mpi_command_is_refused_in_one_line(template, error):
    from balsam.config import validate

    with pytest.raises(InvalidInput, match=re.escape(error)):
        validate("mpi_command", template, "balsam.toml")


def test_mpi_flags_go_just_before_the_command():
    argv = ["srun", "-n", "2", *CMD]
    assert mpi.with_flags(argv, CMD, "--cpu-bind=cores -x 'A B'") == [
        "srun", "-n", "2", "--cpu-bind=cores", "-x", "A B", *CMD]
    assert mpi.with_flags(argv, CMD, "  ") == argv
    with pytest.raises(InvalidInput, match="does not end with the task's command"):
        mpi.with_flags(["wrapper", *CMD, "--after"], CMD, "-x")


class SiteGpus:
    @hookimpl
    def gpu_environment(self, devices, task, launcher):
        if launcher.scheduler == "amd-site":
            return {"ROCR_VISIBLE_DEVICES": ",".join(map(str, devices))}
        return None


def test_hook_gpu_environment():
    pm = get_plugin_manager()
    task = Task(id=3, gpus_per_rank=1, ranks_per_node=2)
    assert pm.hook.gpu_environment(devices=[2, 3], task=task, launcher=LAUNCHER) == {
        "CUDA_VISIBLE_DEVICES": "2,3"}
    assert pm.hook.gpu_environment(devices=[], task=task, launcher=LAUNCHER) == {
        "CUDA_VISIBLE_DEVICES": ""}  # asked for none: sees none
    pm.register(SiteGpus(), name="site-gpus")
    amd = replace(LAUNCHER, scheduler="amd-site")
    assert pm.hook.gpu_environment(devices=[1], task=task, launcher=amd) == {
        "ROCR_VISIBLE_DEVICES": "1"}
    assert pm.hook.gpu_environment(devices=[1], task=task, launcher=LAUNCHER) == {
        "CUDA_VISIBLE_DEVICES": "1"}
