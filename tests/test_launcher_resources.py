"""Launcher resources with real launchers on a real database: GPUs shared out to tasks (never one
to two), CPU pinning in serial mode seen by the task itself (os.sched_getaffinity), mpi_flags
reaching the MPI launcher, the site's MPI command line, co-scheduled nodes, and the legacy
launcher and job options."""

from __future__ import annotations

import itertools
import json
import os
import sys

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_launcher import commands
from balsam_launcher.launcher import Launcher, Options
from balsam_testing import launchers as lt

pytestmark = pytest.mark.pg

#: A task that says what it was given, and stays long enough for others to run beside it.
REPORT = """import json, os, sys, time
report = {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
          "cpus": sorted(os.sched_getaffinity(0)),
          "coscheduled": os.environ.get("BALSAM_COSCHEDULED_NODES"),
          "flags": os.environ.get("FROM_FLAGS"), "ranks": os.environ.get("TEMPLATE_RANKS"),
          "hosts": os.environ.get("TEMPLATE_HOSTS")}
with open("report.json", "w") as f:
    json.dump(report, f)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def run_launcher(project, **options) -> Launcher:
    settings = {"job_mode": "serial", "nodes": 1, "consume_all": True, "time_limit_minutes": 5,
                "poll_interval": 0.2, **options}
    launcher = Launcher(project, Options(**settings), get_plugin_manager())
    assert launcher.run() == 0
    return launcher


@pytest.fixture
def reporter(project, tmp_path):
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    return api.add_app("report", f"{sys.executable} {script}")


def reports(project, ids) -> dict[int, dict]:
    found = {}
    for tid in ids:
        task = api.get_task(tid)
        found[tid] = json.loads((project.root / task.workdir / "report.json").read_text())
    return found


def intervals(db, ids) -> dict[int, tuple]:
    """When each task's run started and ended (its RUNNING and RUN_DONE events)."""
    times: dict[int, dict[str, object]] = {t: {} for t in ids}
    for e in lt.events(db):
        if e["task_id"] in times and e["to_state"] in ("RUNNING", "RUN_DONE"):
            times[e["task_id"]][e["to_state"]] = e["at"]
    return {t: (v["RUNNING"], v["RUN_DONE"]) for t, v in times.items()}


def test_serial_tasks_get_gpus_and_cpus_of_their_own(project, reporter):
    allowed = sorted(os.sched_getaffinity(0))
    packing = max(2, len(allowed))  # a pinned task's share of the node: one CPU
    shapes = [  # (gpus_per_rank, cpu_affinity)
        (2, "depth"), (1, "depth"), (1, "none"), (0, "none"), (1, "none"), (2, "depth")]
    ids = api.add_tasks([{"app": "report", "name": f"t{i}", "args": "1.5", "gpus_per_rank": g,
                          "cpu_affinity": a, "node_packing_count": packing}
                         for i, (g, a) in enumerate(shapes)])
    greedy = api.add_task("report", name="greedy", gpus_per_rank=5).id
    with connect(project) as db:
        run_launcher(project, gpus_per_node=4)
        states = lt.states(db)
        assert {states[t]["state"] for t in ids} == {"JOB_FINISHED"}
        assert states[greedy]["state"] == "READY"  # more GPUs than a node has: never claimed
        spans = intervals(db, ids)
    got = reports(project, ids)
    gpus = {t: set(map(int, filter(None, r["gpus"].split(",")))) for t, r in got.items()}
    for tid, (g, affinity) in zip(ids, shapes, strict=True):
        assert len(gpus[tid]) == g and gpus[tid] <= {0, 1, 2, 3}
        assert got[tid]["gpus"] is not None  # set even when empty: a task without GPUs sees none
        if affinity == "depth" and len(allowed) >= packing:
            assert len(got[tid]["cpus"]) == 1 and set(got[tid]["cpus"]) <= set(allowed)
        else:
            assert got[tid]["cpus"] == allowed
    overlapping = 0
    for a, b in itertools.combinations(ids, 2):
        if spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]:  # they ran at once
            overlapping += 1
            assert not gpus[a] & gpus[b], (a, b, gpus)
            if shapes[ids.index(a)][1] == shapes[ids.index(b)][1] == "depth":
                assert set(got[a]["cpus"]).isdisjoint(got[b]["cpus"])
    assert overlapping >= 3  # several at a time on the node: the checks above did bite


def test_a_pinned_task_asking_for_more_cpus_than_the_node_has_gets_them_all(project, reporter):
    wide = api.add_task("report", name="wide", cpu_affinity="depth", threads_per_rank=4096).id
    run_launcher(project)
    assert reports(project, [wide])[wide]["cpus"] == sorted(os.sched_getaffinity(0))


