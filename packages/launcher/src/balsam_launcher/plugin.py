"""balsam-launcher hook implementations: thin calls into the launcher's modules, imported when a
hook runs (a command that does not launch does not import the launcher)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from balsam import hookimpl

if TYPE_CHECKING:
    from balsam.contracts import LauncherInfo
    from balsam.models import Task
    from balsam.resources import Node, Resources
    from balsam.scheduler import Scheduler

#: name -> (module:attribute, one-line help)
COMMANDS = {
    "submit-launch": ("balsam_launcher.batch_commands:submit_launch",
                      "Submit a batch job that runs a launcher."),
    "queue": ("balsam_launcher.batch_commands:queue",
              "List the project's batch jobs, or cancel some."),
    "service": ("balsam_launcher.batch_commands:service",
                "Keep launchers queued while runnable tasks exist."),
    "launcher": ("balsam_launcher.commands:launcher",
                 "Run the project's tasks on this batch job's nodes."),
    "log": ("balsam_launcher.commands:log", "Show a task's output or a launcher's log."),
}


@hookimpl(trylast=True)
def register_schedulers() -> dict[str, type[Scheduler]]:
    from balsam_launcher.schedulers import builtin_schedulers

    return builtin_schedulers()


@hookimpl(trylast=True)
def register_transfer_methods() -> dict[str, Any]:
    from balsam_launcher.transfers import builtin_methods

    return dict(builtin_methods())


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    for name, (target, text) in COMMANDS.items():
        register(name, target, help=text)


@hookimpl(trylast=True)
def select_tasks(candidates: Sequence[Task], resources: Resources,
                 launcher: LauncherInfo) -> list[Task]:
    from balsam_launcher import policy

    return policy.largest_first(candidates, resources)


@hookimpl(trylast=True)
def mpi_command(task: Task, command: list[str], nodes: list[Node], env: dict[str, str],
                launcher: LauncherInfo) -> list[str]:
    from balsam_launcher import mpi

    return mpi.default_command(task, command, nodes, env, launcher)


@hookimpl(trylast=True)
def gpu_environment(devices: list[int], task: Task, launcher: LauncherInfo) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices))}
