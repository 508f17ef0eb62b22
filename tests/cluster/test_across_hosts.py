"""Balsam across hosts, as its users run it: alice's server on the login node, every launcher in
a real Slurm batch job submitted with ``balsam submit-launch``, on compute nodes that reach the
server over TCP with their users' passwords (the project's socket is hidden from them)."""

from __future__ import annotations

import json
import pwd
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]


def test_serial_mode_runs_every_task_once_across_three_nodes(project):
    app = project.script("alice", "record-alice")
    counts = project.root / "data" / "serial.runs"
    ids = project.add_tasks("alice", "record-alice", app, [
        {"name": f"s{i}", "workflow": "serial", "args": f"1 {counts}", "node_packing_count": 2}
        for i in range(12)])
    job = project.submit("alice", "-n", "3", "-t", "5", "--job-mode", "serial",
                         "--wf-filter", "serial")
    project.wait(job)

    runs = project.runs(counts)
    assert Counter(t for t, _ in runs) == Counter(ids)  # every task, exactly once
    assert {h for _, h in runs} == set(project.cluster.compute)
    states = project.sql("SELECT state FROM tasks WHERE workflow = %s", "serial")
    assert {r["state"] for r in states} == {"JOB_FINISHED"}
    [launcher] = project.sql("SELECT hostname FROM launchers WHERE batch_job_id = %s", job.id)
    assert launcher["hostname"] == "node1"


#: An MPI-mode app: each rank says who it is, where, and how many CPUs the job owns there.
RANKS = """#!/bin/sh
echo "rank $SLURM_PROCID $(hostname) $SLURM_CPUS_ON_NODE"
"""
FAILS = """#!/bin/sh
echo "starting on $(hostname)"
echo "boom on $(hostname)" >&2
exit 3
"""


def output(project, task_id):
    return project.sh("alice", "balsam log $1", str(task_id)).stdout.splitlines()


def events(project, task_id):
    return project.sql("SELECT to_state, message FROM task_events WHERE task_id = %s ORDER BY id",
                       task_id)


def test_mpi_task_runs_its_ranks_on_two_hosts_of_whole_nodes(project):
    ranks = project.add_tasks("alice", "ranks", project.script("alice", "ranks", RANKS), [
        {"name": "ranks", "workflow": "mpi", "num_nodes": 2, "ranks_per_node": 2}])
    fails = project.add_tasks("alice", "fails", project.script("alice", "fails", FAILS), [
        {"name": "fails", "workflow": "mpi"}])
    project.wait(project.submit("alice", "-n", "2", "-t", "5", "--wf-filter", "mpi"))

    lines = sorted(ln.split() for ln in output(project, ranks[0]) if ln.startswith("rank "))
    assert [int(rank) for _, rank, _, _ in lines] == [0, 1, 2, 3]
    hosts = Counter(host for _, _, host, _ in lines)
    assert len(hosts) == 2 and set(hosts.values()) == {2}
    assert {cpus for *_, cpus in lines} == {"2"}  # whole nodes: every core of each node
    # A failed run says why, across hosts too: its exit code and the last line of its output.
    history = events(project, fails[0])
    assert history[-1]["to_state"] == "FAILED"
    [run_error] = [e["message"] for e in history if e["to_state"] == "RUN_ERROR"]
    assert run_error.startswith("exit 3: ") and "boom on node" in run_error


def test_a_site_with_shared_nodes_runs_the_tasks_that_fit(project):
    from importlib.resources import files

    default = (files("balsam_launcher") / "templates" / "slurm.sh").read_text()
    assert "#SBATCH --exclusive\n" in default
    project.sh("alice", 'mkdir -p -m 2750 "$BALSAM_PROJECT_DIR/job-templates"')
    project.write("alice", project.root / "job-templates" / "slurm-shared.sh",
                  default.replace("#SBATCH --exclusive\n", ""))
    app = project.script("alice", "ranks", RANKS)
    fits = project.add_tasks("alice", "ranks", app, [
        {"name": "fits", "workflow": "shared", "num_nodes": 2, "ranks_per_node": 1}])
    too_big = project.add_tasks("alice", "ranks", app, [
        {"name": "too-big", "workflow": "shared", "num_nodes": 1, "ranks_per_node": 2}])
    project.wait(project.submit("alice", "-n", "2", "-t", "5", "--wf-filter", "shared",
                                "--template", "slurm-shared.sh"))

    lines = [ln.split() for ln in output(project, fits[0]) if ln.startswith("rank ")]
    assert len({host for _, _, host, _ in lines}) == 2
    assert {cpus for *_, cpus in lines} == {"1"}  # the job owns one core of each node
    history = events(project, too_big[0])
    assert history[-1]["to_state"] == "FAILED"
    [refused] = [e["message"] for e in history if e["to_state"] == "RUN_ERROR"]
    assert refused.startswith(f"cannot start: task {too_big[0]} needs 2 CPUs on each node")
    assert "but this batch job owns 1 on node" in refused


def secrets(project):
    """Every user's database password for this project."""
    uuid = json.loads((project.root / "server-info").read_text())["uuid"]
    found = {}
    for user in ("alice", "bob"):
        path = Path(pwd.getpwnam(user).pw_dir) / ".balsam" / "credentials" / uuid
        found[user] = path.read_text().strip()
    assert all(len(p) >= 20 for p in found.values())
    return found


