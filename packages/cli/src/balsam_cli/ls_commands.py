"""``balsam ls``: tasks (streamed), apps, workflows, launchers, states, history, causes, tree.

Every listing goes through :mod:`balsam.output`; task rows come from a server-side cursor and
are written as they arrive. The info column says why a task is not running: the parents it
waits for, why no live launcher can take it, or the cause of its failure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import asdict
from itertools import islice
from typing import Any

import click

from balsam import api, dag, monitor
from balsam.db import Connection
from balsam.errors import InvalidInput
from balsam.models import Change, Event
from balsam.output import Output, json_text, options, visible
from balsam.states import State, parse_state
from balsam.triage import ERROR_STATES
from balsam_cli import listings

#: ``ls`` shows this many tasks unless told otherwise (the database may hold millions).
DEFAULT_LIMIT = 100
WHAT = ("jobs", "tasks", "apps", "wf", "workflows", "launchers")


@click.command("ls")
@click.argument("what", required=False, default="jobs", type=click.Choice(WHAT))
@click.option("--workflow", "--wf", "workflow", help="Only this workflow.")
@click.option("--state", "states", multiple=True,
              help="Only tasks in this state (repeatable, or comma separated).")
@click.option("--name", help="Only tasks whose name contains this.")
@click.option("--id", "ids", type=int, multiple=True, help="Only this task (repeatable).")
@click.option("--app", "app_name", help="Only tasks of this app.")
@click.option("--by-states", is_flag=True, help="Count the matching tasks in each state.")
@click.option("--by-cause", is_flag=True,
              help="Group failed tasks (or those of --state) by cause: exit code and last "
                   "line of output.")
@click.option("--tree", is_flag=True, help="Show the dependencies as a tree.")
@click.option("--history", type=int, is_flag=False, flag_value=0, metavar="[ID]",
              help="Show every state change of a task; alone, of every task listed (legacy).")
@click.option("--changes", type=int, metavar="ID",
              help="Show who changed what a task runs (args, app, environment...).")
@click.option("--wide", "--verbose", "wide", is_flag=True, help="Show more columns.")
@click.option("--limit", type=int, default=DEFAULT_LIMIT,
              show_default=True, help="Show at most this many tasks (0: all).")
@click.option("--all", "show_all", is_flag=True,
              help="Every task (--limit 0); with launchers, ended ones too.")
@options
def ls(what: str, workflow: str | None, states: tuple[str, ...], name: str | None,
       ids: tuple[int, ...], app_name: str | None, by_states: bool, by_cause: bool, tree: bool,
       history: int | None, changes: int | None, wide: bool, limit: int, show_all: bool,
       out: Output) -> None:
    """List tasks (or apps, workflows, launchers), filtered; say why tasks do not run.

    Times are ISO 8601 in local time. On a terminal long text wraps inside its column; piped,
    each row is one line (--output tsv or json for scripts).
    """
    if limit < 0:
        message = f"--limit must be 0 (all) or more, got {limit}"
        raise InvalidInput(message)
    views = [flag for flag, given in (("--by-states", by_states), ("--by-cause", by_cause),
                                      ("--tree", tree), ("--history", history is not None),
                                      ("--changes", changes is not None)) if given]
    if len(views) > 1:
        message = f"{views[0]} and {views[1]} are two different listings: choose one"
        raise click.UsageError(message)
    task_options = [flag for flag, given in (
        ("--workflow", workflow), ("--state", states), ("--name", name), ("--id", ids),
        ("--app", app_name), *((v, True) for v in views)) if given]
    if what in ("apps", "wf", "workflows", "launchers") and task_options:
        message = f"{task_options[0]} is an option of the task listing, not of 'ls {what}'"
        raise click.UsageError(message)
    conn = api.connection()
    if what == "apps":
        _apps(conn, out)
    elif what in ("wf", "workflows"):
        _workflows(conn, out)
    elif what == "launchers":
        _launchers(conn, out, show_all)
    elif history:
        _history(conn, history, out)
    elif changes is not None:
        _changes(conn, changes, out)
    else:
        wanted = [parse_state(s) for word in states for s in word.split(",") if s.strip()]
        filters = {"ids": ids or None, "workflow": workflow, "name": name, "app": app_name,
                   "state": wanted or None}
        if history is not None:
            _histories(conn, filters, out, 0 if show_all else limit)
        elif by_states:
            _counts(conn, filters, out)
        elif by_cause:
            _causes(conn, filters, wanted, out)
        elif tree:
            _tree(conn, filters, out, 0 if show_all else limit)
        else:
            _tasks(conn, filters, out, 0 if show_all else limit, wide)


# --- tasks -----------------------------------------------------------------------------------


def resolved(conn: Connection, filters: dict[str, Any]) -> dict[str, Any]:
    """Filters as the queries take them (app name to id, states to values)."""
    app = filters.get("app")
    states = filters.get("state")
    return {"ids": sorted(set(filters["ids"])) if filters.get("ids") else None,
            "workflow": filters.get("workflow"), "name": filters.get("name"),
            "states": sorted({str(s) for s in states}) if states else None,
            "app_id": api.get_app(app, conn=conn).id if app else None}


def _tasks(conn: Connection, filters: dict[str, Any], out: Output, limit: int,
           wide: bool) -> None:
    columns = out.selected(listings.TASKS_WIDE if wide else listings.TASKS)
    shown = len(columns)
    # The shown columns first, then those the info column is worked out from.
    needed = list(dict.fromkeys([*(c.key for c in columns), "id", "state", "info", "workflow",
                                 "num_nodes", "ranks_per_node", "wall_time_minutes",
                                 "launcher_id", "cause", "owner",
                                 "changed_by", "app", "app_changed_by"]))
    rows = monitor.tasks(conn, needed, filters=resolved(conn, filters),
                         limit=limit + 1 if limit else None)
    counted = _Counted(_explained(conn, rows, needed), limit)
    with closing(rows):
        out.write_rows(columns, (r[:shown] for r in counted))
    if counted.more:
        out.note(f"(first {limit} shown; more match: use --limit N, --all, or filters)")


class _Counted:
    """Passes at most ``limit`` rows (0: all) and remembers whether more came."""

    def __init__(self, rows: Iterator[list[Any]], limit: int) -> None:
        self.rows, self.limit, self.more = rows, limit, False

    def __iter__(self) -> Iterator[list[Any]]:
        for n, row in enumerate(self.rows):
            if self.limit and n >= self.limit:
                self.more = True
                return
            yield row


def _explained(conn: Connection, rows: Iterator[tuple[Any, ...]], keys: Sequence[str],
               chunk: int = 1000) -> Iterator[list[Any]]:
    """The rows with their info column saying why each task is not running, or why the
    launcher of a RUNNING one is suspect."""
    i = {k: n for n, k in enumerate(keys)}
    live: list[monitor.LauncherStatus] | None = None
    holders: dict[int, monitor.LauncherStatus] | None = None
    why: dict[tuple[Any, ...], str] = {}
    while True:
        block = [list(r) for r in islice(rows, chunk)]
        if not block:
            return
        waiting = [r[i["id"]] for r in block if r[i["state"]] == State.AWAITING_PARENTS]
        reasons = api.waiting_reasons(waiting, conn=conn)
        for r in block:
            state, info = r[i["state"]], r[i["info"]]
            if state == State.AWAITING_PARENTS and r[i["id"]] in reasons:
                r[i["info"]] = reasons[r[i["id"]]]
            elif state in (State.FAILED, State.RUN_ERROR):
                r[i["info"]] = r[i["cause"]]
            elif state == State.RUNNING and r[i["launcher_id"]] is not None:
                if holders is None:
                    holders = monitor.unended(conn)
                holder = holders.get(r[i["launcher_id"]])
                if holder is not None and holder.suspect:
                    note = f"launcher {holder.id} suspect: {holder.suspect}"
                    r[i["info"]] = f"{info}; {note}" if info else note
            elif state in monitor.WAITING_FOR_NODES and r[i["launcher_id"]] is None:
                if live is None:
                    live = monitor.launchers(conn, alive_only=True)
                key = (r[i["workflow"]], r[i["num_nodes"]], r[i["ranks_per_node"]],
                       r[i["wall_time_minutes"]], r[i["owner"]], r[i["changed_by"]], r[i["app"]],
                       r[i["app_changed_by"]])
                if key not in why:
                    workflow, nodes, ranks, wall, *users = key
                    why[key] = monitor.unrunnable(workflow, nodes, ranks, live,
                                                  monitor.trust_needs(*users),
                                                  wall_time_minutes=wall)
                if why[key]:
                    r[i["info"]] = f"{info}; {why[key]}" if info else why[key]
        yield from block


def _counts(conn: Connection, filters: dict[str, Any], out: Output) -> None:
    counts = api.count_by_state(**filters, conn=conn)
    ordered = [(s, counts[s]) for s in State if s in counts]
    if out.mode == "json":
        _dump(out, {str(s): n for s, n in ordered})
        return
    rows = [(str(s), n) for s, n in ordered] + [("total", sum(counts.values()))]
    out.write(listings.STATE_COUNTS, rows)


def _causes(conn: Connection, filters: dict[str, Any], wanted: list[State],
            out: Output) -> None:
    """Failed runs grouped by cause (balsam.monitor: a run that failed counts once)."""
    bad = [s for s in wanted if s not in ERROR_STATES]
    others = [f"--{k}" for k in ("ids", "name", "app") if filters.get(k)]
    if bad or others:
        message = (f"--by-cause groups the failed runs of every task, or of one --workflow; "
                   f"it takes no {(['--state ' + bad[0]] if bad else others)[0]}")
        raise InvalidInput(message)
    groups = monitor.failures_by_cause(conn, workflow=filters.get("workflow"))
    out.records(listings.CAUSES, ({"count": g.count, "cause": g.cause,
                                   "latest_at": g.latest_at,
                                   "task_ids": _sample(g.task_ids, g.count)} for g in groups))


def _sample(ids: Sequence[int], count: int) -> str:
    return ",".join(map(str, ids)) + (",..." if count > len(ids) else "")


def _tree(conn: Connection, filters: dict[str, Any], out: Output, limit: int) -> None:
    tasks = api.get_tasks(**filters, limit=limit or None, conn=conn)
    waiting = [t.id for t in tasks if t.state == State.AWAITING_PARENTS and t.id is not None]
    reasons = api.waiting_reasons(waiting, conn=conn)
    by_id = {t.id: t for t in tasks if t.id is not None}
    edges = api.edges(by_id, conn=conn)
    if out.mode == "json":
        inner = [[p, c] for p, c in edges if p in by_id and c in by_id]
        records = [plain_task(t) | ({"info": reasons[t.id]} if t.id in reasons else {})
                   for t in tasks]
        _dump(out, {"tasks": records, "edges": inner})
        return
    roots, children = dag.forest(list(by_id), edges)
    fancy = out.interactive
    lines: list[str] = []

    def label(task_id: int) -> str:
        t = by_id[task_id]
        info = reasons.get(task_id, t.state_message)
        return visible(f"{t.id} {t.name} [{t.state}]" + (f"  {info}" if info else ""))

    def grow(task_id: int, prefix: str, seen: set[int]) -> None:
        kids = children.get(task_id, [])
        for n, child in enumerate(kids):
            last = n == len(kids) - 1
            branch = ("└── " if last else "├── ") if fancy else "  "
            if child in seen:
                lines.append(f"{prefix}{branch}{child} {visible(by_id[child].name)} (shown above)")
                continue
            seen.add(child)
            lines.append(f"{prefix}{branch}{label(child)}")
            grow(child, prefix + (("    " if last else "│   ") if fancy else "  "), seen)

    seen: set[int] = set()
    for root in roots:
        seen.add(root)
        lines.append(label(root))
        grow(root, "", seen)
    if out.header:
        out.stream.write(f"{len(by_id)} task(s)\n")
    out.stream.write("".join(f"{ln}\n" for ln in lines))


def plain_task(task: Any) -> dict[str, Any]:
    """A task record as JSON shows it (``app`` by name, ``workdir`` resolved)."""
    data = asdict(task) | {"app": task.app_name, "workdir": task.workdir}
    data.pop("app_name")
    return data


def _dump(out: Output, data: Any) -> None:
    out.stream.write(json_text(data) + "\n")


# --- other listings --------------------------------------------------------------------------


def _apps(conn: Connection, out: Output) -> None:
    write_apps(api.list_apps(conn=conn), out)


def write_apps(rows: list[tuple[Any, int]], out: Output) -> None:
    out.records(listings.APPS, (asdict(a) | {"tasks": n} for a, n in rows))


def _workflows(conn: Connection, out: Output) -> None:
    progress = monitor.workflow_progress(conn)
    if out.mode == "json":
        _dump(out, {p.workflow: dict(sorted(p.counts.items())) for p in progress})
        return
    rows = []
    for p in progress:
        c = p.counts
        states = ", ".join(f"{s} {c[s]:,}" for s in State if s in c)
        rows.append((p.workflow or "(none)", p.total, c.get(State.JOB_FINISHED, 0),
                     c.get(State.FAILED, 0), c.get(State.RUNNING, 0), p.finished_last_hour,
                     p.eta_seconds, states))
    out.write(listings.WORKFLOWS, rows)


def _launchers(conn: Connection, out: Output, show_all: bool) -> None:
    found = monitor.launchers(conn, alive_only=not show_all)
    out.records(listings.LAUNCHERS, (
        asdict(lc) | {"status": _status(lc), "suspect": lc.suspect or lc.end_reason,
                      "time_left": _time_left(lc)}
        for lc in found))
    if not found and out.interactive:
        out.note("no launcher is running" + ("" if show_all else " (--all shows ended ones)"))


def _time_left(lc: monitor.LauncherStatus) -> float | None:
    """Seconds until a running launcher stops (None: ended, or no limit known)."""
    if lc.ended_at is not None or lc.minutes_left is None:
        return None
    return lc.minutes_left * 60


def _status(lc: monitor.LauncherStatus) -> str:
    if lc.ended_at is not None:
        return "ended"
    return "late" if lc.alive and lc.suspect else "alive" if lc.alive else "dead"


def _history(conn: Connection, task_id: int, out: Output) -> None:
    """Every state change of a task; then, in text, who changed what it runs (JSON: the
    state changes alone, as before; ``--changes`` gives the others). A removed task's too."""
    entries = api.history(task_id, conn=conn)
    out.records(listings.HISTORY, (asdict(e) for e in entries if isinstance(e, Event)),
                title=f"task {task_id}")
    found = [asdict(c) for c in entries if isinstance(c, Change)]
    if found and out.mode != "json":
        out.stream.write("\n")
        out.records(listings.CHANGES, found, title=f"changes of task {task_id}")


def _histories(conn: Connection, filters: dict[str, Any], out: Output, limit: int) -> None:
    """Legacy ``ls --history``: the state changes of every task listed, one table each (JSON:
    one object, by task id)."""
    tasks = api.get_tasks(**filters, limit=limit or None, conn=conn)
    if out.mode == "json":
        _dump(out, {str(t.id): [asdict(e) for e in api.history(t.id, conn=conn)
                                if isinstance(e, Event)] for t in tasks if t.id is not None})
        return
    for n, task in enumerate(tasks):
        assert task.id is not None
        if n:
            out.stream.write("\n")
        out.records(listings.HISTORY, (asdict(e) for e in api.history(task.id, conn=conn)
                                       if isinstance(e, Event)),
                    title=f"task {task.id} {task.name} [{task.state}]")
    if not tasks and out.interactive:
        out.note("no task matches")


def _changes(conn: Connection, task_id: int, out: Output) -> None:
    entries = api.history(task_id, conn=conn)  # NotFound for a task that never was
    out.records(listings.CHANGES, (asdict(c) for c in entries if isinstance(c, Change)),
                title=f"changes of task {task_id}")
