"""Trust in claims, tried as an attacker would with real UNIX users: alice owns the project, bob is
a member. alice's launcher runs bob's tasks only once alice trusts bob, and stops when she no
longer does; bob rewriting alice's app or task gets it refused, not run as alice; bob's own
launcher runs his own; collaborators who trust each other share one pool. Every real run is
counted: the tasks append their name and the user that ran them to a file."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from balsam_testing.pg import ACTIVATE, balsam_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

#: The task: appends "NAME USER" to the runs file.
APPEND = '#!/bin/sh\necho "$1 $(id -un)" >> "{runs}"\n'
#: What bob would have alice run.
EVIL = '#!/bin/sh\necho "EVIL $(id -un)" >> "{runs}"\n'


class Project:
    """alice's project in a shared directory, with helpers acting as its users."""

    def __init__(self, run_as: Callable[..., object], where: Path) -> None:
        self.run_as, self.where = run_as, where
        self.root = where / "p"
        self.runs = where / "runs.log"
        self.launchers: list[tuple[str, str]] = []

    def balsam(self, user: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return balsam_as(self.run_as, user, self.root, *args, check=check)

    def job(self, user: str, name: str, *, app: str = "append", workflow: str = "W") -> int:
        out = self.balsam(user, "job", "--name", name, "--workflow", workflow, "--app", app,
                          "--args", name, "--json").stdout
        return int(json.loads(out)["id"])

    def tasks(self) -> dict[str, dict]:  # type: ignore[type-arg]
        rows = json.loads(self.balsam("alice", "ls", "--all", "--json").stdout)
        return {r["name"]: r for r in rows}

    def trusted_by_launchers(self) -> list[str]:
        """What each launcher last said it runs (its log's last "runs the tasks of" line)."""
        said = []
        for log in sorted(self.root.glob("log/launcher_*.log")):
            lines = [ln for ln in log.read_text().splitlines() if "runs the tasks of: " in ln]
            if lines:
                said.append(lines[-1].split("runs the tasks of: ", 1)[1].strip())
        return said

    def ran(self) -> Counter[str]:
        """How many times each "NAME USER" ran."""
        return Counter(self.runs.read_text().splitlines())

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                logs = [f.read_text()[-3000:] for f in sorted(self.root.glob("log/launcher_*"))]
                pytest.fail(f"timed out waiting for {what}: {self.tasks()}\n" + "\n".join(logs))
            time.sleep(0.3)

    def finished(self, *names: str) -> bool:
        tasks = self.tasks()
        return all(tasks[n]["state"] == "JOB_FINISHED" for n in names)

    def start_launcher(self, user: str, *args: str) -> str:
        """A launcher of ``user`` in the background (serial mode, workflow W, quick polls); its
        pid."""
        log = self.where / f"launcher-{user}-{len(self.launchers)}.out"
        script = (f'{ACTIVATE} || exit 1; setsid balsam launcher --job-mode serial '
                  f'--wf-filter W --poll-interval 0.3 "$@" > "$LOG" 2>&1 < /dev/null & echo $!')
        proc = self.run_as(user, ["bash", "-c", script, "launcher", *args], cwd=self.where,
                           env={"P": str(self.root), "LOG": str(log)})
        pid = proc.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        self.launchers.append((user, pid))
        return pid

    def stop_launchers(self) -> None:
        for user, pid in self.launchers:
            self.run_as(user, ["kill", "-TERM", pid], check=False)
        for user, pid in self.launchers:
            for _ in range(100):
                if self.run_as(user, ["kill", "-0", pid], check=False).returncode:  # type: ignore[attr-defined]
                    break
                time.sleep(0.1)
        self.launchers.clear()


@pytest.fixture
def project(run_as, shared_dir) -> Iterator[Project]:
    p = Project(run_as, shared_dir)
    run_as("alice", ["balsam", "init", "p"], cwd=shared_dir)
    run_as("alice", ["bash", "-c", f"{ACTIVATE} && balsam server --add-user bob"],
           cwd=shared_dir, env={"P": str(p.root)})
    p.runs.touch()
    os.chmod(p.runs, 0o666)
    for name, text in (("append.sh", APPEND), ("evil.sh", EVIL)):
        path = shared_dir / name
        path.write_text(text.format(runs=p.runs))
        os.chmod(path, 0o755)  # root's: nobody rewrites what the tasks run
    p.balsam("alice", "app", "--name", "append", "--executable", str(shared_dir / "append.sh"))
    try:
        yield p
    finally:
        p.stop_launchers()


def test_alices_launcher_runs_only_whom_alice_trusts(project):
    p = project
    p.job("alice", "a1")
    p.job("bob", "b1")  # bob's task with alice's app
    p.start_launcher("alice")
    p.wait("a1", lambda: p.finished("a1"))
    p.job("alice", "a2")  # made after b1: once it ran, b1 had its chances
    p.wait("a2", lambda: p.finished("a2"))
    tasks = p.tasks()
    assert tasks["b1"]["state"] == "READY"
    assert tasks["b1"]["info"] == "no running launcher trusts bob"
    assert p.ran() == {"a1 alice": 1, "a2 alice": 1}

    # alice trusts bob: within a poll her launcher runs his task.
    added = p.balsam("alice", "trust", "add", "bob").stdout
    assert "Your launchers now run what bob owns or changes" in added
    p.wait("b1 run by alice's launcher", lambda: p.finished("b1"))

    # alice withdraws it: from her launcher's next poll on (0.3 s here), bob's new tasks wait.
    p.balsam("alice", "trust", "rm", "bob")
    p.wait("alice's launcher to read her trust again",
           lambda: p.trusted_by_launchers() == ["alice, balsam_admin"])
    p.job("bob", "b2")
    p.job("alice", "a3")
    p.wait("a3", lambda: p.finished("a3"))
    assert p.tasks()["b2"]["state"] == "READY"

    # bob rewrites the arguments of alice's task (made where her launcher does not look, then
    # moved into its workflow by alice): refused, and said so.
    a4 = p.job("alice", "a4", workflow="hold")
    p.balsam("bob", "modify", str(a4), "args", "by-bob")
    p.balsam("alice", "modify", str(a4), "workflow", "W")
    # bob rewrites the executable of alice's app: her new task with it is refused too.
    p.balsam("bob", "app", "modify", "append", "executable", str(p.where / "evil.sh"))
    p.job("alice", "a5")
    p.balsam("alice", "app", "--name", "mine", "--executable", str(p.where / "append.sh"))
    p.job("alice", "a6", app="mine")
    p.wait("a6", lambda: p.finished("a6"))
    tasks = p.tasks()
    assert tasks["a4"]["state"] == tasks["a5"]["state"] == "READY"
    assert tasks["a4"]["info"] == ("changed by bob; its app append was changed by bob: no "
                                   "running launcher trusts bob")
    assert tasks["a5"]["info"] == ("its app append was changed by bob: no running launcher "
                                   "trusts bob")
    history = json.loads(p.balsam("alice", "ls", "--changes", str(a4), "--json").stdout)
    assert [(c["field"], c["changed_by"]) for c in history] == [("args", "bob")]

    # alice puts her app and her task right: her launcher runs them, as she wrote them.
    p.balsam("alice", "app", "modify", "append", "executable", str(p.where / "append.sh"))
    p.balsam("alice", "modify", str(a4), "args", "a4")
    p.wait("a4 and a5", lambda: p.finished("a4", "a5"))
    assert p.ran() == {f"{n} alice": 1 for n in ("a1", "a2", "b1", "a3", "a6", "a4", "a5")}
    assert p.tasks()["b2"]["state"] == "READY"

    # A launcher started with --trust bob runs bob's task without a trust row.
    p.stop_launchers()
    p.start_launcher("alice", "--trust", "bob", "--consume-all")
    p.wait("b2", lambda: p.finished("b2"))
    assert p.ran()["b2 alice"] == 1 and "EVIL" not in p.runs.read_text()


def test_own_launchers_and_a_shared_pool(project):
    p = project
    p.balsam("bob", "app", "--name", "bobs", "--executable", str(p.where / "append.sh"))
    p.job("alice", "a1")
    p.job("bob", "b1", app="bobs")
    p.job("bob", "b2")  # bob's task with alice's app: bob's launcher must trust alice for it
    p.start_launcher("bob", "--consume-all")
    p.wait("b1", lambda: p.finished("b1"))
    assert p.ran() == {"b1 bob": 1}
    tasks = p.tasks()
    assert tasks["a1"]["state"] == tasks["b2"]["state"] == "READY"

    # Collaborators who trust each other: each launcher runs both users' tasks...
    p.balsam("alice", "trust", "add", "bob")
    p.balsam("bob", "trust", "add", "alice")
    p.start_launcher("bob", "--consume-all")
    p.wait("bob's launcher to run alice's task", lambda: p.finished("a1", "b2"))
    assert p.ran() == {"b1 bob": 1, "a1 bob": 1, "b2 bob": 1}
    p.job("alice", "a2")
    p.job("bob", "b3", app="bobs")
    p.start_launcher("alice", "--consume-all")
    p.wait("alice's launcher to run bob's task", lambda: p.finished("a2", "b3"))
    assert p.ran()["a2 alice"] == p.ran()["b3 alice"] == 1
    p.stop_launchers()

    # ... and, running together, they share one pool: each task runs once.
    names = [f"{who[0]}{i}" for i in range(10, 30) for who in ("alice", "bob")]
    for user, app in (("alice", "append"), ("bob", "bobs")):
        lines = "".join(json.dumps({"name": n, "args": n}) + "\n" for n in names
                        if n[0] == user[0])
        p.run_as(user, ["balsam", "job", "--from", "-", "--workflow", "W", "--app", app],
                 env={"BALSAM_DB_PATH": str(p.root)}, input=lines)
    p.start_launcher("alice", "--consume-all")
    p.start_launcher("bob", "--consume-all")
    p.wait("the pool", lambda: p.finished(*names), timeout=120)
    ran = p.ran()
    assert all(ran[f"{n} alice"] + ran[f"{n} bob"] == 1 for n in names), ran
    assert sum(ran.values()) == 5 + len(names)
