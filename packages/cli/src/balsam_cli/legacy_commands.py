"""Legacy Balsam commands that had no home yet: ``mkchild`` (a child of the current task, as
legacy meant it; legacy's crashed) and ``make_dummies N`` (no-op tasks for trying launchers)."""

from __future__ import annotations

import copy
from typing import Any

import click

from balsam import api
from balsam.errors import AlreadyExists, InvalidInput, NotFound
from balsam_cli import task_commands

#: The app ``make_dummies`` uses, made on first use (legacy's: ``echo hello``).
DUMMY_APP = ("dummy", "echo")


def _mkchild_params() -> list[click.Parameter]:
    """``balsam job``'s options, with --parent defaulting to the current task and --workflow to
    the parent's."""
    params: list[click.Parameter] = []
    for param in task_commands.job.params:
        param = copy.copy(param)
        if param.name == "workflow":
            param.required = False
        if param.name == "parents":
            param.help = "The parent task (repeatable; default: the task this runs in)."
        params.append(param)
    return params


@click.pass_context
def _mkchild(ctx: click.Context, /, parents: tuple[int, ...], workflow: str | None,
             **options: Any) -> None:
    if not parents:
        try:
            parents = (api.current_task().id,)  # type: ignore[assignment]
        except InvalidInput:
            message = ("mkchild makes a child of the task it runs in (BALSAM_TASK_ID is not set): "
                       "give its parent with --parent ID")
            raise InvalidInput(message) from None
    if workflow is None:
        workflow = api.get_task(parents[0]).workflow
    ctx.invoke(task_commands.job, parents=parents, workflow=workflow, **options)


mkchild = click.Command(
    "mkchild", callback=_mkchild, params=_mkchild_params(),
    help="Add a task that waits for the current task (inside a task) or for --parent ID; it "
         "takes the options of 'balsam job'.")


@click.command("make_dummies")
@click.argument("num", type=click.IntRange(min=1))
@click.option("--workflow", "--wf", "workflow", default="dummy", show_default=True)
def make_dummies(num: int, workflow: str) -> None:
    """Add NUM no-op tasks (app 'dummy': echo hello), to try launchers with."""
    name, executable = DUMMY_APP
    try:
        api.get_app(name)
    except NotFound:
        try:
            api.add_app(name, executable, description="no-op tasks of balsam make_dummies")
        except AlreadyExists:
            pass  # someone else made it meanwhile
    ids = api.add_tasks([{"app": name, "name": f"dummy{i}", "workflow": workflow,
                          "args": "hello", "node_packing_count": 64,
                          "description": "Added by balsam make_dummies"} for i in range(num)])
    click.echo(f"Added {num} dummy tasks (ids {ids[0]}-{ids[-1]}) in workflow {workflow}")


COMMANDS = (mkchild, make_dummies)
