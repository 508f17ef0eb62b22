"""balsam-launcher hook implementations: thin calls into the launcher's modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from balsam import hookimpl
from balsam.models import Task
from balsam.resources import Node, Resources
from balsam_launcher import batch_commands, commands, mpi, policy
from balsam_launcher.schedulers import builtin_schedulers


@hookimpl(trylast=True)
def register_schedulers() -> dict[str, type]:
    return builtin_schedulers()


@hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    for command in batch_commands.COMMANDS:
        register(command)
    register(commands.launcher)
    register(commands.log)


@hookimpl(trylast=True)
def select_tasks(candidates: Sequence[Task], resources: Resources,
                 launcher: dict[str, Any]) -> list[Task]:
    return policy.largest_first(candidates, resources)


@hookimpl(trylast=True)
def mpi_command(task: Task, command: list[str], nodes: list[Node], env: dict[str, str],
                launcher: dict[str, Any]) -> list[str]:
    return mpi.default_command(task, command, nodes, env, launcher)
