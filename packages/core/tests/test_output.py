"""balsam.output, balsam.durations, balsam.config and the pure rules of balsam.monitor."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime

import pytest

from balsam import monitor
from balsam.config import load_settings
from balsam.durations import parse_minutes
from balsam.errors import InvalidInput, UnsafeFile
from balsam.output import Column, Listing, Output, fit, iso_time

LISTING = Listing((Column("id", "id"), Column("state", "state"), Column("note"),
                   Column("n", "number")), ("id", "state", "note"))
ROWS = [(7, "READY", "short", 1), (12345, "FAILED", "a long note " * 8 + "end", 22)]


def render(mode: str, rows=ROWS, **kw) -> str:
    out = Output(mode=mode, stream=io.StringIO(), width=kw.pop("width", 40), **kw)
    out.write(LISTING, rows)
    return out.stream.getvalue()


def test_plain_is_aligned_and_never_cut():
    lines = render("plain").splitlines()
    assert lines[0] == "   id  state   note"
    assert lines[1].startswith("    7  READY   short")
    assert lines[2].endswith("a long note end") and "12345  FAILED" in lines[2]


def test_table_wraps_text_only():
    lines = render("table").splitlines()
    assert lines[1] == "-----  ------  " + "-" * 25
    assert all(len(ln) <= 40 for ln in lines)
    assert lines[3].startswith("12345  FAILED  a long note")
    wrapped = " ".join(ln[15:].strip() for ln in lines[3:])
    assert wrapped.split() == ("a long note " * 8 + "end").split()
    assert all(ln[:14].strip() == "" for ln in lines[4:])


#: What another user may have written into a task: a new window title, a cleared screen, text
#: hidden from the reader (conceal), a C1 control sequence, and reordered text.
HOSTILE = "run\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\x1b[0m\x9b31m\u202eevil\x7f"


@pytest.mark.parametrize("mode", ["table", "plain", "tsv", "json"])
def test_nothing_a_terminal_acts_on_reaches_it(mode):
    shown = render(mode, [(1, "READY" + HOSTILE, HOSTILE, 2)], width=80)
    # COPY's text format (tsv) has escapes for the C0 controls and DEL only: other text as is
    passed = "\x9b\u202e" if mode == "tsv" else ""
    active = [c for c in shown if (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e")
              and c not in "\n\t" + passed]
    assert active == []
    if mode == "json":
        assert json.loads(shown)[0]["note"] == HOSTILE
    assert "hidden" in shown and "evil" in shown
    if mode in ("table", "plain"):
        assert "\\x1b[8mhidden" in shown and "\\x9b31m\\u202eevil\\x7f" in shown


def test_tsv_escapes_controls_as_copy_reads_them():
    assert render("tsv", [(1, "READY", "a\x1bb\x7f", 2)]).splitlines()[1] == \
        "1\tREADY\ta\\x1bb\\x7f"


def test_fit_shrinks_the_widest_text_column_first():
    cols = [Column("id", "id"), Column("a"), Column("b")]
    assert fit(cols, [5, 60, 30], 80) == [5, 41, 30]
    assert sorted(fit(cols, [5, 60, 60], 80)) == [5, 35, 36]
    assert fit(cols, [5, 10, 10], 80) == [5, 10, 10]


def test_tsv_escapes_and_json_types():
    rows = [(1, "READY", "tab\there\nnewline \\ back", 2.5)]
    assert render("tsv", rows).splitlines()[1] == "1\tREADY\ttab\\there\\nnewline \\\\ back"
    moment = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    out = Output(mode="json", stream=io.StringIO(), fields="id,n")
    out.write(LISTING, [(1, "READY", moment, 2.5)])
    assert json.loads(out.stream.getvalue()) == [{"id": 1, "n": 2.5}]
    assert iso_time(moment).endswith(moment.astimezone().strftime("%H:%M:%S%z")[:-2] + ":"
                                     + moment.astimezone().strftime("%z")[-2:])


def test_json_gives_plain_values_of_every_kind():
    """The writer's fast paths (times, JSON text, the C encoder) agree with plain()."""
    from enum import Enum
    from pathlib import Path

    class Colour(Enum):
        RED = "red"

    moment = datetime(2024, 5, 1, 12, 0, 7, 999, tzinfo=UTC)
    columns = (Column("t", "time"), Column("j", "json"), Column("d", "json"), Column("e"),
               Column("p"), Column("b", "state"), Column("u"), Column("none"), Column("f"))
    row = (moment, '{"a": [1, "é"]}', {"k": moment}, Colour.RED, Path("/x/y"), True, "tab\t\"é",
           None, 0.5)
    out = Output(mode="json", stream=io.StringIO())
    out.write(Listing(columns), [row, row])
    want = {"t": iso_time(moment), "j": {"a": [1, "é"]}, "d": {"k": iso_time(moment)},
            "e": "red", "p": "/x/y", "b": True, "u": "tab\t\"é", "none": None, "f": 0.5}
    assert json.loads(out.stream.getvalue()) == [want, want]
    assert out.stream.getvalue().count("\n") == 4  # one object a line


