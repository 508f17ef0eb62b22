"""What balsam-perms does at init, activation and when a user is added (called by plugin.py)."""

from __future__ import annotations

import grp
from dataclasses import replace
from typing import Any

import click

from balsam.project import Project
from balsam_perms import policy


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def claim_group(project: Project, requested: str | None) -> grp.struct_group:
    """Before the other plugins run: check the group and give it to the new directory (setgid),
    so that everything they create inherits it."""
    group = policy.resolve_group(project.root, requested)
    policy.take_group(project.root, group)
    return group


def apply_policy(project: Project, group: grp.struct_group) -> None:
    """After the other plugins: record the group and umask, then fix every path's group and mode."""
    project.info = replace(project.info, group=group.gr_name)
    project.save_info()
    _, left = policy.apply(project.root, group.gr_gid)
    for problem in left:
        warn(problem.describe(project.root))
    if not set(group.gr_mem) - {project.owner}:
        warn(f"group {group.gr_name} has no other members: collaborators cannot reach this "
             f"project (create it in a shared group's directory, or use balsam init --group)")


def repair_control_zone(project: Project, user: str) -> None:
    """Before the server starts, the owner's activation repairs what it safely can of the
    control zone (see :func:`policy.repair_control_dirs`), and says so."""
    if user != project.owner:
        return
    for problem in policy.repair_control_dirs(project):
        warn(f"fixed {problem.describe(project.root)}")


def warn_about_modes(project: Project) -> None:
    """On activation, check the project's top level (cheap) and warn; never fail."""
    try:
        problems = policy.check(project, deep=False)
    except Exception as exc:  # noqa: BLE001 - activation must not fail on a permission check
        warn(f"could not check the project's permissions: {exc}")
        return
    for problem in problems:
        warn(problem.describe(project.root))
    if problems:
        warn("collaborators may get 'Permission denied': run balsam perms check, then fix")


def warn_if_outside_group(project: Project, username: str) -> None:
    group = policy.project_group(project)
    member = policy.user_in_group(username, group)
    if member is None:
        warn(f"there is no user {username} on this host; the database role was created anyway")
    elif not member:
        warn(f"{username} is not in the project's group {group.gr_name}, so they cannot reach its "
             f"files; ask an administrator to run: usermod -a -G {group.gr_name} {username}")


def describe(project: Project) -> dict[str, Any]:
    return {"group": project.info.group, "umask": f"{project.umask:04o}"}
