"""Legacy command lines rewritten for click, without a database (balsam_cli.legacy_args)."""

from __future__ import annotations

import click
import pytest

from balsam_cli.legacy_args import rewrite


@click.command("job")
@click.option("--name")
@click.option("--args", default="")
@click.option("--env", multiple=True)
@click.option("--post-error-handler", "--post-handle-error", is_flag=True)
@click.option("--wall-time", "--wall-minutes", "wall")
@click.option("--workflow", "--wf", "workflow")
@click.option("--wide", is_flag=True)
def job(**_: object) -> None:
    """A command shaped like balsam job."""


@click.command("ls")
@click.argument("what", required=False)
@click.option("--history", type=int, is_flag=False, flag_value=0)
@click.option("--state")
@click.option("--args")
def ls(**_: object) -> None:
    """A command shaped like balsam ls (whose --args is one word)."""


@click.group("app", invoke_without_command=True)
@click.option("--description")
def app(**_: object) -> None:
    """A group."""


@app.command("ls")
@click.option("--desc", is_flag=True)
def app_ls(**_: object) -> None:
    """Its subcommand."""


@pytest.mark.parametrize("command, given, expected", [
    (job, ["--post_handle_error", "--wall_minutes=5"], ["--post-handle-error", "--wall-minutes=5"]),
    (job, ["--wall", "5"], ["--wall-time", "5"]),  # one option, two names: not ambiguous
    (job, ["--w", "x"], ["--w", "x"]),  # --wall-time, --workflow or --wide: left for click
    (job, ["--args", "-n", "10", "--x=1", "--name", "a"], ["--args", "-n 10 --x=1", "--name", "a"]),
    (job, ["--args", "-n 10"], ["--args", "-n 10"]),
    (job, ["--env", "A=1", "B=2", "--na", "x"], ["--env", "A=1", "--env", "B=2", "--name", "x"]),
    (job, ["--name", "--wide"], ["--name", "--wide"]),  # a value is never rewritten
    (job, ["--", "--nam"], ["--", "--nam"]),
    (ls, ["jobs", "--hist", "--st", "FAILED"], ["jobs", "--history", "--state", "FAILED"]),
    (ls, ["--hist", "7"], ["--history", "7"]),
    (ls, ["--args", "a", "b"], ["--args", "a", "b"]),  # multi-word only where legacy had it
    (app, ["--desc", "x", "y", "ls", "--desc"], ["--description", "x y", "ls", "--desc"]),
])
def test_rewrite(command, given, expected):
    assert rewrite(command, given) == expected