def test_fields_replace_or_add():
    assert LISTING.select("n,id", "plain") == [3, 0]
    assert LISTING.select("+n", "plain") == [0, 1, 2, 3]
    assert LISTING.select(None, "json") == [0, 1, 2, 3]
    with pytest.raises(InvalidInput, match="unknown field 'x'"):
        LISTING.select("x", "plain")


def test_empty_listing_prints_a_header_or_an_empty_array():
    assert render("plain", []) == "id  state  note\n"
    assert render("json", []) == "[]\n"


@pytest.mark.parametrize(("text", "minutes"), [
    ("90", 90), (90, 90), ("1:30:00", 90), ("30:00", 30), ("2h", 120), ("1h30m", 90),
    ("45s", 1), ("1-00", 1440), ("1-2:30", 1590), ("1-00:00:30", 1441), ("0", 0), ("1d", 1440),
])
def test_wall_times(text, minutes):
    assert parse_minutes(text) == minutes


@pytest.mark.parametrize("text", ["", "-5", "soon", "1:2:3:4", "2 h", "400d", "1h-2m"])
def test_bad_wall_times(text):
    with pytest.raises(InvalidInput, match="wall time"):
        parse_minutes(text)


def test_configuration_layers_and_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text('queue = "debug"\naccount = "A1"\n')
    project = tmp_path / "project"
    project.mkdir()
    (project / "balsam.toml").write_text('queue = "prod"\nscheduler_flags = ["--qos=x"]\n')
    os.chmod(project / "balsam.toml", 0o644)
    settings = load_settings(project, env={"BALSAM_ACCOUNT": "A2"})
    found = {s.key: (s.value, s.source) for s in settings}
    assert found["queue"] == ("prod", str(project / "balsam.toml"))
    assert found["account"] == ("A2", "BALSAM_ACCOUNT")
    assert found["scheduler_flags"] == (["--qos=x"], str(project / "balsam.toml"))
    assert found["output"] == ("auto", "default")
    with pytest.raises(InvalidInput, match="output must be one of"):
        load_settings(project, env={"BALSAM_OUTPUT": "xml"})
    for flag in ("--qos=x\\n#SBATCH --x", "--mem=1G\\n"):  # a trailing newline too
        (project / "balsam.toml").write_text(f'scheduler_flags = ["{flag}"]\n')
        with pytest.raises(InvalidInput, match="control character"):
            load_settings(project, env={})


def test_a_project_file_others_can_write_is_refused(tmp_path):
    """balsam.toml is read through the control zone's guard: no symlink, nobody else's."""
    project = tmp_path / "project"
    project.mkdir()
    path = project / "balsam.toml"
    path.write_text('queue = "q"\n')
    os.chmod(path, 0o666)
    with pytest.raises(UnsafeFile, match="writable by everyone"):
        load_settings(project, env={})
    path.unlink()
    (tmp_path / "elsewhere.toml").write_text('queue = "q"\n')
    path.symlink_to(tmp_path / "elsewhere.toml")
    with pytest.raises(UnsafeFile, match="symbolic link"):
        load_settings(project, env={})


def _launcher(**kw) -> monitor.LauncherStatus:
    base = {"id": 1, "owner": "u", "hostname": "h", "pid": 1, "batch_job_id": None,
            "scheduler_id": None, "job_mode": "mpi", "num_nodes": 4,
            "started_at": datetime.now(UTC), "heartbeat_age": 1.0, "alive": True,
            "suspect": "", "running": 0}
    return monitor.LauncherStatus(**(base | kw))


