"""balsam app, job, dep, ls, modify, rm and kill through the real CLI on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from psycopg import sql

from balsam import api
from balsam.models import JSON_MAX_DEPTH, json_depth
from balsam.plugins import get_plugin_manager
from balsam.states import State
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg

BALSAM = str(Path(sys.executable).parent / "balsam")


@pytest.fixture
def balsam(project):
    """``balsam(*args, input=None)`` -> click Result, run in the active test project."""
    cli = build_cli(get_plugin_manager())
    runner = CliRunner(env={"COLUMNS": "250"})

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), input=input, catch_exceptions=False)

    return run


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def error(result) -> str:
    """The one-line error of a failed command."""
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error: "), result.output
    return lines[-1]


COUNT = sql.SQL("SELECT count(*) AS n FROM {}")


def counts() -> dict[str, int]:
    conn = api.connection()
    return {t: conn.execute(COUNT.format(sql.Identifier(t))).fetchone()["n"]
            for t in ("apps", "tasks", "task_parents", "task_events")}


# --- apps ---------------------------------------------------------------------------------------


def test_app_add_list_modify_remove(balsam):
    assert "Added app sim" in ok(balsam("app", "--name", "sim", "--executable", "/bin/echo",
                                        "--description", "echo it", "--preprocess", "pre.sh"))
    listed = json.loads(ok(balsam("app", "ls", "--json")))
    assert [(a["name"], a["executable"], a["preprocess"], a["tasks"]) for a in listed] == \
        [("sim", "/bin/echo", "pre.sh", 0)]
    assert "echo it" in ok(balsam("ls", "apps"))
    assert "executable = /bin/cat" in ok(balsam("app", "modify", "sim", "executable", "/bin/cat"))
    assert api.get_app("sim").executable == "/bin/cat"
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim"))
    assert "used by 1 task(s)" in error(balsam("app", "rm", "sim"))
    assert "Removed app sim and its 1 task(s)" in ok(balsam("app", "rm", "sim", "--force"))
    assert counts()["apps"] == counts()["tasks"] == 0


def test_app_usage_errors(balsam):
    result = balsam("app", "--name", "x")
    assert result.exit_code == 2 and "needs --name and --executable" in result.output
    ok(balsam("app", "--name", "sim", "--exec", "/bin/echo"))
    before = counts()
    assert error(balsam("app", "--name", "sim", "--executable", "/bin/true")) == \
        "Error: app 'sim' already exists"
    assert error(balsam("app", "modify", "sim", "colour", "red")).startswith(
        "Error: unknown app field 'colour'")
    assert error(balsam("app", "rm", "nope")) == "Error: unknown app 'nope'"
    assert counts() == before


# --- tasks --------------------------------------------------------------------------------------


def test_job_with_every_option(balsam, project):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    out = ok(balsam("job", "--name", "run", "--workflow", "wf", "--app", "sim", "--args", "-n 3",
                    "--wall-time-minutes", "30", "--num-nodes", "4", "--ranks-per-node", "8",
                    "--threads-per-rank", "2", "--threads-per-core", "2", "--cpu-affinity",
                    "depth", "--node-packing-count", "2", "--env", "A=1", "--env", "B=two words",
                    "--data", '{"x": 1}', "--input-files", "*.dat", "--post-error-handler",
                    "--post-timeout-handler", "--no-auto-timeout-retry", "--description", "d"))
    task = api.get_tasks()[0]
    assert out.strip() == f"Added task {task.id} (READY) in data/wf/run_{task.id}"
    assert (task.args, task.wall_time_minutes, task.num_nodes, task.ranks_per_node,
            task.threads_per_rank, task.threads_per_core, task.cpu_affinity,
            task.node_packing_count, task.input_files, task.description) == \
        ("-n 3", 30, 4, 8, 2, 2, "depth", 2, "*.dat", "d")
    assert task.environ_vars == {"A": "1", "B": "two words"} and task.data == {"x": 1}
    assert task.post_error_handler and task.post_timeout_handler
    assert not task.auto_timeout_retry
    legacy = json.loads(ok(balsam("job", "--name", "old", "--workflow", "wf", "--application",
                                  "sim", "--wall-minutes", "5", "--workdir", "/scratch/old",
                                  "--parent", str(task.id), "--yes", "--json")))
    assert (legacy["wall_time_minutes"], legacy["workdir"], legacy["state"], legacy["app"]) == \
        (5, "/scratch/old", "AWAITING_PARENTS", "sim")


@pytest.mark.parametrize(("args", "message"), [
    (["--app", "ghost"], "Error: unknown app 'ghost'"),
    (["--num-nodes", "-2"], "Error: num_nodes must be between 1 and 100,000, got -2"),
    (["--ranks-per-node", "0"], "Error: ranks_per_node must be between 1 and 10,000, got 0"),
    (["--num-nodes", "1000000000"],
     "Error: num_nodes must be between 1 and 100,000, got 1,000,000,000"),
    (["--num-nodes", "1e9"], "Error: Invalid value for '--num-nodes': '1e9' is not a valid"),
    (["--threads-per-core", "65"], "Error: threads_per_core must be between 1 and 64, got 65"),
    (["--wall-time-minutes", "600000"], "Error: Invalid value for '--wall-time' / "
                                        "'--wall-time-minutes' / '--wall-minutes': invalid wall "
                                        "time '600000': it must be at most a year"),
    (["--args", "'unbalanced"], "Error: args \"'unbalanced\" cannot be split into arguments "
                                "(No closing quotation): check its quotes"),
    (["--name", "n" * 10_000], "Error: name is 10,000 characters long; the limit is 256"),
    (["--workflow", "w\x1b[31m"], "Error: workflow 'w\\x1b[31m' may not contain control"),
    (["--description", "d" * 65_537], "Error: description is 65,537 bytes long; the limit is"),
    (["--data", '{"d": ' + "[" * 900 + "]" * 900 + "}"],
     "Error: data is nested more than 32 levels deep"),
    (["--data", '{"d": ' + "[" * 100_000 + "]" * 100_000 + "}"],
     "Error: data is nested more than 32 levels deep"),
    (["--data", '{"a": "' + "x" * (1 << 20) + '"}'], "Error: data is 1,048,585 bytes as JSON; "
                                                    "the limit is 1,048,576 (1 MiB)"),
    (["--data", "{not json"], "Error: data is not valid JSON"),
    (["--data", "3"], "Error: data must be a JSON object, got int"),
    (["--env", "NOVALUE"], "Error: environment variable 'NOVALUE' must look like NAME=VALUE"),
    (["--parent", "999"], "Error: no parent task 999"),
    (["--workflow", "a/b"], "Error: workflow 'a/b' may not contain '/'"),
])
def test_bad_job_input_is_one_line_and_writes_nothing(balsam, args, message):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    before = counts()
    base = {"--name": "x", "--workflow": "w", "--app": "sim"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    result = balsam("job", *[x for pair in base.items() for x in pair])
    assert error(result).startswith(message)
    assert counts() == before


def test_bad_references_and_names(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim"))
    before = counts()
    assert error(balsam("ls", "--state", "DONE")).startswith("Error: invalid state 'DONE'")
    assert error(balsam("modify", "42", "num_nodes", "2")) == "Error: no task 42"
    assert error(balsam("modify", "1", "state", "sleeping")).startswith(
        "Error: invalid state 'sleeping'")
    assert error(balsam("modify", "1", "num_nodes", "-3")) == \
        "Error: num_nodes must be between 1 and 100,000, got -3"
    assert error(balsam("dep", "1", "42")) == "Error: no task 42"
    assert error(balsam("kill", "42", "43")) == "Error: no tasks 42, 43"
    assert error(balsam("ls", "--history", "42")) == "Error: no task 42"
    assert error(balsam("rm", "42")) == "Error: no task 42"
    assert counts() == before


def test_dependencies_tree_and_why_tasks_wait(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ids = [api.add_task("sim", name=n, workflow="w").id for n in ("prep", "sim", "post")]
    prep, sim, post = ids
    assert f"Task {sim} depends on task {prep} (AWAITING_PARENTS)" in ok(balsam("dep", str(prep),
                                                                               str(sim)))
    ok(balsam("dep", str(sim), str(post)))
    assert error(balsam("dep", str(post), str(prep))) == (
        f"Error: dependency {post} -> {prep} would create a cycle: "
        f"{post} -> {prep} -> {sim} -> {post}")
    api.set_state([prep], "FAILED")
    table = ok(balsam("ls", "--workflow", "w"))
    assert f"parent {prep} is FAILED" in table and f"parent {sim} is FAILED" in table
    ok(balsam("modify", str(prep), "state", "READY"))  # they wait for it again
    table = ok(balsam("ls", "--workflow", "w"))
    assert f"waiting for parent {prep} (READY)" in table
    tree = ok(balsam("ls", "--tree")).splitlines()
    depth = {name: next(len(ln) - len(ln.lstrip("│├└─ ")) for ln in tree if f" {name} [" in ln)
             for name in ("prep", "sim", "post")}
    assert depth["prep"] < depth["sim"] < depth["post"]
    shape = json.loads(ok(balsam("ls", "--tree", "--json")))
    assert shape["edges"] == [[prep, sim], [sim, post]]
    assert "Task 3 no longer depends on task 2 (READY)" in ok(balsam("dep", "--remove", "2", "3"))


def test_ls_filters_limit_counts_and_json(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    api.add_tasks([{"app": "sim", "name": f"t{i}", "workflow": "big"} for i in range(120)]
                  + [{"app": "sim", "name": "lonely", "workflow": "small"}])
    api.kill([1, 2])
    first = ok(balsam("ls"))
    assert "(first 100 shown; more match" in first and " t99 " in first and " t100 " not in first
    assert len(json.loads(ok(balsam("ls", "--limit", "0", "--json")))) == 121
    assert [t["name"] for t in json.loads(ok(balsam("ls", "--wf", "small", "--json")))] == \
        ["lonely"]
    assert [t["id"] for t in json.loads(ok(balsam("ls", "--id", "5", "--id", "7", "--json")))] \
        == [5, 7]
    assert len(json.loads(ok(balsam("ls", "--name", "t11", "--json")))) == 11
    assert len(json.loads(ok(balsam("ls", "--state", "user_killed", "--json")))) == 2
    assert json.loads(ok(balsam("ls", "--by-states", "--json"))) == {"READY": 119,
                                                                     "USER_KILLED": 2}
    summary = ok(balsam("ls", "--by-states", "--workflow", "big"))
    assert "READY" in summary and "118" in summary and "total" in summary and "120" in summary
    wide = ok(balsam("ls", "--wide", "--id", "3"))
    assert "ranks/node" in wide and "data/big/t2_3" in wide
    workflows = json.loads(ok(balsam("ls", "wf", "--json")))
    assert workflows == {"big": {"READY": 118, "USER_KILLED": 2}, "small": {"READY": 1}}
    assert json.loads(ok(balsam("ls", "workflows", "--json"))) == workflows  # spelled out
    assert error(balsam("ls", "--limit", "-1")).startswith("Error: --limit must be 0")


def test_modify_and_history(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim"))
    assert "num_nodes = 4" in ok(balsam("modify", "1", "num-nodes", "4"))
    assert error(balsam("modify", "1", "state", "RUNNING")) == \
        "Error: task 1: READY -> RUNNING is not an allowed transition"
    ok(balsam("modify", "1", "state", "USER_KILLED", "-m", "wrong input"))
    ok(balsam("modify", "1", "state", "ready"))
    assert api.get_task(1).state == State.READY and api.get_task(1).num_nodes == 4
    events = json.loads(ok(balsam("ls", "--history", "1", "--json")))
    assert [(e["from_state"], e["to_state"], e["message"]) for e in events] == [
        (None, "READY", ""), ("READY", "USER_KILLED", "wrong input"),
        ("USER_KILLED", "READY", "")]
    table = ok(balsam("ls", "--history", "1"))
    assert "wrong input" in table and "USER_KILLED" in table and "task 1" in table


def test_rm_asks_before_removing_several(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ids = api.add_tasks([{"app": "sim", "workflow": "w"}] * 3 + [{"app": "sim"}])
    result = balsam("rm", "--workflow", "w", input="n\n")
    assert result.exit_code == 1 and "Remove 3 tasks" in result.output
    assert counts()["tasks"] == 4
    assert "Removed 3 task(s)" in ok(balsam("rm", "--workflow", "w", input="y\n"))
    assert "Removed 1 task(s)" in ok(balsam("rm", str(ids[3])))
    assert "No task matches" in ok(balsam("rm", "--state", "READY"))
    assert balsam("rm").exit_code == 2
    api.add_tasks([{"app": "sim"}] * 2)
    assert "Removed 2 task(s)" in ok(balsam("rm", "jobs", "--all", "--force"))
    assert "Removed app sim" in ok(balsam("rm", "apps", "--all", "--force"))
    assert counts() == {"apps": 0, "tasks": 0, "task_parents": 0, "task_events": 6}  # kept


def test_rm_keeps_waiting_children_unless_recursive(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    parent = api.add_task("sim")
    child = api.add_task("sim", parents=[parent])
    assert error(balsam("rm", str(parent.id))) == (
        f"Error: other tasks wait for these ({child.id} waits for {parent.id}); "
        "remove them too (recursive) or kill")
    assert "Removed 2 task(s)" in ok(balsam("rm", str(parent.id), "--recursive", "--yes"))


@pytest.mark.parametrize(("args", "said"), [
    (["ls", "--tree", "--by-states"], "--by-states and --tree are two different listings"),
    (["ls", "--by-cause", "--by-states"], "--by-states and --by-cause are two different"),
    (["ls", "apps", "--state", "READY"], "--state is an option of the task listing, not of "
                                         "'ls apps'"),
    (["ls", "launchers", "--tree"], "--tree is an option of the task listing"),
    (["ls", "wf", "--by-cause"], "--by-cause is an option of the task listing"),
    (["ls", "--json", "-o", "tsv"], "--json and --output tsv ask for two formats: give one"),
    (["queue", "--now"], "--now says how to cancel: give the jobs with --kill ID"),
    (["log", "--list", "--launcher", "5"], "--list lists the logs: --launcher goes with showing"),
    (["server", "--add-user", "bob", "--drop-user", "bob"], "bob is both added and dropped"),
])
def test_options_that_contradict_each_other_are_refused(balsam, args, said):
    result = balsam(*args)
    assert result.exit_code == 2 and said in error(result), result.output


def test_kill(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    top = api.add_task("sim", workflow="w")
    below = api.add_task("sim", workflow="w", parents=[top])
    other = api.add_task("sim", workflow="x")
    assert f"Killed 1 task(s): {other.id}" in ok(balsam("kill", str(other.id)))
    assert api.get_task(other).state == State.USER_KILLED
    assert error(balsam("kill", str(other.id))).startswith(
        "Error: nothing to kill: every task has already ended")
    result = balsam("kill", str(top.id), "--recursive", input="n\n")
    assert result.exit_code == 1 and "Kill 2 tasks" in result.output
    assert "Killed 2 task(s)" in ok(balsam("kill", str(top.id), "--recursive", "--yes"))
    assert api.get_task(below).state == State.USER_KILLED
    assert balsam("kill").exit_code == 2


def test_retry_says_why_a_task_does_not_run_again(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    top = api.add_task("sim", workflow="w")
    below = api.add_task("sim", workflow="w", parents=[top])
    lone = api.add_task("sim", workflow="x")
    api.kill([top.id])
    api.set_state([lone.id], "FAILED", message="exit 1")
    assert api.get_task(below).state == State.FAILED  # its parent was killed
    assert error(balsam("retry", str(top.id), "-y")) == (
        f"Error: nothing to retry: {top.id} (USER_KILLED); retry resets FAILED, RUN_ERROR, "
        "RUN_TIMEOUT tasks that no launcher holds")
    assert error(balsam("retry", str(below.id), "-y")) == (
        "Error: 1 task(s) failed again at once, since a parent failed or was killed (retry the "
        f"parents first): {below.id}")
    both = balsam("retry", str(lone.id), str(below.id), "-y")
    assert both.exit_code == 0 and both.stdout == f"Retried 1 task(s): {lone.id}\n"
    assert "1 task(s) failed again at once" in both.stderr
    assert (api.get_task(lone).state, api.get_task(below).state) == (State.READY, State.FAILED)


def test_the_installed_command_in_a_subprocess(project):
    env = {**os.environ, "COLUMNS": "200"}

    def run(*args: str) -> str:
        proc = subprocess.run([BALSAM, *args], env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    run("app", "--name", "sim", "--executable", "/bin/echo")
    run("job", "--name", "a", "--workflow", "w", "--app", "sim", "--args", "hi")
    tasks = json.loads(run("ls", "--json"))
    assert [(t["name"], t["state"], t["args"]) for t in tasks] == [("a", "READY", "hi")]
    bad = subprocess.run([BALSAM, "job", "--name", "b", "--workflow", "w", "--app", "nope"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: unknown app 'nope'"


@pytest.mark.parametrize(("args", "message"), [
    (["args", "a 'b"], "Error: args \"a 'b\" cannot be split into arguments (No closing "
                       "quotation): check its quotes"),
    (["name", "x" * 257], "Error: name is 257 characters long; the limit is 256"),
    (["num-nodes", "100001"], "Error: num_nodes must be between 1 and 100,000, got 100,001"),
    (["data", "{" + '"a":{' * 40 + "}" * 41], "Error: data is nested more than 32 levels deep"),
    (["env", "A='open"], "Error: cannot parse environment \"A='open\": No closing quotation"),
])
def test_bad_modify_input_is_one_line_and_changes_nothing(balsam, args, message):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim", "--args", "-v"))
    before = (counts(), api.get_task(1))
    assert error(balsam("modify", "1", *args)) == message
    assert (counts(), api.get_task(1)) == before


def test_unicode_names_and_args_are_fine(balsam):
    ok(balsam("app", "--name", "模拟", "--executable", "/bin/echo"))
    name = "計算-ü" * 36  # 216 characters, 540 bytes
    ok(balsam("job", "--name", name, "--workflow", "wf", "--app", "模拟", "--args", "'é ñ' 😀"))
    task = api.get_task(1)
    assert (task.name, task.args, task.app_name) == (name, "'é ñ' 😀", "模拟")


def test_history_shows_who_changed_what_it_runs_and_survives_rm(balsam):
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim", "--args", "-v"))
    ok(balsam("modify", "1", "args", "--quiet"))
    ok(balsam("rm", "1"))
    events = json.loads(ok(balsam("ls", "--history", "1", "--json")))
    assert [e["to_state"] for e in events] == ["READY"]
    changes = json.loads(ok(balsam("ls", "--changes", "1", "--json")))
    assert [(c["field"], c["old_value"], c["new_value"]) for c in changes] == [
        ("args", "-v", "--quiet"), ("deleted", changes[1]["old_value"], None)]
    assert json.loads(changes[1]["old_value"])["args"] == "--quiet"
    table = ok(balsam("ls", "--history", "1", "-o", "plain"))
    assert "READY" in table and "--quiet" in table and "deleted" in table


def test_ls_reads_a_deep_value_stored_before_the_bounds(balsam):
    """A 900-deep data value stored before migration 0012 no longer crashes ls --json."""
    ok(balsam("app", "--name", "sim", "--executable", "/bin/echo"))
    ok(balsam("job", "--name", "a", "--workflow", "w", "--app", "sim"))
    conn = api.connection()
    with conn.transaction():  # as the schema's owner could, to write what came before 0012
        conn.execute("ALTER TABLE tasks DISABLE TRIGGER tasks_json_update")
        conn.execute("UPDATE tasks SET data = %s::jsonb", ['{"d": ' + "[" * 900 + "]" * 900 + "}"])
        conn.execute("ALTER TABLE tasks ENABLE TRIGGER tasks_json_update")
    listed = json.loads(ok(balsam("ls", "--json")))
    assert json_depth(listed[0]["data"]) == JSON_MAX_DEPTH + 1  # read and shown, not crashed on
    assert "a" in ok(balsam("ls"))
    assert api.get_task(1).data == {"balsam_unreadable": "nested more than 32 levels deep"}
