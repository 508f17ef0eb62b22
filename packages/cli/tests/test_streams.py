"""Standard streams that are not there: output that cannot be written (a full disk, a closed
descriptor), input that is closed, a project path that is no directory. Each is one line on
stderr and a non-zero status, never a traceback or Python's "Exception ignored" (real
processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from balsam import api

pytestmark = pytest.mark.pg

BALSAM = str(Path(sys.executable).parent / "balsam")


@pytest.fixture
def seeded(project):
    api.add_app("sim", "/bin/echo")
    return api.add_tasks([{"app": "sim", "name": f"t{i}", "workflow": "w"} for i in range(30)])


def run(args: list[str], **streams) -> tuple[int, list[str]]:
    proc = subprocess.run([BALSAM, *args], stderr=subprocess.PIPE, text=True, timeout=120,
                          **{"stdin": subprocess.DEVNULL, **streams})
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["ls", "--all"], ["config"],
                                  ["ls", "--tree"], ["which"], ["app", "ls"]])
def test_output_that_cannot_be_written_is_one_error(seeded, args):
    with open("/dev/full", "w") as full:
        code, err = run(args, stdout=full)
    assert (code, err) == (1, ["Error: cannot write the output: No space left on device"])


@pytest.mark.parametrize("args", [["--version"], ["ls"], ["which"], ["job", "--name", "x",
                                  "--workflow", "w", "--app", "sim"]])
def test_a_closed_standard_output_is_refused_before_anything_is_done(seeded, args):
    code, err = run(args, stdout=None, pass_fds=(), preexec_fn=lambda: os.close(1))
    assert (code, err) == (1, ["Error: standard output is closed (send it to a file or to "
                               "/dev/null)"])
    assert len(api.get_tasks()) == 30  # the job was not added


@pytest.mark.parametrize("args", [["rm", "--all"], ["kill", "--wf", "w"]])
def test_a_question_with_standard_input_closed_says_to_answer_with_yes(seeded, args):
    states = {t.id: t.state for t in api.get_tasks()}
    code, err = run(args, stdin=None, preexec_fn=lambda: os.close(0), stdout=subprocess.PIPE)
    assert code == 2 and len(err) == 1 and "standard input is closed: add -y/--yes" in err[0]
    assert {t.id: t.state for t in api.get_tasks()} == states


def test_an_empty_field_list_is_refused(seeded):
    code, err = run(["ls", "--fields", ","], stdout=subprocess.PIPE)
    assert code == 1 and err[0].startswith("Error: --fields names no field; choose from: id,")


def test_a_project_path_that_is_no_directory(seeded, tmp_path):
    (tmp_path / "file").write_text("")
    for path, said in ((tmp_path / "file", "is not a Balsam project"),
                       (tmp_path / ("x" * 5000), "File name too long")):
        code, err = run(["ls"], stdout=subprocess.PIPE,
                        env={**os.environ, "BALSAM_DB_PATH": str(path)})
        assert code == 1 and len(err) == 1 and said in err[0] and len(err[0]) < 400, err


@pytest.mark.parametrize("name", ["ctl\x1b[31mred", "two\nlines", "tab\there"])
def test_a_project_path_with_control_characters_is_refused(tmp_path, name):
    code, err = run(["init", str(tmp_path / name)], stdout=subprocess.PIPE)
    assert code == 1 and len(err) == 1 and "cannot hold control characters" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_project_under_a_file_is_refused_naming_the_file(tmp_path):
    (tmp_path / "file").write_text("")
    code, err = run(["init", str(tmp_path / "file" / "p")], stdout=subprocess.PIPE)
    assert (code, err) == (1, [f"Error: parent directory {tmp_path / 'file'} is not a "
                               "directory"])


@pytest.mark.parametrize("option", ["--dsn", "--group"])
def test_an_empty_init_option_is_refused_not_taken_for_the_default(tmp_path, option):
    code, err = run(["init", str(tmp_path / "p"), option, ""], stdout=subprocess.PIPE)
    assert code == 2 and f"{option} is empty: give a value, or leave {option} out" in err[0]
    assert list(tmp_path.iterdir()) == []
