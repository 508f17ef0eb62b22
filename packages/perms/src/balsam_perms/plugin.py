"""balsam-perms hook implementations: thin calls into policy and hooks."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import click

from balsam import hookimpl
from balsam.project import Project
from balsam_perms import commands, hooks


@hookimpl(wrapper=True)
def on_init(project: Project, options: dict[str, Any]) -> Generator[None, None, None]:
    group = hooks.claim_group(project, options.get("group"))
    result = yield
    hooks.apply_policy(project, group)
    return result


@hookimpl(wrapper=True)
def on_activate(project: Project, user: str) -> Generator[None, list[Any], list[Any]]:
    hooks.repair_control_zone(project, user)
    result = yield
    hooks.warn_about_modes(project)
    return result


@hookimpl
def on_add_user(project: Project, username: str, role: str) -> None:
    hooks.warn_if_outside_group(project, username)


@hookimpl
def describe_project(project: Project) -> dict[str, Any]:
    return hooks.describe(project)


@hookimpl
def register_commands(register: Callable[[click.Command], None]) -> None:
    register(commands.perms)