def test_why_a_task_does_not_run():
    assert monitor.unrunnable("w", 1, 1, []) == "no launcher alive"
    assert monitor.unrunnable("w", 1, 1, [_launcher(alive=False, suspect="presumed dead")]) == \
        "no launcher alive"
    assert monitor.unrunnable("w", 1, 1, [_launcher(suspect="heartbeat late")]) == ""
    assert monitor.unrunnable("w", 8, 1, [_launcher()]) == \
        "needs 8 nodes; the live launchers have at most 4"
    assert monitor.unrunnable("x", 1, 1, [_launcher(wf_filter="w")]) == \
        "workflow x: no live launcher serves it (they run w)"
    assert monitor.unrunnable("w", 2, 1, [_launcher(job_mode="serial")]).startswith(
        "needs MPI")
    assert monitor.unrunnable("w", 2, 1, [_launcher()]) == ""


def test_why_a_task_does_not_fit_in_the_time_left():
    """A launcher claims a task only if its wall time fits in the whole minutes it has left."""
    soon, later = _launcher(minutes_left=5.94), _launcher(minutes_left=30.0)
    assert monitor.unrunnable("w", 1, 1, [soon], wall_time_minutes=5) == ""
    assert monitor.unrunnable("w", 1, 1, [soon], wall_time_minutes=6) == \
        "needs 6 min of wall time; the live launchers that could run it stop within 5.9 min"
    assert monitor.unrunnable("w", 1, 1, [soon, later], wall_time_minutes=6) == ""
    assert monitor.unrunnable("w", 1, 1, [_launcher()], wall_time_minutes=10**6) == ""  # no limit
    # Only launchers that could run it otherwise count: a long-lived serial one cannot run MPI.
    serial = _launcher(job_mode="serial", minutes_left=None)
    assert monitor.unrunnable("w", 2, 1, [soon, serial], wall_time_minutes=6).startswith(
        "needs 6 min of wall time")


def test_why_no_launcher_trusts_a_task():
    alices = _launcher(owner="alice", trusted=frozenset({"alice", "balsam_admin"}))
    bobs = _launcher(owner="bob", trusted=frozenset({"bob", "balsam_admin"}))
    mine = monitor.trust_needs("alice", "alice", "sim", "alice")
    assert monitor.unrunnable("w", 1, 1, [alices], mine) == ""
    assert monitor.unrunnable("w", 1, 1, [bobs], mine) == "no running launcher trusts alice"
    by_bob = monitor.trust_needs("alice", "bob", "sim", "alice")
    assert monitor.unrunnable("w", 1, 1, [alices], by_bob) == \
        "changed by bob: no running launcher trusts bob"
    app_by_bob = monitor.trust_needs("alice", "alice", "sim", "bob")
    assert monitor.unrunnable("w", 1, 1, [alices], app_by_bob) == \
        "its app sim was changed by bob: no running launcher trusts bob"
    # each trusted by one launcher, but by none both
    assert monitor.unrunnable("w", 1, 1, [alices, bobs], by_bob) == \
        "no running launcher trusts all of alice, bob"
    # only launchers that could run it count: alice's serial launcher cannot
    serial = _launcher(owner="alice", job_mode="serial", trusted=alices.trusted)
    assert monitor.unrunnable("w", 2, 1, [serial, bobs], mine) == \
        "no running launcher trusts alice"
    assert monitor.unrunnable("w", 1, 1, [bobs], monitor.trust_needs("bob", "bob", "a", "bob")) \
        == ""


@pytest.mark.pg
@pytest.mark.parametrize(("message", "cause"), [
    ("exit 3: a | b | last words", "exit 3: last words"),
    ("stopped after 12.5s: SIGTERM", "stopped: SIGTERM"),
    ("killed by SIGKILL: out of memory", "killed by SIGKILL: out of memory"),
    ("timed out, without automatic retry", "timed out, without automatic retry"),
    ("exit 1: first\nsecond", "exit 1: second"),
    ("", "(no message)"),
])
def test_failure_causes(db, message, cause):
    """One rule for every reader: migration 0021's balsam_failure_cause."""
    row = db.execute("SELECT balsam_failure_cause(%s) AS cause", (message,)).fetchone()
    assert row["cause"] == cause
