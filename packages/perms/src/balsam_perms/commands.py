"""``balsam perms check|fix``: report and repair the project's two zones (group ownership and
modes; the control zone the owner's alone)."""

from __future__ import annotations

import os

import click

from balsam.errors import UnsafeFile
from balsam.project import Project
from balsam_perms import policy


@click.group("perms")
def perms() -> None:
    """Check and repair the project's group permissions (and show the umask in force)."""


@perms.command()
def check() -> None:
    """List every path with the wrong group, mode or owner, and the umask in force; exit 1 if
    any."""
    project = Project.from_env(check=False)
    problems = policy.check(project)
    for problem in problems:
        click.echo(problem.describe(project.root))
    bad_umask = policy.umask_problem(project)
    if bad_umask:
        click.echo(bad_umask)
    _report_umask(project)
    group = policy.project_group(project).gr_name
    if problems or bad_umask:
        message = f"{len(problems)} path(s) break the policy of group {group}: run balsam perms fix"
        if any(p.control for p in problems):
            message += f" (the control zone's by its owner, {project.owner})"
        raise click.ClickException(message)
    click.echo(f"all paths of {project.root} are shared with group {group}")


@perms.command()
def fix() -> None:
    """Give every path the project's group and modes: yours in the work zone; the owner also
    repairs the control zone (and brings a project of the old layout to the new one)."""
    try:
        project = Project.from_env()
    except UnsafeFile:  # the owner's fix vouches for what the published server-info says
        project = Project.from_env(check=False)
    fixed, left = policy.fix(project)
    for problem in fixed:
        click.echo(f"fixed {problem.describe(project.root)}")
    for problem in left:
        click.echo(f"left  {problem.describe(project.root)}")
    _report_umask(project)
    if left:
        message = f"{len(left)} path(s) could not be fixed by you"
        raise click.ClickException(message)
    click.echo(f"{len(fixed)} path(s) fixed; all paths are shared with group "
               f"{policy.project_group(project).gr_name}")


def _report_umask(project: Project) -> None:
    """The shell's umask (recorded by the CLI before it applied the project's) and the project's."""
    ctx = click.get_current_context()
    shell = ctx.meta.get("balsam.shell_umask")
    if shell is None:
        shell = os.umask(0o077)
        os.umask(shell)
    line = (f"umask in force: {shell:04o} in your shell; balsam applies the project's "
            f"{project.umask:04o}")
    if shell & 0o070:
        line += (f" (other tools you run would create files the group cannot use: "
                 f"add 'umask {project.umask:04o}' to your job templates and ~/.bashrc)")
    click.echo(line)
