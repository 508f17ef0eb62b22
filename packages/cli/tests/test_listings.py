"""The output contract over every listing: rendered at 80 columns (table) and piped (plain,
tsv, json), no value is cut. A new listing is covered by adding its command line to LISTINGS."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from click.testing import CliRunner

from balsam import api
from balsam.output import HEADERS
from balsam.plugins import get_plugin_manager
from balsam_cli import listings
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg

TODAY = date.today()
WINDOW = ["--since", str(TODAY - timedelta(days=1)), "--until", str(TODAY + timedelta(days=1))]
LISTINGS = [
    ["ls"],
    ["ls", "--wide"],
    ["ls", "--fields", "+description,created_at,state_changed_at"],
    ["ls", "apps"],
    ["app", "ls"],
    ["ls", "wf"],
    ["ls", "--by-states"],
    ["ls", "launchers", "--all"],
    ["ls", "--history", "1"],
    ["ls", "--changes", "1"],
    ["ls", "--state", "FAILED", "--by-cause"],
    ["queue", "--no-sync", "--all"],
    ["report", "errors", *WINDOW],
    ["report", "throughput", *WINDOW, "--by", "workflow"],
    ["report", "utilization", *WINDOW, "--by", "user"],
    ["report", "summary", *WINDOW],
    ["plugins"],
    ["config"],
]
LONG = "a-rather-long-value-" * 4
RULE = re.compile(r"^-+(  -+)*$")
#: Ids, numbers, times and state names: never wrapped.
UNBROKEN = re.compile(r"[-+0-9.:T,]+|[A-Z_]+")


@pytest.fixture
def busy(project, db):
    """Apps, tasks, failures, a launcher and a batch job, with long and non-ASCII values."""
    api.add_app("simulation-ünïcode", "/opt/site/applications/" + LONG + "/bin/simulate.x",
                description="simulates " * 12)
    api.add_app("sim", "/bin/echo")
    ids = api.add_tasks([{"app": "simulation-ünïcode", "name": f"task-{i}-{LONG}",
                          "workflow": f"wf-{i % 3}-ünï", "args": f"--input {LONG}{i} -n {i}",
                          "num_nodes": 1 + i % 8, "description": "dé " * 40}
                         for i in range(12)])
    db.execute("INSERT INTO batch_jobs (scheduler, scheduler_id, num_nodes, wall_time_minutes, "
               "state, state_message, started_at) VALUES ('slurm', '123456789', 4, 90, "
               "'running', %s, now())", ("running on " + LONG,))
    launcher = db.execute(
        "INSERT INTO launchers (batch_job_id, hostname, pid, job_mode, num_nodes, wf_filter) "
        "VALUES (1, %s, 4242, 'mpi', 4, 'wf-1-ünï') RETURNING id",
        ("login-node-" + LONG,)).fetchone()["id"]
    for n, tid in enumerate(ids[:4]):
        for state in ("STAGED_IN", "PREPROCESSED"):
            api.set_state([tid], state)
        db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", (launcher, tid))
        api.set_state([tid], "RUNNING")
        message = f"exit {n + 1}: first line | Traceback: {LONG} | ValueError: bad input {n}"
        db.execute("UPDATE tasks SET state = 'RUN_ERROR', state_message = %s WHERE id = %s",
                   (message, tid))
        db.execute("UPDATE tasks SET launcher_id = NULL WHERE id = %s", (tid,))
        api.set_state([tid], "FAILED", message="the run failed and the task has no handler")
    return ids


def run(args: list[str], *extra: str):
    result = CliRunner(env={"COLUMNS": "80"}).invoke(build_cli(get_plugin_manager()),
                                                     [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def blocks(text: str) -> list[list[str]]:
    """Tables of an output: runs of lines between blank lines, without '#' comments."""
    out: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            out.append([])
        elif not line.startswith("# "):
            out[-1].append(line)
    return [b for b in out if b]


def tsv_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    unescape = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}
    tables = []
    for block in blocks(text):
        rows = [[re.sub(r"\\[tnr\\]", lambda m: unescape[m.group()], c) for c in ln.split("\t")]
                for ln in block]
        tables.append((rows[0], rows[1:]))
    return tables


def spans(rule: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]


def table_cells(block: list[str]) -> tuple[list[str], list[list[list[str]]]]:
    """Header and rows of a rendered table: each cell as its lines (wrapped text)."""
    rule_at = next(i for i, ln in enumerate(block) if RULE.match(ln))
    cols = spans(block[rule_at])
    cols[-1] = (cols[-1][0], 10**6)  # the last column is not padded
    header = [block[rule_at - 1][a:b].strip() for a, b in cols]
    rows: list[list[list[str]]] = []
    for line in block[rule_at + 1:]:
        cells = [line[a:b].strip() for a, b in cols]
        if cells[0] or not rows:
            rows.append([[c] for c in cells])
        else:
            for cell, part in zip(rows[-1], cells, strict=True):
                if part:
                    cell.append(part)
    return header, rows


def squeeze(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("args", LISTINGS, ids=" ".join)
def test_no_value_is_cut(busy, args):
    reference = tsv_tables(run(args, "-o", "tsv"))
    assert reference

    # Piped (the default without a terminal): plain, aligned, one row per line.
    plain = run(args)
    assert plain == run(args, "-o", "plain")
    assert "│" not in plain and "─" not in plain
    for (keys, rows), block in zip(reference, blocks(plain), strict=True):
        assert block[0].split() == [HEADERS.get(k, k) for k in keys]
        assert len(block) == 1 + len(rows)
        for row, line in zip(rows, block[1:], strict=True):
            for cell in row:
                assert (cell or "-").replace("\n", "\\n") in line, (cell, line)

    # A terminal of 80 columns: wrapped text, ids, states, numbers and times never broken.
    table = [b for b in blocks(run(args, "-o", "table")) if any(RULE.match(ln) for ln in b)]
    for (keys, rows), block in zip(reference, table, strict=True):
        header, cells = table_cells(block)
        assert header == [HEADERS.get(k, k) for k in keys]
        assert len(cells) == len(rows)
        for expected, shown in zip(rows, cells, strict=True):
            for value, lines in zip(expected, shown, strict=True):
                assert squeeze(" ".join(lines)) == squeeze(value.replace("\n", "\\n")), \
                    (value, lines)
                if UNBROKEN.fullmatch(value):
                    assert len(lines) == 1, (value, lines)

    # JSON parses, with one record per row where the listing is a list.
    data = json.loads(run(args, "-o", "json"))
    if isinstance(data, list):
        assert len(data) == len(reference[0][1])


def test_no_header_and_fields(busy):
    lines = run(["ls", "--no-header", "--fields", "id,state", "-o", "tsv"]).splitlines()
    assert lines[0].split("\t")[1] in ("FAILED", "READY") and len(lines) == 12
    assert run(["ls", "--fields", "id", "-o", "json"]).count('"id"') == 12
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["ls", "--fields", "colour"])
    assert result.exit_code == 1 and "unknown field 'colour'" in result.output


def test_every_task_field_is_read(busy):
    keys = [c.key for c in listings.TASK_COLUMNS]
    records = json.loads(run(["ls", "--all", "--fields", ",".join(keys), "-o", "json"]))
    assert [list(r) for r in records] == [keys] * 12
    first, failed = records[4], records[0]
    assert (first["id"], first["app"], first["workflow"], first["num_nodes"]) == \
        (5, "simulation-ünïcode", "wf-1-ünï", 5)
    assert first["workdir"] == f"data/wf-1-ünï/task-4-{LONG}_5"
    assert (first["data"], first["environ_vars"], first["state"]) == ({}, {}, "READY")
    assert (failed["state"], failed["launcher_id"]) == ("FAILED", None)
    assert failed["state_message"] == "the run failed and the task has no handler"


def test_legacy_ls_fields_and_output_variable(busy, monkeypatch):
    monkeypatch.setenv("BALSAM_LS_FIELDS", "num_nodes:args")
    header = run(["ls", "-o", "tsv"]).splitlines()[0].split("\t")
    assert header == ["id", "name", "workflow", "app", "state", "info", "num_nodes", "args"]
    monkeypatch.setenv("BALSAM_OUTPUT", "json")
    assert json.loads(run(["ls"]))[0]["id"] == 1


def test_why_tasks_do_not_run(busy, db):
    rows = {r["id"]: r for r in json.loads(run(["ls", "--all", "-o", "json"]))}
    assert rows[1]["info"] == "exit 1: ValueError: bad input 0"
    # The live launcher serves wf-1-ünï with 4 nodes: task 6 (wf-2) is not served; task 8
    # (wf-1, 1 + 7 % 8 = 8 nodes) is too big for it; task 11 (wf-1, 3 nodes) fits.
    assert "no live launcher serves it" in rows[6]["info"]
    assert rows[8]["info"] == "needs 8 nodes; the live launchers have at most 4"
    assert rows[11]["info"] == ""
    # It stops in 5 minutes: task 11 needing 10 does not fit (a claim would not take it).
    db.execute("UPDATE launchers SET stops_at = now() + interval '5 min 30 s'")
    db.execute("UPDATE tasks SET wall_time_minutes = 10 WHERE id = 11")
    rows = {r["id"]: r for r in json.loads(run(["ls", "--all", "-o", "json"]))}
    assert re.fullmatch(r"needs 10 min of wall time; the live launchers that could run it stop "
                        r"within 5\.[45] min", rows[11]["info"]), rows[11]["info"]
    [launcher] = json.loads(run(["ls", "launchers", "-o", "json"]))
    assert 320 < launcher["time_left"] <= 330  # seconds
    db.execute("UPDATE tasks SET wall_time_minutes = 5 WHERE id = 11")
    assert {r["id"]: r for r in json.loads(run(["ls", "--all", "-o", "json"]))}[11]["info"] == ""
    db.execute("UPDATE launchers SET ended_at = now()")
    rows = {r["id"]: r for r in json.loads(run(["ls", "--all", "-o", "json"]))}
    assert rows[11]["info"] == "no launcher alive"


def test_failures_by_cause_and_retry(busy):
    causes = json.loads(run(["ls", "--state", "FAILED", "--by-cause", "-o", "json"]))
    assert sorted((c["count"], c["cause"]) for c in causes) == [
        (1, f"exit {n}: ValueError: bad input {n - 1}") for n in range(1, 5)]
    cli = build_cli(get_plugin_manager())
    asked = CliRunner().invoke(cli, ["retry"], input="n\n")
    assert asked.exit_code == 1 and "Retry 4 tasks" in asked.output
    assert api.count_by_state(state="FAILED") == {"FAILED": 4}
    one = CliRunner().invoke(cli, ["retry", "--cause", "bad input 2"])
    assert one.exit_code == 0 and "Retried 1 task(s): 3" in one.output
    rest = CliRunner().invoke(cli, ["retry", "-y"])
    assert rest.exit_code == 0 and "Retried 3 task(s): 1, 2, 4" in rest.output
    assert api.count_by_state(ids=[1, 2, 3, 4]) == {"READY": 4}
    assert [e.message for e in api.history(3)][-1] == "retried by user"
    none = CliRunner().invoke(cli, ["retry", "--state", "READY"])
    assert none.exit_code == 1 and "retry resets FAILED" in none.output


def test_ls_says_why_a_running_tasks_launcher_is_suspect_and_reaps_the_dead(project, db):
    api.add_app("sim", "/bin/echo")
    quiet_task, ended_task = api.add_tasks([{"app": "sim", "name": f"t{i}"} for i in range(2)])
    job = db.execute("INSERT INTO batch_jobs (scheduler, scheduler_id, num_nodes, "
                     "wall_time_minutes, state) VALUES ('slurm', '5', 1, 90, 'running') "
                     "RETURNING id").fetchone()["id"]
    quiet, in_job = (db.execute(
        "INSERT INTO launchers (batch_job_id, hostname, pid, job_mode, num_nodes, heartbeat_at) "
        "VALUES (%s, 'nid1', 1, 'mpi', 1, now() - make_interval(secs => %s)) RETURNING id",
        (batch, age)).fetchone()["id"] for batch, age in ((None, 25), (job, 0)))
    for tid, launcher in ((quiet_task, quiet), (ended_task, in_job)):
        for state in ("STAGED_IN", "PREPROCESSED"):
            api.set_state([tid], state)
        db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", (launcher, tid))
        api.set_state([tid], "RUNNING", message="started")
    rows = {r["id"]: r for r in json.loads(run(["ls", "-o", "json"]))}
    assert rows[quiet_task]["info"].startswith(
        f"started; launcher {quiet} suspect: heartbeat late: 2")  # (25 s of a 60 s timeout)
    assert rows[ended_task]["info"] == "started"
    # The scheduler reports the batch job over: the next command reaps its launcher at once.
    db.execute("UPDATE batch_jobs SET state = 'finished', ended_at = now() WHERE id = %s", (job,))
    api.connection().close()  # a new command: a new connection
    rows = {r["id"]: r for r in json.loads(run(["ls", "-o", "json"]))}
    assert rows[ended_task]["state"] == "RESTART_READY"
    assert rows[ended_task]["info"] == (f"launcher {in_job} presumed dead: its batch job is "
                                        "finished")
    assert rows[quiet_task]["state"] == "RUNNING"
