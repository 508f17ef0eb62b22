"""The output tail never follows a symlink and is bounded; ``balsam report html`` writes one
self-contained file, only where nothing but an earlier report is; the page's connections cannot
write."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from balsam.errors import BalsamError
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_cli.main import build_cli
from balsam_web.commands import bind_error, target_refusal
from balsam_web.db import connect_readonly
from balsam_web.files import read_tail
from balsam_web.render import REPORT_MARKER


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data/wf/t_1").mkdir(parents=True)
    (tmp_path / "secret").write_text("the owner's secret\n")
    return tmp_path


def test_tail_of_a_plain_file_is_its_last_lines_within_a_bound(tree):
    out = tree / "data/wf/t_1/t.out"
    out.write_text("".join(f"line {i}\n" for i in range(100_000)))
    tail = read_tail(tree, out, limit=1000, lines=20)
    assert tail.error == "" and tail.truncated and tail.size == out.stat().st_size
    assert tail.text.splitlines() == [f"line {i}" for i in range(99_980, 100_000)]
    short = read_tail(tree, out, limit=15)
    assert short.text == "line 99999"  # the cut first line is dropped
    out.write_bytes(b"caf\xc3\xa9 \xff\n")
    assert read_tail(tree, out).text == "caf\u00e9 \ufffd" and not read_tail(tree, out).truncated


def test_tail_never_follows_a_symlink(tree):
    workdir = tree / "data/wf/t_1"
    (workdir / "t.out").symlink_to(tree / "secret")
    tail = read_tail(tree, workdir / "t.out")
    assert tail.text == "" and "is a symbolic link" in tail.error
    # A directory on the way replaced by a symlink to somewhere else is refused too.
    os.rename(workdir, tree / "elsewhere")
    (tree / "elsewhere/t.out").unlink()
    (tree / "elsewhere/t.out").write_text("planted\n")
    workdir.symlink_to(tree / "elsewhere")
    tail = read_tail(tree, workdir / "t.out")
    assert tail.text == "" and f"{workdir} is a symbolic link" in tail.error


def test_tail_refuses_what_is_not_a_plain_file(tree):
    fifo = tree / "data/wf/t_1/t.out"
    os.mkfifo(fifo)  # opening it for reading would block a reader that waits for a writer
    assert "is not a regular file" in read_tail(tree, fifo).error
    assert "is not a regular file" in read_tail(tree, tree / "data").error
    assert read_tail(tree, tree / "data/../secret").error.endswith("is not a plain path to a file")
    assert read_tail(tree, tree / "data/none/x.out").error.startswith("no output yet")
    outside = tree.parent / f"{tree.name}-outside.out"
    outside.write_text("an absolute workdir\n")
    try:
        assert read_tail(tree, outside).text == "an absolute workdir"
    finally:
        outside.unlink()


@pytest.mark.pg
def test_the_page_connection_cannot_write(project):
    with connect_readonly(project) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == {
            "default_transaction_read_only": "on"}
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO apps (name, executable) VALUES ('x', '/bin/true')")


@pytest.mark.pg
@pytest.mark.slow
def test_report_html_is_one_self_contained_file(seeded, project, tmp_path, page, shoot):
    cli = build_cli(get_plugin_manager())
    target = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "html", str(target), "--by", "workflow",
                                      "--since", "6h"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Report written to {target}"
    html = target.read_text()
    assert "<style>" in html and "<svg" in html and "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from elsewhere
    assert not re.search(r"<link ", html)
    assert "campaign" in html and "exit 3: ValueError: bad seed" in html
    assert "Busy nodes by workflow" in html and "Tasks finished by workflow" in html
    page.goto(target.as_uri())
    assert page.locator("h1").inner_text() == "Balsam report: project"
    assert page.locator(".chart svg").count() >= 3
    shoot(page, "report-html")
    for args, message in ((["report", "html", str(tmp_path / "no/such/dir/r.html")],
                           "no directory"),
                          (["report", "html", str(tmp_path)], "it is a directory"),
                          (["report", "html", str(target), "--by", "colour"],
                           "invalid grouping 'colour'"),
                          (["report", "html", str(target), "--since", "yesterday"],
                           "invalid time 'yesterday'")):
        bad = CliRunner().invoke(cli, args)
        assert bad.exit_code != 0 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1


REPORT_HEAD = f"<!doctype html>\n{REPORT_MARKER}\n<html>".encode()


@pytest.mark.parametrize(("mode", "head", "control", "refusal"), [
    (None, b"", False, None),  # a new file
    (stat.S_IFREG | 0o644, REPORT_HEAD, False, None),  # an earlier report
    (None, b"", True, "control zone"),  # a new file in balsamdb/ or job-templates/
    (stat.S_IFREG | 0o640, REPORT_HEAD, True, "control zone"),
    (stat.S_IFREG | 0o640, b"host: /tmp/p/.pgsocket\n", False, "is not a Balsam report"),
    (stat.S_IFREG | 0o644, b"<!doctype html>\n<html>", False, "is not a Balsam report"),
    (stat.S_IFREG | 0o644, b"", False, "is not a Balsam report"),  # empty, or unreadable
    (stat.S_IFDIR | 0o755, b"", False, "is a directory"),
    (stat.S_IFLNK | 0o777, b"", False, "is a symbolic link"),
    (stat.S_IFCHR | 0o666, b"", False, "is not a regular file"),  # /dev/full
    (stat.S_IFIFO | 0o644, b"", False, "is not a regular file"),
])
def test_a_report_replaces_only_an_earlier_report(mode, head, control, refusal):
    found = target_refusal(mode, head, control)
    assert found is None if refusal is None else refusal in found and "choose " in found


@pytest.mark.pg
def test_report_html_never_overwrites_what_is_not_a_report(project, tmp_path, monkeypatch):
    """``report html p/server-info`` replaced the project's server-info (exit 0), and every later
    command failed; ``report html -`` wrote a file named ``-``."""
    cli = build_cli(get_plugin_manager())
    info = project.root / "server-info"
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    (tmp_path / "link.html").symlink_to(notes)
    fifo = tmp_path / "fifo"  # not /dev/full: a regression, run as root, would replace it
    os.mkfifo(fifo)
    before = {p: p.read_bytes() for p in (info, notes)}
    for target, message in ((info, "control zone"),
                            (project.root / "job-templates/r.html", "control zone"),
                            (project.root / "job-templates/../server-info", "control zone"),
                            (notes, "is not a Balsam report"),
                            (tmp_path / "link.html", "is a symbolic link"),
                            (tmp_path, "is a directory"),
                            (fifo, "is not a regular file")):
        bad = CliRunner().invoke(cli, ["report", "html", str(target)])
        assert bad.exit_code == 1 and message in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1 and "choose " in bad.output
    assert {p: p.read_bytes() for p in before} == before
    assert not (project.root / "job-templates/r.html").exists()
    Project.from_env()  # server-info is intact
    target = tmp_path / "r.html"
    for _ in range(2):  # a new file, then the earlier report replaced
        result = CliRunner().invoke(cli, ["report", "html", str(target)])
        assert result.exit_code == 0, result.output
        assert target.read_text().startswith(f"<!doctype html>\n{REPORT_MARKER}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.html", "notes.txt",
                                                           "r.html"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["report", "html", "-"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"<!doctype html>\n{REPORT_MARKER}\n")
    assert result.output.rstrip().endswith("</html>") and not (tmp_path / "-").exists()
    help_text = CliRunner().invoke(cli, ["report", "html", "--help"]).output
    assert "- writes the report to standard output" in " ".join(help_text.split())


def test_errors_are_balsam_errors():
    from balsam_web.commands import bind

    with pytest.raises(BalsamError, match="cannot serve on host"):
        bind("no-such-host.invalid", 0)
    with pytest.raises(BalsamError, match="not a valid host name; choose another --host"):
        bind("a" * 300, 0)  # was UnicodeError from the IDNA codec
    with pytest.raises(BalsamError, match="not an address of this machine; choose another --host"):
        bind("192.0.2.1", 0)  # TEST-NET-1: on no machine; was "choose another port"
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(BalsamError, match="choose another port with --port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


def test_only_the_port_s_faults_blame_the_port():
    assert "choose another port" in bind_error("127.0.0.1", 8250, errno.EADDRINUSE)
    assert "choose another port" in bind_error("::1", 80, errno.EACCES)
    for err in (errno.EADDRNOTAVAIL, errno.EINVAL, None):
        message = bind_error("8.8.8.8", 8250, err)
        assert "choose another --host" in message and "port" not in message