def processes_showing(words):
    """Processes whose arguments or environment hold any of ``words``."""
    seen = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (entry / part).read_bytes()
            except OSError:
                continue
            if any(w.encode() in data for w in words):
                seen.append(f"{entry.name} {part}: {data[:200]!r}")
    return seen


def files_showing(roots, words):
    seen = []
    for root in roots:
        for path in (p for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink()):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if any(w.encode() in data for w in words):
                seen.append(str(path))
    return seen


def test_two_users_batch_jobs_run_at_once_on_one_project(project):
    counts = project.root / "data" / "both.runs"
    ids = []
    for user in ("alice", "bob"):
        app = project.script(user, f"record-{user}")
        ids += project.add_tasks(user, f"record-{user}", app, [
            {"name": f"{user}{i}", "workflow": "both", "args": f"2 {counts}"} for i in range(6)])
    jobs = [project.submit("alice", "-n", "2", "-t", "5", "--job-mode", "serial",
                           "--wf-filter", "both"),
            project.submit("bob", "-n", "1", "-t", "5", "--job-mode", "serial",
                           "--wf-filter", "both")]
    passwords = list(secrets(project).values())
    while any(project.cluster.job_state(j.slurm_id) in ("PENDING", "RUNNING") for j in jobs):
        assert processes_showing(passwords) == []  # no password in arguments or environments
        time.sleep(1)
    project.wait(*jobs)

    runs = project.runs(counts)
    assert Counter(t for t, _ in runs) == Counter(ids)  # every task of both users, exactly once
    launchers = project.sql(
        "SELECT l.owner, l.hostname, extract(epoch FROM l.started_at) AS started, "
        "extract(epoch FROM l.ended_at) AS ended, count(e.id) AS runs "
        "FROM launchers l JOIN task_events e ON e.launcher_id = l.id AND e.to_state = 'RUNNING' "
        "WHERE l.batch_job_id = ANY(%s) GROUP BY l.id ORDER BY l.owner", [j.id for j in jobs])
    assert [launcher["owner"] for launcher in launchers] == ["alice", "bob"]
    assert all(launcher["runs"] > 0 for launcher in launchers)
    assert max(la["started"] for la in launchers) < min(la["ended"] for la in launchers)
    # nor in the job scripts, their output, the launchers' and servers' logs, Slurm's files
    assert files_showing([project.root, "/var/log/balsam-cluster",
                          "/var/lib/balsam-cluster"], passwords) == []


#: Where the server sees this session come from, and whether it is encrypted.
SEEN_FROM = """
from balsam.db import connect
from balsam.project import Project
with connect(Project.from_env()) as db:
    row = db.execute("SELECT host(inet_client_addr()) AS a, ssl FROM pg_stat_ssl "
                     "WHERE pid = pg_backend_pid()").fetchone()
print(row["a"], row["ssl"])
"""


def test_compute_nodes_reach_the_server_over_tls_only(project, cluster):
    socket_dir = project.root / ".pgsocket"
    assert any(socket_dir.iterdir())  # on the login node (and this machine) the socket is there
    for node in cluster.compute:
        assert cluster.run(node, ["ls", "-A", str(socket_dir)]).stdout == ""
        seen_from = project.python("bob", SEEN_FROM, node=node).stdout.strip()
        assert seen_from == f"{cluster.address(node)} True"  # TCP, with TLS
    assert project.python("bob", SEEN_FROM).stdout.strip() == "None False"  # login: the socket


def test_the_owner_never_starts_the_server_on_a_compute_node(project, cluster):
    def postmasters():
        data_dir = str(project.root / "balsamdb")
        return [p for p in processes_showing([data_dir])
                if "cmdline: b'/usr/lib/postgresql/" in p and "postgres\\x00-D" in p]

    project.sh("alice", "balsam which", node="node1")  # a batch job's activation
    assert json.loads((project.root / "server-info").read_text())["host"] == "login"
    assert len(postmasters()) == 1
    project.sh("alice", "balsam server stop")
    try:
        refused = project.sh("alice", "true", node="node1", check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"Error: the database server of {project.root} is not running on login; only its "
            f"owner (alice) can start it, with: source balsamactivate {project.root} on login"]
        assert postmasters() == []
    finally:
        project.sh("alice", "true")
    assert len(postmasters()) == 1


def test_a_user_without_a_password_is_refused_on_a_compute_node(project, cluster):
    project.sh("alice", "balsam server --add-user carol")
    env = project.env({"BALSAM_DB_PATH": str(project.root)})
    activate = cluster.run("node2", ["bash", "-c", ACTIVATE_ONLY], user="carol", env=env,
                           check=False)
    assert activate.returncode == 1
    [line] = activate.stderr.strip().splitlines()
    assert "carol" in line and "login" in line, line
    listing = cluster.run("node2", ["balsam", "ls"], user="carol", env=env, check=False)
    assert listing.returncode == 1
    [line] = listing.stderr.strip().splitlines()
    assert "carol" in line and "login" in line, line


ACTIVATE_ONLY = '. balsamactivate "$BALSAM_PROJECT_DIR"'
