"""balsam-perms hook implementations: thin calls into policy and hooks, imported when a hook
runs."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from balsam import hookimpl

if TYPE_CHECKING:
    from balsam.contracts import InitOptions
    from balsam.project import Project


@hookimpl(wrapper=True)
def on_init(project: Project, options: InitOptions) -> Generator[None, None, None]:
    from balsam_perms import hooks

    group = hooks.claim_group(project, options.group)
    result = yield
    hooks.apply_policy(project, group)
    return result


@hookimpl(wrapper=True)
def on_activate(project: Project, user: str) -> Generator[None, list[Any], list[Any]]:
    from balsam_perms import hooks

    hooks.repair_control_zone(project, user)
    result = yield
    hooks.warn_about_modes(project)
    return result


@hookimpl
def on_add_user(project: Project, username: str, role: str) -> None:
    from balsam_perms import hooks

    hooks.warn_if_outside_group(project, username)


@hookimpl
def describe_project(project: Project) -> dict[str, Any]:
    from balsam_perms import hooks

    return hooks.describe(project)


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("perms", "balsam_perms.commands:perms",
             help="Check and repair the project's group permissions.")
