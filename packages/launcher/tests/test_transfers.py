"""Data staging without a database: the URLs, the shipped transfer methods run for real (the
local copy; rsync and scp through a local stand-in for ssh, so the real programs move the data
with the argument lists the launcher builds), the register_transfer_methods hook, and what a
member of the project can do to a stage-out by planting symlinks (nothing)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from balsam import hookimpl
from balsam.errors import InvalidInput
from balsam.models import Task
from balsam.plugins import get_plugin_manager
from balsam.staging import TransferFailed, Url, parse_url, transfer_methods
from balsam_launcher import transfers
from balsam_testing import launchers as lt


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    log = tmp_path / "ssh.log"
    monkeypatch.setenv(transfers.SSH_VARIABLE, f"{lt.fake_ssh(tmp_path)} -o BatchMode=yes")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    return log


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` with its text (symlinks as ``-> target``)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[rel] = path.read_text()
    return found


def make_source(root: Path, name: str = "in dir") -> Path:
    (root / name / "sub").mkdir(parents=True)
    (root / name / "a.txt").write_text("alpha\n")
    (root / name / "sub" / "b.txt").write_text("beta\n")
    return root / name


# --- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("/data/in", Url("file", "/data/in", text="/data/in")),
    ("file:///data/in", Url("file", "/data/in", text="file:///data/in")),
    ("file:/data/in", Url("file", "/data/in", text="file:/data/in")),
    ("local:/data/in", Url("file", "/data/in", text="local:/data/in")),
    ("rsync://bob@login1:2222/scratch/out", Url("rsync", "/scratch/out", "login1", "bob", 2222,
                                                "rsync://bob@login1:2222/scratch/out")),
    ("GSIFTP://dtn.site.org/~/x", Url("gsiftp", "/~/x", "dtn.site.org",
                                      text="GSIFTP://dtn.site.org/~/x")),
])
def test_urls(text, expected):
    assert parse_url(text) == expected


@pytest.mark.parametrize("text, error", [
    ("data/in", "is not a URL"),
    ("local:data", "a local URL names an absolute path (local:/PATH)"),
    ("file://host/data", "a file URL names an absolute path (file:///PATH)"),
    ("rsync:/x", "expected rsync://HOST/PATH"),
    ("rsync://host", "expected rsync://[USER@]HOST[:PORT]/PATH"),
    ("rsync://-oProxyCommand=x/y", "expected rsync://[USER@]HOST[:PORT]/PATH"),
    ("scp://-host/y", "may not start with '-'"),
    ("scp://host/a\tb", "may not contain control characters"),
])
def test_bad_urls_are_refused_in_one_line(text, error):
    with pytest.raises(InvalidInput, match=re.escape(error)) as caught:
        parse_url(text, what="--url-in")
    assert str(caught.value).startswith("--url-in") and "\n" not in str(caught.value)


# --- the methods, for real ------------------------------------------------------------------------


def test_local_copy_in_and_out(tmp_path):
    source = make_source(tmp_path)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    transfers.LocalCopy().stage_in(parse_url(f"file://{source}/"), fetched, timeout=10)
    assert tree(fetched) == {"a.txt": "alpha\n", "sub/b.txt": "beta\n"}  # the contents
    whole = tmp_path / "whole"
    whole.mkdir()
    transfers.LocalCopy().stage_in(parse_url(f"file://{source}"), whole, timeout=10)
    assert tree(whole) == {"in dir/a.txt": "alpha\n", "in dir/sub/b.txt": "beta\n"}
    one = tmp_path / "one"
    one.mkdir()
    transfers.LocalCopy().stage_in(parse_url(str(source / "a.txt")), one, timeout=10)
    assert tree(one) == {"a.txt": "alpha\n"}
    transfers.LocalCopy().stage_out(fetched, ["a.txt", "sub"], parse_url(
        f"local:{tmp_path}/results/new dir"), timeout=10)
    assert tree(tmp_path / "results") == {"new dir/a.txt": "alpha\n", "new dir/sub/b.txt": "beta\n"}
    with pytest.raises(TransferFailed, match=f"^No such file or directory: {tmp_path}/missing$"):
        transfers.LocalCopy().stage_in(parse_url(f"{tmp_path}/missing"), one, timeout=10)
    (tmp_path / "a file").write_text("")
    with pytest.raises(TransferFailed, match="Not a directory"):
        transfers.LocalCopy().stage_out(fetched, ["a.txt"], parse_url(f"{tmp_path}/a file/x"),
                                        timeout=10)


@pytest.mark.parametrize("scheme", ["rsync", "scp"])
def test_rsync_and_scp_move_data_through_ssh(tmp_path, fake_ssh, scheme):
    method = transfers.builtin_methods()[scheme]
    spaced = scheme == "rsync"  # rsync takes any path; scp refuses what a shell would read
    source = make_source(tmp_path, "in dir" if spaced else "in_dir")
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    method.stage_in(parse_url(f"{scheme}://dtn1{source}/"), fetched, timeout=60)
    found = tree(fetched)
    assert found == {"a.txt": "alpha\n", "sub/b.txt": "beta\n"}  # PATH/: the contents
    whole = tmp_path / "whole"
    whole.mkdir()
    method.stage_in(parse_url(f"{scheme}://dtn1{source}"), whole, timeout=60)
    assert tree(whole) == {f"{source.name}/a.txt": "alpha\n", f"{source.name}/sub/b.txt": "beta\n"}
    dest = tmp_path / ("out dir" if spaced else "out_dir")
    dest.mkdir()  # scp needs it; rsync would make it
    method.stage_out(fetched, sorted(os.listdir(fetched)), parse_url(
        f"{scheme}://me@dtn2{dest}"), timeout=60)
    assert tree(dest) == found
    assert fake_ssh.read_text().split() == ["dtn1", "dtn1", "dtn2"]
    with pytest.raises(TransferFailed, match=rf"^{scheme} (from|to) .* exited \d+: .+"):
        method.stage_in(parse_url(f"{scheme}://dtn1{tmp_path}/missing"), fetched, timeout=60)


def test_scp_refuses_paths_a_remote_shell_would_read(tmp_path):
    for path in ("/x;rm -rf ~", "/$(id)", "/a b"):
        with pytest.raises(TransferFailed, match="an scp path may not contain shell characters"):
            transfers.Scp().stage_in(parse_url(f"scp://h{path}"), tmp_path, timeout=1)


def test_hook_register_transfer_methods():
    calls = []

    class Globus:
        def stage_in(self, url, directory, *, timeout):
            calls.append(("in", url.host, url.path))

        def stage_out(self, directory, names, url, *, timeout):
            calls.append(("out", url.host, list(names)))

    class Site:
        @hookimpl
        def register_transfer_methods(self):
            return {"globus": Globus(), "file": Globus()}

    pm = get_plugin_manager()
    pm.register(Site(), name="site-transfers")
    try:
        methods = transfer_methods(pm)
    finally:
        pm.unregister(name="site-transfers")
    assert sorted(methods) == ["file", "globus", "rsync", "scp"]
    assert isinstance(methods["globus"], Globus) and isinstance(methods["file"], Globus)
    assert isinstance(transfer_methods(pm)["file"], transfers.LocalCopy)  # ours again


# --- the launcher's steps ---------------------------------------------------------------------


def task(**fields) -> Task:
    return Task(id=5, name="t", **fields)


def test_stage_in_and_out_of_a_working_directory(tmp_path):
    source = make_source(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    methods = transfers.builtin_methods()
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = transfers.stage_in_url(task(stage_in_url=f"{source}/"), fd, work,
                                      methods=methods, scratch=scratch)
        assert done == f"2 item(s) staged in from {source}/"
        (work / "sub" / "c.h5").write_text("gamma\n")
        (work / ".hidden").write_text("")
        before = tree(work)
        out = tmp_path / "out"
        done = transfers.stage_out(task(stage_out_url=f"file://{out}",
                                        stage_out_files="*.txt sub/*.h5 nothing*"), fd, work,
                                   methods=methods, scratch=scratch)
        assert done == f"3 item(s) staged out to file://{out}"
        assert tree(out) == {"a.txt": "alpha\n", "keep.txt": "mine\n", "sub/c.h5": "gamma\n"}
        assert tree(work) == before  # a stage-out changes nothing in the working directory
        assert os.listdir(scratch) == []  # private directories are removed
        nothing = transfers.stage_out(task(stage_out_url=f"file://{out}",
                                           stage_out_files="*.nc"), fd, work,
                                      methods=methods, scratch=scratch)
        assert nothing == "stage-out: no file matches '*.nc': nothing sent"
        for files, error in (("../*", "must stay in the working directory"),
                             ("/etc/*", "must stay in the working directory")):
            with pytest.raises(TransferFailed, match=error):
                transfers.stage_out(task(stage_out_url=f"file://{out}", stage_out_files=files),
                                    fd, work, methods=methods, scratch=scratch)
        with pytest.raises(TransferFailed, match=r"^stage-out to gsiftp://h/x failed: no transfer "
                                                 r"method for gsiftp:// URLs \(installed: file, "
                                                 r"rsync, scp\).*; the outputs stay in "):
            transfers.stage_out(task(stage_out_url="gsiftp://h/x", stage_out_files="*"), fd,
                                work, methods=methods, scratch=scratch)
    finally:
        os.close(fd)


def test_planted_symlinks_are_not_followed(tmp_path, shared_dir, run_as):
    """bob, a member of the project's group, plants symlinks in a task's working directory
    (group-writable) pointing at a secret of the owner's; the stage-out sends none of it, says
    which link it refused, and a link of the launcher's own into the control zone is refused
    too."""
    secret = tmp_path / "balsamdb" / "server.key"
    secret.parent.mkdir()
    secret.write_text("private\n")
    work = shared_dir / "data" / "wf" / "t_5"
    work.mkdir(parents=True, mode=0o770)
    os.chmod(work, 0o2770)
    (work / "result.txt").write_text("result\n")
    run_as("bob", ["ln", "-s", str(secret), str(work / "stolen.txt")])
    run_as("bob", ["mkdir", str(work / "dir")])
    run_as("bob", ["ln", "-s", str(secret), str(work / "dir" / "key")])
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    methods = transfers.builtin_methods()
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for files, refused in (("*.txt", "stolen.txt"), ("dir", "dir/key")):
            with pytest.raises(TransferFailed, match=rf"{work}/{refused} is a symlink owned by "
                                                     rf"bob: not followed; the outputs stay in"):
                transfers.stage_out(task(stage_out_url=str(out), stage_out_files=files), fd,
                                    work, methods=methods, scratch=scratch)
        assert not out.exists()  # refused before anything was sent
        os.symlink(secret, work / "mine.txt")  # the launcher's user's own link: followed...
        transfers.stage_out(task(stage_out_url=str(out), stage_out_files="mine.txt result.txt"),
                            fd, work, methods=methods, scratch=scratch)
        assert tree(out) == {"mine.txt": "private\n", "result.txt": "result\n"}
        with pytest.raises(TransferFailed, match="leads into the project's control zone"):
            transfers.stage_out(task(stage_out_url=str(out), stage_out_files="mine.txt"), fd,
                                work, methods=methods, scratch=scratch,
                                forbidden=[str(secret.parent)])  # ...but not into the zone
        # stage-in from a directory where bob planted a link: refused, nothing copied
        with pytest.raises(TransferFailed, match=r"stage-in from .* failed: .*/dir/key is a "
                                                 r"symlink owned by bob: not followed"):
            transfers.stage_in_url(task(stage_in_url=f"file://{work}"), fd, tmp_path,
                                   methods=methods, scratch=scratch)
    finally:
        os.close(fd)
    assert stat.S_ISLNK(os.lstat(work / "stolen.txt").st_mode)  # and nothing was changed
