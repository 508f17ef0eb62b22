"""The output tail never follows a symlink and is bounded; ``balsam report html`` writes one
self-contained file; the page's connections cannot write."""

from __future__ import annotations

import os
import re
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from balsam.errors import BalsamError
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_web.db import connect_readonly
from balsam_web.files import read_tail


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


def test_errors_are_balsam_errors():
    from balsam_web.commands import bind

    with pytest.raises(BalsamError, match="cannot serve on host"):
        bind("no-such-host.invalid", 0)
    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(BalsamError, match="choose another port with --port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
