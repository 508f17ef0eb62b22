"""The ``balsam`` entry point: a click group assembled from the installed plugins."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
import pluggy

from balsam.errors import BalsamError
from balsam.lifecycle import apply_project_umask
from balsam.plugins import plugin_manager, using

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class BalsamGroup(click.Group):
    """Runs commands with the plugin manager the CLI was built from and the project's umask, and
    turns any BalsamError into a one-line message and exit status 1."""

    pm: pluggy.PluginManager

    def invoke(self, ctx: click.Context) -> Any:
        # The project's umask, not the shell's: collaborators' files stay group-writable.
        ctx.meta["balsam.shell_umask"] = apply_project_umask()
        try:
            with using(self.pm):
                return super().invoke(ctx)
        except BalsamError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            os.umask(ctx.meta["balsam.shell_umask"])


def build_cli(pm: pluggy.PluginManager) -> click.Group:
    """Collect every plugin's commands; a name taken twice is an error naming both plugins."""

    @click.group(cls=BalsamGroup, context_settings=CONTEXT)
    @click.version_option(package_name="balsam-cli", prog_name="balsam")
    def cli() -> None:
        """Balsam: a multi-user HPC workflow manager.

        Activate a project with 'source balsamactivate PROJECT', then add apps and tasks and
        run launchers inside batch jobs.
        """

    assert isinstance(cli, BalsamGroup)
    cli.pm = pm
    owners: dict[str, str] = {}
    nested: list[tuple[str, click.Command, str]] = []  # (group, command, plugin)
    for impl in pm.hook.register_commands.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(command: click.Command, group: str | None = None,
                     _plugin: str = plugin_name) -> None:
            if group is not None:
                nested.append((group, command, _plugin))
                return
            _claim(owners, command.name or "", _plugin)
            cli.add_command(command)

        impl.function(register=register)
    # Subcommands of another plugin's group, once every group exists (install order is free).
    for group_name, command, plugin_name in nested:
        group = cli.commands.get(group_name)
        if not isinstance(group, click.Group):
            message = (f"plugin {plugin_name!r} adds {command.name!r} to a group {group_name!r} "
                       f"that no plugin provides")
            raise BalsamError(message)
        _claim(owners, f"{group_name} {command.name}", plugin_name)
        if group.commands.get(command.name or "", command) is not command:
            message = (f"command {group_name} {command.name!r} from plugin {plugin_name!r} "
                       f"clashes with plugin {owners[group_name]!r}")
            raise BalsamError(message)
        group.add_command(command)
    return cli


def _claim(owners: dict[str, str], name: str, plugin: str) -> None:
    """Record that ``plugin`` provides the command ``name``; a name taken twice is an error."""
    if name in owners:
        message = f"command {name!r} from plugin {plugin!r} clashes with plugin {owners[name]!r}"
        raise BalsamError(message)
    owners[name] = plugin


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        cli = build_cli(plugin_manager())
    except BalsamError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="balsam")
