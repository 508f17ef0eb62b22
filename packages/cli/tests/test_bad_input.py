"""No tracebacks: every command fed bad input answers with one line on stderr, a non-zero exit
status, nothing on stdout, and changes nothing (real processes, real database)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from psycopg import sql

from balsam import api

pytestmark = pytest.mark.pg

BALSAM = str(Path(sys.executable).parent / "balsam")
HUGE = "9" * 30

CASES = [
    ["init", "{tmp}/new", "--dsn", "garbage"],
    ["init", "{tmp}/no/such/parent/x"],
    ["init", "{tmp}"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--num-nodes", "abc"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--num-nodes", HUGE],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--wall-time", "soon"],
    ["job", "--name", "ü/../x", "--workflow", "w", "--app", "sim"],
    ["job", "--name", "a", "--workflow", "w", "--app", "nope"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--data", "[1, 2"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--env", "1X=2"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--parent", HUGE],
    ["job", "--app", "sim", "--workflow", "w", "--from", "{tmp}/missing.jsonl"],
    ["job", "--app", "sim", "--workflow", "w", "--from", "{tmp}/bad.jsonl"],
    ["job", "--app", "sim", "--workflow", "w", "--from", "{tmp}/binary.csv"],
    ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=1:10:0"],
    ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=1:20000000"],
    ["job", "--app", "sim", "--workflow", "w", "--name", "t{j}", "--sweep", "i=1:3"],
    ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=1.5:3"],
    ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=@/dev/zero"],
    ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=@{tmp}/binary.csv"],
    ["job", "--app", "sim", "--workflow", "w", "--from", "/dev/zero"],
    ["job", "--app", "sim", "--workflow", "w", "--from", "{tmp}/scalar.json"],
    ["job", "--app", "sim", "--workflow", "w", "--from", "{tmp}/array.json"],
    ["job", "--name", "a/b", "--workflow", "w", "--app", "sim", "--dry-run"],
    ["job", "--name", "a", "--workflow", "w", "--app", "nosuchapp", "--dry-run"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--num-nodes", "2147483647",
     "--dry-run"],
    ["make_dummies", "100000000"],
    ["make_dummies", HUGE],
    ["ls", "--limit", "x"],
    ["ls", "--limit", HUGE],
    ["ls", "--id", HUGE],
    ["ls", "--state", "DONE"],
    ["ls", "--output", "xml"],
    ["ls", "--history", "12345"],
    ["ls", "--app", "ghost"],
    ["modify", "1", "num_nodes", "many"],
    ["modify", "1", "num_nodes", HUGE],
    ["modify", "1", "colour", "red"],
    ["dep", "1", "1"],
    ["rm", "999"],
    ["kill", "999"],
    ["retry", "--state", "READY"],
    ["app", "--name", "sim", "--executable", "/bin/true"],
    ["app", "modify", "ghost", "executable", "x"],
    ["report", "utilization", "--bin", "0"],
    ["report", "errors", "--since", "yesterday-ish"],
    ["report", "summary", "--since", "100000000000000000000000h"],
    ["report", "throughput", "--bin", "100000000000000000000h"],
    ["report", "html", "{tmp}/r.html", "--since", "100000000000000000000000h"],
    ["report", "html", "{tmp}/bad.jsonl"],
    ["report", "html", "{tmp}/fifo"],  # as /dev/full, which a bug as root would replace
    ["web", "--host", "a" * 300],
    ["web", "--host", "192.0.2.1"],
    ["submit-launch", "-t", "forever", "-n", "1"],
    ["submit-launch", "-t", "10", "-n", "1", "-q", "bad\nqueue"],
    ["submit-launch", "-t", "10", "-n", "1", "-q", "debug\n"],
    ["job", "--name", "a", "--workflow", "w", "--app", "sim", "--env", "X\n=2"],
    ["config", "colour"],
    ["log", "999"],
    ["no-such-command"],
]


def _counts() -> dict[str, int]:
    conn = api.connection()
    count = sql.SQL("SELECT count(*) AS n FROM {}")
    return {t: conn.execute(count.format(sql.Identifier(t))).fetchone()["n"]
            for t in ("apps", "tasks", "task_parents", "task_events", "batch_jobs")}


@pytest.fixture
def seeded(project, tmp_path):
    api.add_app("sim", "/bin/echo")
    api.add_task("sim", name="a", workflow="w")
    (tmp_path / "bad.jsonl").write_text('{"name": "ok"}\n{"name": "x", "num_nodes": 0}\n')
    (tmp_path / "binary.csv").write_bytes(b"name,args\nx,\xff\xfe\n")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "scalar.json").write_text("42\n")
    (tmp_path / "array.json").write_text("[1, 2]\n")
    return tmp_path


def one_line_error(args: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([BALSAM, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "internal error" not in lines[0], lines[0]
    assert proc.stdout == "", proc.stdout
    return lines[0]


@pytest.mark.parametrize("args", CASES, ids=lambda a: " ".join(a)[:60])
def test_bad_input_is_one_line_and_changes_nothing(seeded, args):
    before, files = _counts(), sorted(seeded.rglob("*"))
    one_line_error([a.replace("{tmp}", str(seeded)) for a in args])
    assert _counts() == before
    assert sorted(seeded.rglob("*")) == files


def test_messages_say_what_to_do(seeded, monkeypatch):
    assert "not a PostgreSQL connection string" in one_line_error(
        ["init", str(seeded / "p"), "--dsn", "garbage"])
    assert one_line_error(["job", "--app", "sim", "--workflow", "w", "--from",
                           str(seeded / "bad.jsonl")]).endswith(
        "task 2: num_nodes must be between 1 and 100,000, got 0")
    assert "(see 'balsam ls --help')" in one_line_error(["ls", "--limit", "x"])
    assert "it exists and is not a Balsam report: choose another path" in one_line_error(
        ["report", "html", str(seeded / "bad.jsonl")])
    assert "fifo: it is not a regular file" in one_line_error(
        ["report", "html", str(seeded / "fifo")])
    assert "must be within 100 years of now" in one_line_error(
        ["report", "summary", "--since", "100000000000000000000000h"])
    assert "not a valid host name; choose another --host" in one_line_error(
        ["web", "--host", "a" * 300])
    assert "port" not in one_line_error(["web", "--host", "192.0.2.1"])
    assert "line 1 is longer than 8,388,608 characters" in one_line_error(
        ["job", "--app", "sim", "--workflow", "w", "--from", "/dev/zero"])
    assert "/dev/zero is larger than 64 MiB" in one_line_error(
        ["job", "--app", "sim", "--workflow", "w", "--sweep", "i=@/dev/zero"])
    monkeypatch.delenv("BALSAM_DB_PATH")
    assert "no active project: run 'source balsamactivate PROJECT'" in one_line_error(["ls"])


def test_a_broken_configuration_is_one_line(seeded, monkeypatch):
    home = Path(os.environ["BALSAM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text("queue = [unclosed\n")
    assert "config.toml is not valid TOML" in one_line_error(["ls"])
    (home / "config.toml").write_text('colour = "red"\n')
    assert "unknown setting 'colour'" in one_line_error(["config"])


@pytest.mark.multiuser
def test_unreadable_directories(seeded, run_as, shared_dir):
    """As an ordinary user: a directory they cannot write, a project they cannot read."""
    locked = shared_dir / "locked"
    locked.mkdir(mode=0o700)
    for args, env in (
            (["balsam", "init", str(locked / "p")], {}),
            (["balsam", "ls"], {"BALSAM_DB_PATH": str(locked)}),
            (["balsam", "init", "/root/p"], {})):
        proc = run_as("dave", args, env=env, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("args", [["ls", "--all"], ["ls", "apps"], ["plugins"], ["config"]])
def test_a_reader_gone_stops_the_command_quietly(seeded, args):
    """``balsam ls | head``: output into a pipe nobody reads ends the command as it ends
    ``cat``, silently with the status of SIGPIPE (141), not with an error or a traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([BALSAM, *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize("args", [[], ["report"]])
def test_a_command_group_alone_shows_its_help(args):
    """``balsam`` or ``balsam report`` alone asked for no action: its help on stdout, status 0,
    not an error wrapped around the help."""
    proc = subprocess.run([BALSAM, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
    assert proc.stdout.startswith(f"Usage: {' '.join(['balsam', *args])} [OPTIONS] COMMAND")
    assert "Commands:" in proc.stdout
