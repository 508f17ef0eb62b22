"""balsam job --from and --sweep: many tasks at once, all or none, through the real CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.errors import InvalidInput
from balsam.plugins import get_plugin_manager
from balsam_cli import job_commands
from balsam_cli.job_commands import expand, from_lines, parse_sweep, parse_values
from balsam_cli.main import build_cli

BALSAM = str(Path(sys.executable).parent / "balsam")


@pytest.fixture
def balsam(project):
    api.add_app("sim", "/bin/echo")
    cli = build_cli(get_plugin_manager())

    def run(*args: str, input: str | None = None, code: int = 0) -> str:
        result = CliRunner().invoke(cli, list(args), input=input)
        assert result.exit_code == code, result.output
        return result.output

    return run


@pytest.mark.pg
def test_json_lines_from_a_file_with_defaults_and_parents(balsam, tmp_path):
    root = api.add_task("sim", name="root", workflow="w")
    lines = [{"name": f"t{i}", "args": f"-n {i}", "num_nodes": 1 + i % 2,
              "parents": [root.id], "env": {"SEED": str(i)}} for i in range(50)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(ln) for ln in lines) + "\n\n")
    out = balsam("job", "--from", str(path), "--app", "sim", "--workflow", "bulk",
                 "--wall-time", "1:30:00")
    assert out.strip() == "Added 50 tasks (ids 2 to 51)"
    tasks = api.get_tasks(workflow="bulk")
    assert [t.name for t in tasks] == [f"t{i}" for i in range(50)]
    assert {t.wall_time_minutes for t in tasks} == {90}
    assert tasks[7].args == "-n 7" and tasks[7].num_nodes == 2
    assert tasks[7].environ_vars == {"SEED": "7"}
    assert {t.state for t in tasks} == {"AWAITING_PARENTS"}
    assert api.children(root) == [t.id for t in tasks]


@pytest.mark.pg
def test_csv_on_standard_input(balsam):
    root = api.add_task("sim", name="root")
    text = f"name,args,num_nodes,app,parents\nx,-a 1,2,sim,\ny,\"-b, 2\",1,sim,{root.id}\n"
    out = balsam("job", "--from", "-", "--workflow", "csv", "--json", input=text)
    ids = json.loads(out)["ids"]
    x, y = api.get_tasks(ids=ids)
    assert (x.name, x.args, x.num_nodes, y.args) == ("x", "-a 1", 2, "-b, 2")
    assert api.parents(y) == [root.id] and api.parents(x) == []
    assert y.state == "AWAITING_PARENTS" and x.state == "READY"


@pytest.mark.pg
def test_a_bad_line_adds_nothing(balsam, tmp_path):
    path = tmp_path / "tasks.jsonl"
    path.write_text('{"name": "a"}\n{"name": "b", "num_nodes": "lots"}\n')
    out = balsam("job", "--from", str(path), "--app", "sim", "--workflow", "w", code=1)
    assert out.strip() == "Error: task 2: num_nodes must be an integer, got 'lots'"
    assert api.get_tasks() == []


@pytest.mark.pg
def test_sweeps_make_every_combination(balsam):
    out = balsam("job", "--app", "sim", "--workflow", "scan", "--name", "run{i:03d}-{t}",
                 "--args", "-n {i} -T {t}", "--sweep", "i=1:4", "--sweep", "t=0.5,2")
    assert out.strip() == "Added 8 tasks (ids 1 to 8)"
    tasks = api.get_tasks(workflow="scan")
    assert [t.name for t in tasks][:3] == ["run001-0.5", "run001-2.0", "run002-0.5"]
    assert tasks[-1].args == "-n 4 -T 2.0"
    dry = balsam("job", "--app", "sim", "--workflow", "d", "--name", "n{x}", "--sweep",
                 "x=a,b", "--dry-run")
    assert [json.loads(ln)["name"] for ln in dry.splitlines()] == ["na", "nb"]
    assert len(api.get_tasks()) == 8


@pytest.mark.pg
def test_bulk_from_a_pipe_shows_no_progress(project):
    api.add_app("sim", "/bin/echo")
    specs = "".join(json.dumps({"name": f"t{i}"}) + "\n" for i in range(20_000))
    proc = subprocess.run([BALSAM, "job", "--from", "-", "--app", "sim", "--workflow", "p"],
                          input=specs, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith("Added 20,000 tasks")
    assert api.count_by_state(workflow="p") == {"READY": 20_000}


@pytest.mark.parametrize(("text", "values"), [
    ("1:5", [1, 2, 3, 4, 5]), ("0:10:5", [0, 5, 10]), ("5:1", [5, 4, 3, 2, 1]),
    ("1-3", [1, 2, 3]), ("1..3", [1, 2, 3]), ("-1..-3", [-1, -2, -3]), ("a,b", ["a", "b"]),
    ("0.5,1", [0.5, 1.0]), ("-2:-1", [-2, -1]), ("1:30,2:00", ["1:30", "2:00"]),
])
def test_sweep_values(text, values):
    assert parse_values(text) == values


@pytest.mark.parametrize("text", ["i", "i=", "2x=1:3", "i=1:3:0", "i=,", "i=1:3:-1"])
def test_bad_sweeps_are_refused(text):
    with pytest.raises(InvalidInput):
        parse_sweep(text)


@pytest.mark.parametrize("text", ["i=1.5:3", "i=a:b", "i=1:3:0.5", "i=1:2:nan", "i=1:", "i=:3"])
def test_a_value_with_a_colon_alone_is_an_integer_range(text):
    """Each was one literal value (one task), silently."""
    with pytest.raises(InvalidInput, match="must be a range of integers A:B or A:B:STEP"):
        parse_sweep(text)


def test_sweep_files_are_utf8_and_bounded(tmp_path, monkeypatch):
    path = tmp_path / "values"
    path.write_bytes(b"\xef\xbb\xbfa\r\n\n b \nc:1\n")
    assert parse_values(f"@{path}") == ["a", "b", "c:1"]  # the byte order mark skipped
    path.write_bytes(b"1\n2\xff\n")
    with pytest.raises(InvalidInput, match=r"values is not UTF-8 text \(.* on line 2\)"):
        parse_values(f"@{path}")
    monkeypatch.setattr(job_commands, "MAX_SWEEP_FILE", 8)
    path.write_text("1\n2\n3\n4\n")
    assert parse_values(f"@{path}") == [1, 2, 3, 4]
    path.write_text("1\n2\n3\n4\n5")
    with pytest.raises(InvalidInput, match="is larger than"):
        parse_values(f"@{path}")
    monkeypatch.setattr(job_commands, "MAX_VALUES", 3)
    path.write_text("1\n2\n\n3\n")
    assert parse_values(f"@{path}") == [1, 2, 3]
    path.write_text("1\n2\n3\n4")
    with pytest.raises(InvalidInput, match="has more than 3 values"):
        parse_values(f"@{path}")


@pytest.mark.parametrize("text", ["42\n", '"str"\n', "[1, 2]\n", "true\n", "\nname,colour\n"])
def test_input_that_is_neither_json_objects_nor_a_csv_of_fields_is_refused(text):
    """Each was taken as a CSV header with no rows: "No task to add.", status 0."""
    with pytest.raises(InvalidInput, match="^line [12]: (expected a JSON object|CSV header)"):
        list(from_lines(io.StringIO(text), {}))


def test_lines_of_from_are_bounded(monkeypatch):
    monkeypatch.setattr(job_commands, "MAX_LINE", 20)
    ok = '{"name": "x"}\n'
    assert list(from_lines(io.StringIO(ok * 3), {})) == [{"name": "x"}] * 3
    endless = ok + "\n" + "\0" * 50
    with pytest.raises(InvalidInput, match="^line 3 is longer than 20 characters"):
        list(from_lines(io.StringIO(endless), {}))
    with pytest.raises(InvalidInput, match="^line 2 is longer than 20 characters"):
        list(from_lines(io.StringIO("name,args\nx," + "y" * 30 + "\n"), {}))
    monkeypatch.setattr(job_commands, "MAX_LINE", 200_000)
    huge = "name,args\nx,\"" + "y" * 150_000 + '"\n'
    with pytest.raises(InvalidInput, match="^line 2: field larger than field limit"):
        list(from_lines(io.StringIO(huge), {}))


@pytest.mark.pg
def test_from_reads_utf8_with_a_byte_order_mark(balsam, tmp_path):
    path = tmp_path / "tasks.csv"
    path.write_bytes("\ufeffname,args\nü,-x\n".encode())
    assert balsam("job", "--from", str(path), "--app", "sim", "--workflow", "w").startswith(
        "Added 1 task")
    assert [(t.name, t.args) for t in api.get_tasks()] == [("ü", "-x")]
    out = balsam("job", "--from", "-", "--app", "sim", "--workflow", "w", "--dry-run",
                 input="\ufeffname\nv\n")
    assert json.loads(out)["name"] == "v"
    path.write_bytes(b"name\n\xffx\n")
    assert balsam("job", "--from", str(path), "--app", "sim", "--workflow", "w",
                  code=1).startswith("Error: the input is not UTF-8 text")


@pytest.mark.pg
@pytest.mark.parametrize(("args", "error"), [
    (["--name", "a/b"], "name 'a/b' may not contain '/'"),
    (["--name", "a\x1bb"], "may not contain control characters"),
    (["--app", "nosuchapp"], "unknown app 'nosuchapp'"),
    (["--num-nodes", "2147483647"], "num_nodes must be between 1 and 100,000"),
    (["--parent", "999"], "no parent task 999"),
])
def test_a_dry_run_refuses_what_adding_refuses(balsam, args, error):
    """The dry run printed these as JSON, status 0; adding them failed."""
    task = ["job", "--name", "a", "--workflow", "w", "--app", "sim", *args]
    added = balsam(*task, code=1)
    assert balsam(*task, "--dry-run", code=1) == added
    assert added.startswith("Error: ") and error in added and added.count("\n") == 1
    swept = balsam(*task, "--sweep", "i=1:3", "--dry-run", code=1)
    assert swept == balsam(*task, "--sweep", "i=1:3", code=1)
    assert swept.startswith("Error: ") and error in swept
    assert api.get_tasks() == []


@pytest.mark.pg
def test_a_dry_run_prints_nothing_unless_every_task_passes(balsam):
    sweep = ["job", "--app", "sim", "--workflow", "w", "--sweep", "d=x,y,..", "--name", "{d}",
             "--dry-run"]
    out = balsam(*sweep, code=1)
    assert out.startswith("Error: task 3: name '..' may not contain '/' or be '.' or '..'")
    sweep[6] = "d=x,y"
    assert [json.loads(ln)["name"] for ln in balsam(*sweep).splitlines()] == ["x", "y"]
    assert api.get_tasks() == []


def test_sweep_order_and_literal_braces():
    specs = list(expand({"name": "{a}{b}", "args": "{{x}} {a}"},
                        [("a", [1, 2]), ("b", ["x", "y"])]))
    assert [s["name"] for s in specs] == ["1x", "1y", "2x", "2y"]
    assert specs[0]["args"] == "{x} 1"
