"""balsam-cli's own hook implementations: the project-level commands."""

from __future__ import annotations

from collections.abc import Callable

import click

from balsam import hookimpl
from balsam_cli import project_commands, report_commands, task_commands


@hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    for command in (project_commands.init, project_commands.activate, project_commands.which,
                    project_commands.plugins, report_commands.report, *task_commands.COMMANDS):
        register(command)
