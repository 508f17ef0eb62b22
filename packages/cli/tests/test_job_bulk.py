"""balsam job --from and --sweep: many tasks at once, all or none, through the real CLI."""

from __future__ import annotations

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
from balsam_cli.job_commands import expand, parse_sweep, parse_values
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
    ("0.5,1", [0.5, 1.0]), ("-2:-1", [-2, -1]),
])
def test_sweep_values(text, values):
    assert parse_values(text) == values


@pytest.mark.parametrize("text", ["i", "i=", "2x=1:3", "i=1:3:0", "i=,", "i=1:3:-1"])
def test_bad_sweeps_are_refused(text):
    with pytest.raises(InvalidInput):
        parse_sweep(text)


def test_sweep_order_and_literal_braces():
    specs = list(expand({"name": "{a}{b}", "args": "{{x}} {a}"},
                        [("a", [1, 2]), ("b", ["x", "y"])]))
    assert [s["name"] for s in specs] == ["1x", "1y", "2x", "2y"]
    assert specs[0]["args"] == "{x} 1"