def test_mpi_mode_flags_gpus_and_coscheduled_nodes(project, reporter):
    both = api.add_task("report", name="both", num_nodes=1, coschedule_num_nodes=1,
                        gpus_per_rank=2, mpi_flags="-x FROM_FLAGS='yes it is'").id
    alone = api.add_task("report", name="alone", gpus_per_rank=1, args="1").id
    launcher = run_launcher(project, job_mode="mpi", nodes=3, gpus_per_node=6)
    got = reports(project, [both, alone])
    host = launcher.resources.nodes[0].host
    assert got[both]["flags"] == "yes it is"
    assert got[both]["coscheduled"] == f"{host}:1"  # the node beside it, held for it
    assert got[alone]["coscheduled"] is None
    # Three simulated nodes share the host's six GPUs: two each, and each task its own.
    assert {got[both]["gpus"], got[alone]["gpus"]} == {"0,1", "4"}


def test_the_site_mpi_command_and_mpi_flags(project, reporter, monkeypatch):
    monkeypatch.setenv("BALSAM_MPI_COMMAND",
                       "env TEMPLATE_RANKS={ranks} TEMPLATE_HOSTS={hosts} {command}")
    tid = api.add_task("report", name="t", num_nodes=2, ranks_per_node=2,
                       mpi_flags="FROM_FLAGS=flagged").id
    launcher = run_launcher(project, job_mode="mpi", nodes=2)
    host = launcher.resources.nodes[0].host
    assert reports(project, [tid])[tid] | {"cpus": None} == {
        "gpus": None, "cpus": None, "coscheduled": None, "flags": "flagged", "ranks": "4",
        "hosts": f"{host}:0,{host}:1"}
    monkeypatch.setenv("BALSAM_MPI_COMMAND", "env {nodes} {command}")
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["launcher", "--consume-all"])
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: BALSAM_MPI_COMMAND: mpi_command has an unknown "
                                     "placeholder {nodes}; known: ranks, num_nodes, "
                                     "ranks_per_node, threads_per_rank, threads_per_core, "
                                     "cpu_affinity, gpus_per_rank, hosts, command")


def test_legacy_launcher_options(project):
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    result = runner.invoke(cli, ["launcher", "--persistent", "--consume-all"])
    assert (result.exit_code, result.output.strip()) == (1, (
        "Error: --persistent keeps the launcher running with no work: not with --consume-all"))
    result = runner.invoke(cli, ["launcher", "--offset-nodes", "1", "--consume-all"])
    assert (result.exit_code, result.output.strip()) == (1, (
        "Error: --offset-nodes 1 leaves none of the 1 node(s) of this local allocation"))
    for bad in (["--limit-nodes", "0"], ["--gpus-per-node", "-1"], ["--offset-nodes", "-2"]):
        assert runner.invoke(cli, ["launcher", *bad]).exit_code == 2
    params = commands.launcher.make_context(
        "launcher", ["--num-transition-threads", "3", "--persistent", "--limit-nodes", "2",
                     "--gpus-per-node", "8"]).params
    assert (params["workers"], params["persistent"], params["limit_nodes"],
            params["gpus_per_node"]) == (3, True, 2, 8)
    launcher = run_launcher(project, consume_all=False, persistent=True, limit_nodes=1,
                            time_limit_minutes=0.02)
    assert launcher.stopping == "time limit reached"  # no work, yet it stayed until the limit


def test_balsam_job_resource_options(project):
    api.add_app("sim", "/bin/true")
    cli = build_cli(get_plugin_manager())
    runner = CliRunner()
    result = runner.invoke(cli, ["job", "--name", "g", "--workflow", "w", "--app", "sim",
                                 "--gpus-per-rank", "2", "--mpi-flags", "--bind-to core -x 'A B'",
                                 "--coschedule-num-nodes", "1"])
    assert result.exit_code == 0, result.output
    [task] = api.get_tasks()
    assert (task.gpus_per_rank, task.mpi_flags, task.coschedule_num_nodes) == (
        2, "--bind-to core -x 'A B'", 1)
    listed = runner.invoke(cli, ["ls", "-o", "tsv", "--no-header", "--fields",
                                 "id,gpus_per_rank,mpi_flags,coschedule_num_nodes"])
    assert listed.output == f"{task.id}\t2\t--bind-to core -x 'A B'\t1\n"
    for option, value, error in (
            ("--mpi-flags", "-x 'open", "mpi_flags \"-x 'open\" cannot be split into arguments"),
            ("--gpus-per-rank", "-1", "gpus_per_rank must be between 0 and 1,024, got -1"),
            ("--coschedule-num-nodes", "100001", "coschedule_num_nodes must be between 0 and")):
        result = runner.invoke(cli, ["job", "--name", "x", "--workflow", "w", "--app", "sim",
                                     option, value])
        assert result.exit_code == 1 and error in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert len(api.get_tasks()) == 1  # refused at the door: nothing added
