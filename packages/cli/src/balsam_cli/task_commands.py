"""Apps, tasks and their DAG from the command line: app, job, dep, ls, modify, rm, kill.

Every command is a thin layer over :mod:`balsam.api`: parse options, call it, print. Human output
is a rich table; ``--json`` prints the same data for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from balsam import api, dag
from balsam.errors import InvalidInput, NotFound
from balsam.models import App, Event, Task
from balsam.states import FINAL, State, parse_state

#: ``ls`` shows this many tasks unless told otherwise (the database may hold millions).
DEFAULT_LIMIT = 100
#: rm and kill ask before touching more than this many tasks (unless --yes).
CONFIRM_ABOVE = 1
#: Lets a VALUE start with a dash (a negative number is then refused by validation, not click).
LOOSE = {"ignore_unknown_options": True}


def _console() -> Console:
    return Console(soft_wrap=False)


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _confirm(action: str, ids: list[int], yes: bool) -> None:
    """Ask before acting on many tasks (click.Abort, exit 1, if the answer is no)."""
    if yes or len(ids) <= CONFIRM_ABOVE:
        return
    shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    click.confirm(f"{action} {len(ids)} tasks ({shown})?", abort=True)


def _ids_text(ids: list[int], shown: int = 10) -> str:
    return ", ".join(map(str, ids[:shown])) + (f" and {len(ids) - shown} more"
                                              if len(ids) > shown else "")


# --- apps ---------------------------------------------------------------------------------------


@click.group("app", invoke_without_command=True)
@click.option("--name", help="Unique name of the app.")
@click.option("--executable", "--exec", "executable", help="Command line that runs it.")
@click.option("--description", "--desc", "description", default="", help="What it does.")
@click.option("--preprocess", default="", help="Script run in the task's directory before it.")
@click.option("--postprocess", default="", help="Script run in the task's directory after it.")
@click.option("--envscript", default="", help="Script sourced to set up its environment.")
@click.pass_context
def app(ctx: click.Context, name: str | None, executable: str | None, description: str,
        preprocess: str, postprocess: str, envscript: str) -> None:
    """Add an app: balsam app --name NAME --executable CMD; or list, modify, remove apps."""
    given = name or executable or description or preprocess or postprocess or envscript
    if ctx.invoked_subcommand is not None:
        if given:
            message = f"options of 'balsam app' cannot be combined with '{ctx.invoked_subcommand}'"
            raise click.UsageError(message)
        return
    if not name or not executable:
        message = "balsam app needs --name and --executable (or one of: ls, modify, rm)"
        raise click.UsageError(message)
    created = api.add_app(name, executable, description=description, preprocess=preprocess,
                          postprocess=postprocess, envscript=envscript)
    click.echo(f"Added app {created.name} (id {created.id}): {created.executable}")


def _print_apps(rows: list[tuple[App, int]], as_json: bool) -> None:
    if as_json:
        _dump([asdict(a) | {"tasks": n} for a, n in rows])
        return
    table = Table("name", "executable", "description", "tasks", "owner")
    for a, n in rows:
        table.add_row(a.name, a.executable, a.description, str(n), a.owner)
    _console().print(table)


@app.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def app_ls(as_json: bool) -> None:
    """List apps with the number of tasks using each."""
    _print_apps(api.list_apps(), as_json)


@app.command("modify", context_settings=LOOSE)
@click.argument("name")
@click.argument("field")
@click.argument("value")
def app_modify(name: str, field: str, value: str) -> None:
    """Change FIELD (name, executable, description, preprocess, postprocess, envscript)."""
    changed = api.modify_app(name, field, value)
    click.echo(f"App {changed.name}: {field} = {value}")


@app.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also remove the tasks that use it.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def app_rm(name: str, force: bool, yes: bool) -> None:
    """Remove an app (refused while tasks use it, unless --force)."""
    found = api.get_app(name)
    if force:
        _confirm("Remove app and its", api.task_ids(app=found.name), yes)
    removed = api.remove_app(found.name, force=force)
    extra = f" and its {len(removed)} task(s)" if removed else ""
    click.echo(f"Removed app {found.name}{extra}")


# --- tasks --------------------------------------------------------------------------------------


@click.command("job")
@click.option("--name", required=True, help="Task name (part of its working directory).")
@click.option("--workflow", "--wf", "workflow", required=True, help="Workflow it belongs to.")
@click.option("--app", "--application", "app_name", required=True, help="Name of its app.")
@click.option("--args", default="", help="Command-line arguments for the app.")
@click.option("--description", default="", help="Free text.")
@click.option("--wall-time-minutes", "--wall-minutes", "wall_time_minutes", type=int, default=1,
              show_default=True, help="Expected run time.")
@click.option("--num-nodes", type=int, default=1, show_default=True)
@click.option("--ranks-per-node", type=int, default=1, show_default=True)
@click.option("--threads-per-rank", type=int, default=1, show_default=True)
@click.option("--threads-per-core", type=int, default=1, show_default=True)
@click.option("--cpu-affinity", default="none", show_default=True)
@click.option("--node-packing-count", type=int, default=1, show_default=True,
              help="How many such tasks may share a node (serial mode).")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment variable for the task (repeatable).")
@click.option("--data", default="{}", metavar="JSON", help="A JSON object for the task's use.")
@click.option("--input-files", default="", metavar="GLOB",
              help="Patterns of files to copy from the parents' directories.")
@click.option("--post-error-handler", "--post-handle-error", "post_error_handler",
              is_flag=True, help="Let the postprocess script handle a run error.")
@click.option("--post-timeout-handler", "--post-handle-timeout", "post_timeout_handler",
              is_flag=True, help="Let the postprocess script handle a timeout.")
@click.option("--auto-timeout-retry/--no-auto-timeout-retry", default=True, show_default=True,
              help="Run it again after a timeout.")
@click.option("--workdir", default=None,
              help="Working directory (default: data/WORKFLOW/NAME_ID in the project).")
@click.option("--parent", "parents", type=int, multiple=True, metavar="ID",
              help="A task this one waits for (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the new task as JSON.")
@click.option("--yes", "-y", is_flag=True, hidden=True, help="Accepted for legacy scripts.")
def job(name: str, workflow: str, app_name: str, parents: tuple[int, ...], as_json: bool,
        yes: bool, env: tuple[str, ...], **fields: Any) -> None:
    """Add a task: an app run with arguments and resources."""
    task = api.add_task(app_name, name=name, workflow=workflow, parents=parents,
                        environ_vars=list(env), **fields)
    if as_json:
        _dump(_task_json(task))
        return
    click.echo(f"Added task {task.id} ({task.state}) in {task.workdir}")


@click.command("dep")
@click.argument("parent", type=int)
@click.argument("child", type=int)
@click.option("--remove", is_flag=True, help="Drop the dependency instead.")
def dep(parent: int, child: int, remove: bool) -> None:
    """Make task CHILD wait until task PARENT has finished."""
    if remove:
        task = api.remove_dependency(parent, child)
        click.echo(f"Task {child} no longer depends on task {parent} ({task.state})")
        return
    task = api.add_dependency(parent, child)
    click.echo(f"Task {child} depends on task {parent} ({task.state})")


def _task_json(task: Task, reason: str | None = None) -> dict[str, Any]:
    data = asdict(task) | {"app": task.app_name, "workdir": task.workdir}
    data.pop("app_name")
    if reason:
        data["waiting_for"] = reason
    return data


def _info(task: Task, reasons: dict[int, str]) -> str:
    if task.state == State.AWAITING_PARENTS and task.id in reasons:
        return reasons[task.id]
    return task.state_message


@click.command("ls")
@click.argument("what", required=False, default="jobs",
                type=click.Choice(["jobs", "tasks", "apps", "wf"]))
@click.option("--workflow", "--wf", "workflow", help="Only this workflow.")
@click.option("--state", "states", multiple=True, help="Only tasks in this state (repeatable).")
@click.option("--name", help="Only tasks whose name contains this.")
@click.option("--id", "ids", type=int, multiple=True, help="Only this task (repeatable).")
@click.option("--app", "app_name", help="Only tasks of this app.")
@click.option("--by-states", is_flag=True, help="Count the matching tasks in each state.")
@click.option("--tree", is_flag=True, help="Show the dependencies as a tree.")
@click.option("--history", type=int, metavar="ID", help="Show every state change of a task.")
@click.option("--wide", "--verbose", "wide", is_flag=True, help="Show more columns.")
@click.option("--limit", type=int, default=DEFAULT_LIMIT, show_default=True,
              help="Show at most this many tasks (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def ls(what: str, workflow: str | None, states: tuple[str, ...], name: str | None,
       ids: tuple[int, ...], app_name: str | None, by_states: bool, tree: bool,
       history: int | None, wide: bool, limit: int, as_json: bool) -> None:
    """List tasks (or apps, or workflows), filtered; say why waiting tasks wait."""
    if what == "apps":
        _print_apps(api.list_apps(), as_json)
        return
    if what == "wf":
        _print_workflows(api.count_by_workflow(), as_json)
        return
    if history is not None:
        _print_history(history, api.history(history), as_json)
        return
    if limit < 0:
        message = f"--limit must be 0 (all) or more, got {limit}"
        raise InvalidInput(message)
    filters: dict[str, Any] = {
        "ids": ids or None, "workflow": workflow, "name": name, "app": app_name,
        "state": [parse_state(s) for s in states] or None,
    }
    if by_states:
        _print_counts(api.count_by_state(**filters), as_json)
        return
    tasks = api.get_tasks(**filters, limit=limit + 1 if limit else None)
    more = bool(limit) and len(tasks) > limit
    tasks = tasks[:limit] if limit else tasks
    waiting = [t.id for t in tasks if t.state == State.AWAITING_PARENTS and t.id is not None]
    reasons = api.waiting_reasons(waiting)
    if tree:
        _print_tree(tasks, reasons, as_json)
    elif as_json:
        _dump([_task_json(t, reasons.get(t.id or 0)) for t in tasks])
    else:
        _print_tasks(tasks, reasons, wide)
    if more and not as_json:
        click.echo(f"(first {limit} shown; more match: use --limit N, 0 for all, or filters)")


def _print_tasks(tasks: list[Task], reasons: dict[int, str], wide: bool) -> None:
    columns = ["id", "name", "workflow", "app", "state"]
    if wide:
        columns += ["nodes", "ranks/node", "wall min", "args", "owner", "launcher", "attempts",
                    "workdir"]
    table = Table(*columns, "info")
    for t in tasks:
        row = [str(t.id), t.name, t.workflow, t.app_name, str(t.state)]
        if wide:
            row += [str(t.num_nodes), str(t.ranks_per_node), str(t.wall_time_minutes), t.args,
                    t.owner, "" if t.launcher_id is None else str(t.launcher_id),
                    str(t.attempts), t.workdir]
        table.add_row(*row, _info(t, reasons))
    _console().print(table)


def _print_counts(counts: dict[State, int], as_json: bool) -> None:
    ordered = [(s, counts[s]) for s in State if s in counts]
    if as_json:
        _dump({str(s): n for s, n in ordered})
        return
    table = Table("state", "tasks")
    for s, n in ordered:
        table.add_row(str(s), f"{n:,}")
    table.add_row("total", f"{sum(counts.values()):,}", style="bold")
    _console().print(table)


def _print_workflows(counts: dict[str, dict[State, int]], as_json: bool) -> None:
    if as_json:
        _dump({wf: {str(s): n for s, n in c.items()} for wf, c in counts.items()})
        return
    table = Table("workflow", "tasks", "states")
    for wf, c in counts.items():
        states = ", ".join(f"{s} {c[s]:,}" for s in State if s in c)
        table.add_row(wf or "(none)", f"{sum(c.values()):,}", states)
    _console().print(table)


def _print_history(task_id: int, events: list[Event], as_json: bool) -> None:
    if as_json:
        _dump([asdict(e) for e in events])
        return
    table = Table("at", "from", "to", "user", "launcher", "message", title=f"task {task_id}")
    for e in events:
        at = e.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if e.at else ""
        table.add_row(at, e.from_state or "", e.to_state, e.db_user,
                      "" if e.launcher_id is None else str(e.launcher_id), e.message)
    _console().print(table)


def _print_tree(tasks: list[Task], reasons: dict[int, str], as_json: bool) -> None:
    by_id = {t.id: t for t in tasks if t.id is not None}
    edges = api.edges(by_id)
    if as_json:
        inner = [[p, c] for p, c in edges if p in by_id and c in by_id]
        _dump({"tasks": [_task_json(t, reasons.get(t.id or 0)) for t in tasks], "edges": inner})
        return
    roots, children = dag.forest(list(by_id), edges)
    shown: set[int] = set()

    def label(task_id: int) -> str:
        t = by_id[task_id]
        info = _info(t, reasons)
        return f"{t.id} {t.name} [{t.state}]" + (f"  {info}" if info else "")

    def grow(node: Tree, task_id: int) -> None:
        for child in children.get(task_id, []):
            if child in shown:
                node.add(f"{child} {by_id[child].name} (shown above)")
                continue
            shown.add(child)
            grow(node.add(label(child)), child)

    top = Tree(f"{len(by_id)} task(s)")
    for root in roots:
        shown.add(root)
        grow(top.add(label(root)), root)
    _console().print(top)


@click.command("modify", context_settings=LOOSE)
@click.argument("task_id", type=int, metavar="ID")
@click.argument("field")
@click.argument("value")
@click.option("--message", "-m", default="", help="Reason recorded with a state change.")
def modify(task_id: int, field: str, value: str, message: str) -> None:
    """Set FIELD of task ID to VALUE (state goes through the state machine)."""
    task = api.modify_task(task_id, field, value, message=message)
    click.echo(f"Task {task.id}: {field.replace('-', '_')} = {value} ({task.state})")


def _selected(ids: Iterable[int], workflow: str | None, states: tuple[str, ...],
              name: str | None, app_name: str | None) -> dict[str, Any]:
    return {"ids": list(ids) or None, "workflow": workflow, "name": name, "app": app_name,
            "state": [parse_state(s) for s in states] or None}


@click.command("rm")
@click.argument("targets", nargs=-1, metavar="[jobs|apps] [ID]...")
@click.option("--workflow", "--wf", "workflow", help="Tasks of this workflow.")
@click.option("--state", "states", multiple=True, help="Tasks in this state (repeatable).")
@click.option("--name", help="Tasks whose name contains this (apps: the app's name).")
@click.option("--app", "app_name", help="Tasks of this app.")
@click.option("--all", "all_tasks", is_flag=True, help="Every task (or every app).")
@click.option("--recursive", "-r", is_flag=True, help="Also remove the tasks below them.")
@click.option("--force", is_flag=True, help="Do not ask; for apps, remove their tasks too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(targets: tuple[str, ...], workflow: str | None, states: tuple[str, ...],
       name: str | None, app_name: str | None, all_tasks: bool, recursive: bool, force: bool,
       yes: bool) -> None:
    """Remove tasks by id or filter, with their history (asks first when there are several)."""
    words = list(targets)
    kind = words.pop(0) if words and words[0] in ("jobs", "tasks", "apps") else "jobs"
    if kind == "apps":
        _rm_apps(words, name, all_tasks, force, yes)
        return
    ids = _existing(_int_ids(words))
    filters = _selected(ids, workflow, states, name, app_name)
    if not all_tasks and not any(v is not None for v in filters.values()):
        message = "say which tasks to remove: IDs, --workflow, --state, --name, --app or --all"
        raise click.UsageError(message)
    found = api.task_ids(**filters)
    if recursive:
        found = sorted(set(found) | set(api.descendants(found)))
    if not found:
        click.echo("No task matches.")
        return
    _confirm("Remove", found, yes or force)
    removed = api.remove_tasks(ids=found, recursive=recursive)
    click.echo(f"Removed {len(removed)} task(s): {_ids_text(removed)}")


def _existing(ids: Iterable[int]) -> list[int]:
    """The given task ids, all of which must exist (NotFound names the missing ones)."""
    wanted = sorted(set(ids))
    missing = sorted(set(wanted) - set(api.task_ids(ids=wanted))) if wanted else []
    if missing:
        message = f"no task {_ids_text(missing)}" if len(missing) == 1 else \
            f"no tasks {_ids_text(missing)}"
        raise NotFound(message)
    return wanted


def _int_ids(words: list[str]) -> list[int]:
    try:
        return [int(w) for w in words]
    except ValueError:
        message = f"task ids are integers, got {' '.join(words)!r}"
        raise InvalidInput(message) from None


def _rm_apps(words: list[str], name: str | None, all_apps: bool, force: bool, yes: bool) -> None:
    names = words + ([name] if name else [])
    if all_apps:
        names = [a.name for a, _ in api.list_apps()]
    if not names:
        message = "say which apps to remove: NAME, --name NAME or --all"
        raise click.UsageError(message)
    apps = [api.get_app(n) for n in names]
    if not force and not yes and len(apps) > CONFIRM_ABOVE:
        click.confirm(f"Remove {len(apps)} apps ({', '.join(a.name for a in apps)})?",
                      abort=True)
    for found in apps:
        removed = api.remove_app(found.name, force=force)
        extra = f" and its {len(removed)} task(s)" if removed else ""
        click.echo(f"Removed app {found.name}{extra}")


@click.command("kill")
@click.argument("task_ids", nargs=-1, type=int, metavar="ID...")
@click.option("--workflow", "--wf", "workflow", help="Every unfinished task of this workflow.")
@click.option("--recursive", "-r", is_flag=True, help="Also kill the tasks below them.")
@click.option("--message", "-m", default="killed by user", show_default=True,
              help="Reason recorded in the history.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def kill(task_ids: tuple[int, ...], workflow: str | None, recursive: bool, message: str,
         yes: bool) -> None:
    """Mark tasks USER_KILLED; a launcher running one stops it."""
    if not task_ids and workflow is None:
        usage = "say which tasks to kill: IDs or --workflow"
        raise click.UsageError(usage)
    found = api.task_ids(ids=_existing(task_ids) or None, workflow=workflow)
    if recursive:
        found = sorted(set(found) | set(api.descendants(found)))
    live = [t.id for t in api.get_tasks(ids=found) if t.state not in FINAL and t.id is not None]
    if not live:
        states = ", ".join(f"{t.id} {t.state}" for t in api.get_tasks(ids=found, limit=5))
        text = f"nothing to kill: every task has already ended ({states})" if states else \
            "nothing to kill: no task matches"
        raise InvalidInput(text)
    _confirm("Kill", live, yes)
    killed = api.kill(live, message=message)
    click.echo(f"Killed {len(killed)} task(s): {_ids_text(killed)}")


COMMANDS = (app, job, dep, ls, modify, rm, kill)
