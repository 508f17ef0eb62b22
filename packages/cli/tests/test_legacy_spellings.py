"""Legacy Balsam 0.5's command lines through the real CLI on a real database (issue 15, §3 and
§5): each spelling a legacy user types works, or says in one line what to type instead."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.plugins import get_plugin_manager
from balsam.project import remember_project
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg

BIN = Path(sys.executable).parent
#: The scripts of this checkout (an editable install copies them only when installed).
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture
def balsam(project, monkeypatch):
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID", "BALSAM_LS_FIELDS", "BALSAM_OUTPUT"):
        monkeypatch.delenv(name, raising=False)
    api.add_app("sim", "/bin/true")
    cli = build_cli(get_plugin_manager())
    runner = CliRunner(env={"COLUMNS": "250"})

    def run(*args: str, ok: bool = True, env: dict[str, str] | None = None) -> str:
        result = runner.invoke(cli, list(args), catch_exceptions=False, env=env)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    return run


def job(balsam, name: str, *extra: str) -> int:
    out = balsam("job", "--name", name, "--workflow", "wf", "--app", "sim", *extra)
    return int(out.split()[2])


def test_job_options_as_legacy_wrote_them(balsam):
    tid = job(balsam, "legacy", "--args", "-n", "10", "--mode", "fast", "--description", "a",
              "long", "run", "--post_handle_error", "--post_handle_timeout",
              "--disable_auto_timeout_retry", "--env", "A=1:B=two", "C=3", "--wall-minutes", "5")
    task = api.get_task(tid)
    assert task.args == "-n 10 --mode fast"  # every word up to the next option of balsam job
    assert task.description == "a long run"
    assert (task.post_error_handler, task.post_timeout_handler, task.auto_timeout_retry) == (
        True, True, False)
    assert task.environ_vars == {"A": "1", "B": "two", "C": "3"}
    assert task.input_files == "*"  # legacy's default: every file of the parents
    assert task.wall_time_minutes == 5
    balsam("job", "--app", "sim", "--workflow", "swept", "--name", "s{i}", "--sweep", "i=1:2")
    assert {t.input_files for t in api.get_tasks(workflow="swept")} == {"*"}  # every form
    quoted = api.get_task(job(balsam, "quoted", "--args", "-n 10 'two words'"))
    assert quoted.args == "-n 10 'two words'"  # one quoted word stays as it was
    balsam("modify", str(tid), "environ_vars", "X=1:PATH=/a:/b")
    assert api.get_task(tid).environ_vars == {"X": "1", "PATH": "/a:/b"}


def test_staging_options(balsam, tmp_path):
    tid = job(balsam, "staged", "--url-in", f"local:{tmp_path}/in", "--url-out",
              "rsync://dtn.site.org/scratch/out", "--stage-out-files", "*.h5 log.txt")
    task = api.get_task(tid)
    assert (task.stage_in_url, task.stage_out_url, task.stage_out_files) == (
        f"local:{tmp_path}/in", "rsync://dtn.site.org/scratch/out", "*.h5 log.txt")
    wide = balsam("ls", "--wide", "--id", str(tid))
    assert f"local:{tmp_path}/in" in wide and "rsync://dtn.site.org/scratch/out" in wide
    assert balsam("ls", "--id", str(tid), "--fields", "stage_out_files", "--no-header",
                  "-o", "tsv").strip() == "*.h5 log.txt"
    for option, value, error in (
            ("--url-out", "gsiftp://dtn/x", "Error: --url-out: no transfer method for gsiftp:// "
                                            "URLs (installed: file, rsync, scp)"),
            ("--url-in", "data/in", "Error: --url-in 'data/in' is not a URL")):
        out = balsam("job", "--name", "bad", "--workflow", "wf", "--app", "sim", option, value,
                     ok=False)
        assert out.strip().startswith(error) and len(out.strip().splitlines()) == 1
    assert api.task_ids(name="bad") == []


def test_killjob_rm_and_modify_apps(balsam):
    a, b, c, d = (job(balsam, n) for n in ("a", "b", "c", "d"))
    assert balsam("killjob", "--id", str(a)).strip() == f"Killed 1 task(s): {a}"
    assert api.get_task(a).state == "USER_KILLED"
    assert balsam("rm", "--id", str(b)).strip() == f"Removed 1 task(s): {b}"
    assert balsam("rm", "jobs", "--id", str(c)).strip() == f"Removed 1 task(s): {c}"
    job(balsam, "e", "--workflow", "other")
    balsam("rm", "--wf-filter", "other", "-y")
    assert api.task_ids() == [a, d]
    balsam("modify", "--type", "apps", "sim", "executable", "/bin/echo")
    assert api.get_app("sim").executable == "/bin/echo"
    balsam("modify", "--type", "apps", str(api.get_app("sim").id), "description", "by id")
    assert api.get_app("sim").description == "by id"
    api.add_app("spare", "/bin/true")
    balsam("rm", "apps", "--name", "spare")
    assert [app.name for app, _ in api.list_apps()] == ["sim"]


def test_python_apps_are_run_with_the_interpreter(balsam, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    balsam("app", "--name", "py", "--executable", "sim.py --fast", "--postprocess", "post.py")
    found = api.get_app("py")
    assert found.executable == f"{sys.executable} {tmp_path}/sim.py --fast"
    assert found.postprocess == f"{sys.executable} {tmp_path}/post.py"


def test_ls_as_legacy_wrote_it(balsam, monkeypatch):
    a = job(balsam, "first", "--num-nodes", "3")
    b = job(balsam, "second")
    api.kill([b])
    plain, more = balsam("ls"), balsam("ls", "--fields", "+num_nodes,args")
    monkeypatch.setenv("BALSAM_LS_FIELDS", "num_nodes:args")
    assert balsam("ls") == more != plain
    monkeypatch.delenv("BALSAM_LS_FIELDS")
    every = balsam("ls", "--history")  # legacy: the history of every task listed
    assert f"task {a} first [READY]" in every and f"task {b} second [USER_KILLED]" in every
    assert every.count("to_state") == 2
    assert balsam("ls", "--hist") == every  # an unambiguous abbreviation
    one = balsam("ls", "--id", str(b), "--history")
    assert f"task {b} second" in one and f"task {a} " not in one
    assert balsam("ls", "--history", str(b)).count("USER_KILLED") == 1  # the ID form
    assert "USER_KILLED" in balsam("ls", "--state", "USER_KILLED", "--hist")
    assert balsam("ls", "apps", "--v") == balsam("ls", "apps", "--verbose")
    assert "sim" in balsam("ls", "apps", "--v")
    assert balsam("ls", "--wi") == balsam("ls", "--wide")
    ambiguous = balsam("ls", "--by", ok=False)  # --by-states or --by-cause: not guessed
    assert "No such option '--by'" in ambiguous


def test_version_and_which(balsam, project):
    remember_project(project)  # as balsam init and balsamactivate do
    out = balsam("-V")
    assert out.startswith("balsam ") and "balsam-cli" in out
    shown = balsam("which", "--name", project.root.parent.name)
    assert str(project.root) in shown
    error = balsam("which", "--name", "no-such-project", ok=False)
    assert "--name 'no-such-project' matches 0 of the projects you have used" in error


def test_server_legacy_flags(balsam):
    assert balsam("server", "--list-active-connections") == balsam("server", "connections")
    # an external server here: start refuses, and --connect is start
    assert balsam("server", "--connect", ok=False) == balsam("server", "start", ok=False)
    error = balsam("server", "--reset", ok=False).strip()
    assert error.startswith("Error: --reset is not needed here: 'balsam server start' recovers")
    assert len(error.splitlines()) == 1


def test_bcd_from_balsamactivate(balsam, project):
    tid = job(balsam, "here")
    workdir = project.root / api.get_task(tid).workdir
    workdir.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    script = (f'. {SCRIPTS}/balsamactivate {project.root} 2>/dev/null || exit 9\n'
              f'bcd {tid} && pwd\n'
              'bcd 999999; echo "rc=$?"\n'
              f'. {SCRIPTS}/balsamdeactivate; type bcd >/dev/null 2>&1 || echo "bcd gone"\n')
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [str(workdir), "rc=1", "bcd gone"]
    assert "bcd: no task 999999" in done.stderr
