"""Task working directories: where a task may work (pure), and reaching it without following a
symlink planted on the way (real files)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from balsam.errors import InvalidInput
from balsam_launcher import workdirs
from balsam_launcher.workdirs import Place, place

ROOT = "/p/proj"


@pytest.mark.parametrize(("workdir", "expected"), [
    ("data/wf/t_1", Place(ROOT, ("data", "wf", "t_1"))),
    ("data//wf/./t_1/", Place(ROOT, ("data", "wf", "t_1"))),
    ("data/../data/x", Place(ROOT, ("data", "x"))),
    ("results/run1", Place(ROOT, ("results", "run1"))),
    ("/p/proj/data/x", Place(ROOT, ("data", "x"))),
    ("/scratch/me/run", Place("/scratch/me", ("run",))),
    ("/scratch/me", Place("/scratch/me", ())),
])
def test_places_inside_the_project_or_an_allowed_prefix(workdir, expected):
    assert place(workdir, ROOT, ["/scratch/me/"]) == expected


@pytest.mark.parametrize(("workdir", "why"), [
    ("/home/owner/.ssh", "outside the project"),
    ("/p/project2/data", "outside the project"),
    ("/scratch/meme/x", "outside the project"),
    ("../x", "climbs out of the project"),
    ("data/../../x", "climbs out of the project"),
    ("..", "climbs out of the project"),
    (".", "control zone"),
    ("/p/proj", "control zone"),
    ("balsamdb/x", "control zone"),
    ("server-info", "control zone"),
    ("job-templates", "control zone"),
])
def test_refuses_anywhere_else_in_one_line(workdir, why):
    with pytest.raises(InvalidInput, match=why) as info:
        place(workdir, ROOT, ["/scratch/me"])
    assert "\n" not in str(info.value)
    assert "--allow-workdir" in str(info.value) or why != "outside the project"


def test_opens_and_creates_the_directory_with_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        fd = workdirs.open_dir(Place(str(tmp_path), ("data", "wf", "t_1")))
    finally:
        os.umask(old)
    try:
        assert os.path.samefile(f"/proc/self/fd/{fd}", tmp_path / "data" / "wf" / "t_1")
        assert (tmp_path / "data").stat().st_mode & 0o777 == 0o750
        out = workdirs.open_output(fd, "t.out")
        os.write(out, b"first\n\nlast line\n")
        assert workdirs.last_line(out) == "last line"
        os.close(out)
    finally:
        os.close(fd)


@pytest.mark.parametrize("fresh", [False, True])
@pytest.mark.parametrize("where", ["dir", "parent", "output"])
def test_a_planted_symlink_is_never_followed(tmp_path, where, fresh):
    victim = tmp_path / "victim"
    victim.mkdir()
    root = tmp_path / "proj"
    (root / "data" / "wf").mkdir(parents=True)
    if where == "parent":
        (root / "data" / "wf").rmdir()
        (root / "data" / "wf").symlink_to(victim)
    elif where == "dir":
        (root / "data" / "wf" / "t_1").symlink_to(victim)
    else:
        (root / "data" / "wf" / "t_1").mkdir()
        (root / "data" / "wf" / "t_1" / "t.out").symlink_to(victim / "t.out")
    with pytest.raises(OSError) as info:
        fd = workdirs.open_dir(Place(str(root), ("data", "wf", "t_1")), fresh=fresh)
        try:
            workdirs.open_output(fd, "t.out")
        finally:
            os.close(fd)
    assert info.value.errno in (errno.ELOOP, errno.ENOTDIR)
    assert "not followed" in workdirs.describe(info.value)
    assert list(victim.iterdir()) == []


def test_a_fresh_directory_is_made_and_an_existing_one_opened(tmp_path):
    """``fresh`` only changes the order of the calls: made if missing, opened if there."""
    where = Place(str(tmp_path), ("data", "wf", "t_1"))
    for _ in range(2):
        fd = workdirs.open_dir(where, fresh=True)
        try:
            assert os.path.samefile(f"/proc/self/fd/{fd}", tmp_path / "data" / "wf" / "t_1")
        finally:
            os.close(fd)
    (tmp_path / "data" / "wf" / "t_2").write_text("a file, not a directory")
    with pytest.raises(OSError) as info:
        workdirs.open_dir(Place(str(tmp_path), ("data", "wf", "t_2")), fresh=True)
    assert info.value.errno == errno.ENOTDIR


def test_a_planted_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "t.out")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError, match="not a regular file"):
            workdirs.open_output(fd, "t.out")
    finally:
        os.close(fd)


def test_logs_are_new_files_only(tmp_path):
    os.close(workdirs.create_log(tmp_path, "launcher_1.log"))
    with pytest.raises(FileExistsError):
        workdirs.create_log(tmp_path, "launcher_1.log")
    target = tmp_path / "elsewhere"
    (tmp_path / "launcher_2.log").symlink_to(target)
    with pytest.raises(FileExistsError):
        workdirs.create_log(tmp_path, "launcher_2.log")
    assert not target.exists()


def test_descriptions_name_the_path(tmp_path):
    missing = Path(tmp_path) / "no" / "such"
    with pytest.raises(OSError) as info:
        workdirs.open_dir(Place(str(missing), ("x",)))
    assert workdirs.describe(info.value).startswith("No such file or directory")


def test_the_last_line_is_the_programs_not_the_mpi_launchers():
    rule = "-" * 74
    assert workdirs.program_line(["boom on node", "srun: error: node1: task 0: Exited with "
                                  "exit code 3", ""]) == "boom on node"
    assert workdirs.program_line(["rank 0 failed: bad input", rule,
                                  "prterun detected that one or more processes exited with",
                                  "non-zero status, thus causing the job to be terminated.",
                                  rule]) == "rank 0 failed: bad input"
    assert workdirs.program_line(["srun: error: Unable to create step for job 7"]) == (
        "srun: error: Unable to create step for job 7")  # all there is: the cause
    assert workdirs.program_line(["", "  "]) == ""

