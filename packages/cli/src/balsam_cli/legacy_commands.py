"""Legacy Balsam commands that had no home yet: ``mkchild`` (a child of the current task, as
legacy meant it; legacy's crashed), ``make_dummies N`` (no-op tasks for trying launchers) and
``killjob --id ID`` (legacy's name for ``balsam kill ID``)."""

from __future__ import annotations

import click

from balsam import api
from balsam.errors import AlreadyExists, InvalidInput, NotFound
from balsam_cli.job_commands import MAX_VALUES

#: The app ``make_dummies`` uses, made on first use (legacy's: ``echo hello``).
DUMMY_APP = ("dummy", "echo")


@click.command("mkchild", context_settings={"ignore_unknown_options": True,
                                            "allow_extra_args": True})
@click.option("--parent", "parents", type=int, multiple=True, metavar="ID",
              help="The parent task (repeatable; default: the task this runs in).")
@click.option("--workflow", "--wf", "workflow", help="Default: the (first) parent's.")
@click.pass_context
def mkchild(ctx: click.Context, parents: tuple[int, ...], workflow: str | None) -> None:
    """Add a task that waits for the task this runs in (or for --parent ID): 'balsam job' with
    those defaults, taking its other options (--name, --application, --args...)."""
    if not parents:
        try:
            parents = (api.current_task().id,)  # type: ignore[assignment]
        except InvalidInput as exc:
            message = (f"{exc}: mkchild makes a child of the task it runs in; give its parent "
                       "with --parent ID")
            raise InvalidInput(message) from None
    if workflow is None:
        workflow = api.get_task(parents[0]).workflow
    root = ctx.find_root().command
    assert isinstance(root, click.Group)
    command = root.get_command(ctx, "job")
    if command is None:
        message = "mkchild needs the 'balsam job' command, which no plugin provides"
        raise InvalidInput(message)
    from balsam_cli.legacy_args import rewrite

    args = rewrite(command, [*ctx.args, "--workflow", workflow,
                             *(f"--parent={p}" for p in parents)])
    with command.make_context("job", args, parent=ctx.parent) as sub:
        command.invoke(sub)


@click.command("make_dummies")
@click.argument("num", type=click.IntRange(min=1, max=MAX_VALUES))
@click.option("--workflow", "--wf", "workflow", default="dummy", show_default=True)
def make_dummies(num: int, workflow: str) -> None:
    """Add NUM no-op tasks (app 'dummy': echo hello), to try launchers with (at most as many
    as one --sweep may make)."""
    name, executable = DUMMY_APP
    try:
        api.get_app(name)
    except NotFound:
        try:
            api.add_app(name, executable, description="no-op tasks of balsam make_dummies")
        except AlreadyExists:
            pass  # someone else made it meanwhile
    # a generator: the tasks are streamed in blocks, never all in memory
    ids = api.add_tasks({"app": name, "name": f"dummy{i}", "workflow": workflow,
                         "args": "hello", "node_packing_count": 64,
                         "description": "Added by balsam make_dummies"} for i in range(num))
    click.echo(f"Added {num} dummy tasks (ids {ids[0]}-{ids[-1]}) in workflow {workflow}")


@click.command("killjob")
@click.option("--id", "ids", type=int, multiple=True, required=True, metavar="ID",
              help="The task to kill (repeatable).")
@click.option("--recursive", "-r", is_flag=True, help="Also kill the tasks below it.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def killjob(ctx: click.Context, ids: tuple[int, ...], recursive: bool, yes: bool) -> None:
    """Mark tasks USER_KILLED: legacy's name for 'balsam kill ID...'."""
    from balsam_cli.task_commands import kill

    ctx.invoke(kill, task_ids=ids, recursive=recursive, yes=yes)


COMMANDS = (mkchild, make_dummies, killjob)
