"""Apps, dependencies and changes from the command line: app, dep, modify, rm, kill, retry.

Every command is a thin layer over :mod:`balsam.api`: parse options, call it, print. ``-y/--yes``
is the one way to skip a question; the legacy ``--force`` is kept with its old meaning.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from typing import Any

import click

from balsam import api, triage
from balsam.errors import InvalidInput, NotFound
from balsam.output import Output, options
from balsam.states import FINAL, State, parse_state
from balsam_cli.ls_commands import write_apps

#: rm, kill and retry ask before touching more than this many tasks (unless --yes).
CONFIRM_ABOVE = 1
#: Lets a VALUE start with a dash (a negative number is then refused by validation, not click).
LOOSE = {"ignore_unknown_options": True}


def _confirm(action: str, ids: list[int], yes: bool) -> None:
    """Ask before acting on many tasks (click.Abort, exit 1, if the answer is no)."""
    if yes or len(ids) <= CONFIRM_ABOVE:
        return
    shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    _ask(f"{action} {len(ids)} tasks ({shown})?")


def _ask(question: str) -> None:
    """Ask, and stop (click.Abort) unless the answer is yes; with standard input closed there
    is no one to answer: say how to answer up front."""
    if sys.stdin is None or sys.stdin.closed:
        message = f"{question} needs an answer and standard input is closed: add -y/--yes"
        raise click.UsageError(message)
    click.confirm(question, abort=True)


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
    executable, preprocess, postprocess = (python_wrapped(c)
                                           for c in (executable, preprocess, postprocess))
    created = api.add_app(name, executable, description=description, preprocess=preprocess,
                          postprocess=postprocess, envscript=envscript)
    click.echo(f"Added app {created.name} (id {created.id}): {created.executable}")


def python_wrapped(command: str) -> str:
    """A command whose program is a ``.py`` file, run by this Python with the script's absolute
    path, as legacy's ``balsam app`` did (the script need not be executable, and imports
    ``balsam`` from this installation)."""
    words = command.split(None, 1)
    if not words or not words[0].endswith(".py"):
        return command
    script = shlex.quote(os.path.abspath(os.path.expanduser(words[0])))
    return " ".join([shlex.quote(sys.executable), script, *words[1:]])


@app.command("ls")
@options
def app_ls(out: Output) -> None:
    """List apps with the number of tasks using each (and who last changed them)."""
    write_apps(api.list_apps(), out)


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
@click.option("--with-tasks", "--force", "force", is_flag=True,
              help="Also remove the tasks that use it (legacy: --force).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def app_rm(name: str, force: bool, yes: bool) -> None:
    """Remove an app (refused while tasks use it, unless --with-tasks)."""
    found = api.get_app(name)
    if force:
        _confirm("Remove app and its", api.task_ids(app=found.name), yes)
    removed = api.remove_app(found.name, force=force)
    extra = f" and its {len(removed)} task(s)" if removed else ""
    click.echo(f"Removed app {found.name}{extra}")


# --- tasks --------------------------------------------------------------------------------------


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


@click.command("modify", context_settings=LOOSE)
@click.argument("target", metavar="ID")
@click.argument("field")
@click.argument("value")
@click.option("--message", "-m", default="", help="Reason recorded with a state change.")
@click.option("--type", "kind", type=click.Choice(["jobs", "apps"]), default="jobs",
              help="apps: ID is an app's name (legacy; same as 'balsam app modify').")
def modify(target: str, field: str, value: str, message: str, kind: str) -> None:
    """Set FIELD of task ID to VALUE (state goes through the state machine)."""
    if kind == "apps":
        ref: str | int = target
        if target.isdigit():  # legacy named apps by id
            try:
                api.get_app(target)
            except NotFound:
                ref = int(target)
        changed = api.modify_app(ref, field, value)
        click.echo(f"App {changed.name}: {field} = {value}")
        return
    (task_id,) = _int_ids([target])
    task = api.modify_task(task_id, field, value, message=message)
    click.echo(f"Task {task.id}: {field.replace('-', '_')} = {value} ({task.state})")


def _selected(ids: Iterable[int], workflow: str | None, states: tuple[str, ...],
              name: str | None, app_name: str | None) -> dict[str, Any]:
    return {"ids": list(ids) or None, "workflow": workflow, "name": name, "app": app_name,
            "state": [parse_state(s) for s in states] or None}


@click.command("rm")
@click.argument("targets", nargs=-1, metavar="[jobs|apps] [ID]...")
@click.option("--id", "more_ids", type=int, multiple=True, metavar="ID",
              help="This task (repeatable; legacy).")
@click.option("--workflow", "--wf", "--wf-filter", "workflow", help="Tasks of this workflow.")
@click.option("--state", "states", multiple=True, help="Tasks in this state (repeatable).")
@click.option("--name", help="Tasks whose name contains this (apps: the app's name).")
@click.option("--app", "app_name", help="Tasks of this app.")
@click.option("--all", "all_tasks", is_flag=True, help="Every task (or every app).")
@click.option("--recursive", "-r", is_flag=True, help="Also remove the tasks below them.")
@click.option("--with-tasks", is_flag=True, help="Apps: also remove the tasks that use them.")
@click.option("--force", is_flag=True, hidden=True,
              help="Legacy: --yes, and for apps --with-tasks too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(targets: tuple[str, ...], more_ids: tuple[int, ...], workflow: str | None,
       states: tuple[str, ...], name: str | None, app_name: str | None, all_tasks: bool,
       recursive: bool, with_tasks: bool, force: bool, yes: bool) -> None:
    """Remove tasks by id or filter, with their history (asks first when there are several)."""
    words = list(targets)
    kind = words.pop(0) if words and words[0] in ("jobs", "tasks", "apps") else "jobs"
    if kind == "apps":
        _rm_apps(words, name, all_tasks, with_tasks or force, yes or force)
        return
    ids = _existing([*_int_ids(words), *more_ids])
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


def _rm_apps(words: list[str], name: str | None, all_apps: bool, with_tasks: bool,
             yes: bool) -> None:
    names = words + ([name] if name else [])
    if all_apps:
        names = [a.name for a, _ in api.list_apps()]
    if not names:
        message = "say which apps to remove: NAME, --name NAME or --all"
        raise click.UsageError(message)
    apps = [api.get_app(n) for n in names]
    if not yes and len(apps) > CONFIRM_ABOVE:
        _ask(f"Remove {len(apps)} apps ({', '.join(a.name for a in apps)})?")
    for found in apps:
        removed = api.remove_app(found.name, force=with_tasks)
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


@click.command("retry")
@click.argument("task_ids", nargs=-1, type=int, metavar="[ID]...")
@click.option("--workflow", "--wf", "workflow", help="Only tasks of this workflow.")
@click.option("--state", "states", multiple=True,
              help="Only tasks in this state: FAILED, RUN_ERROR or RUN_TIMEOUT (repeatable).")
@click.option("--name", help="Only tasks whose name contains this.")
@click.option("--app", "app_name", help="Only tasks of this app.")
@click.option("--cause", help="Only failed tasks whose cause (see 'ls --by-cause') contains this.")
@click.option("--message", "-m", default="retried by user", show_default=True,
              help="Reason recorded in the history.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def retry(task_ids: tuple[int, ...], workflow: str | None, states: tuple[str, ...],
          name: str | None, app_name: str | None, cause: str | None, message: str,
          yes: bool) -> None:
    """Run failed, errored and timed-out tasks again (back to READY).

    Without IDs or filters, every such task. Tasks a launcher still holds are left alone.
    """
    wanted = [parse_state(s) for word in states for s in word.split(",") if s.strip()]
    bad = [s for s in wanted if s not in triage.ERROR_STATES]
    if bad:
        text = f"retry resets {', '.join(triage.ERROR_STATES)} tasks, not {bad[0]}"
        raise InvalidInput(text)
    conn = api.connection()
    candidates = api.task_ids(**_selected(_existing(task_ids), workflow, (), name, app_name),
                              conn=conn) if task_ids or workflow or name or app_name else None
    ids = triage.retryable(conn, ids=candidates, states=wanted or triage.ERROR_STATES,
                           cause=cause)
    if not ids and task_ids:  # asked by id: say why not, as kill and rm do
        found = api.get_tasks(ids=task_ids, conn=conn)
        shown = ", ".join(f"{t.id} ({t.state})" for t in found[:5])
        text = (f"nothing to retry: {shown}{', ...' if len(found) > 5 else ''}; retry resets "
                f"{', '.join(triage.ERROR_STATES)} tasks that no launcher holds")
        raise InvalidInput(text)
    if not ids:
        click.echo("No failed, errored or timed-out task matches.")
        return
    _confirm("Retry", ids, yes)
    done = triage.retry(conn, ids, message=message)
    # A task whose parent failed or was killed fails again at once (unless it allows that).
    again = [t.id for t in api.get_tasks(ids=done, state=State.FAILED, conn=conn)
             if t.id is not None]
    ready = sorted(set(done) - set(again))
    if ready or not again:
        click.echo(f"Retried {len(ready)} task(s): {_ids_text(ready)}")
    if again:
        text = (f"{len(again)} task(s) failed again at once, since a parent failed or was "
                f"killed (retry the parents first): {_ids_text(again)}")
        if ready:
            click.echo(text, err=True)
        else:
            raise InvalidInput(text)
