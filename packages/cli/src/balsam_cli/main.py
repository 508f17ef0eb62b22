"""The ``balsam`` entry point: a click group assembled from the installed plugins.

Commands are registered by name and import path (see ``register_commands`` in docs/hooks.md):
a command's module is imported only when it runs, so ``balsam --version`` or ``balsam ls`` pay
for nothing else. Every error ends as one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click
import pluggy

from balsam.errors import BalsamError, PluginLoadError
from balsam.lifecycle import apply_project_umask
from balsam.plugins import get_plugin_manager, installed_entry_points

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass(frozen=True)
class LazyCommand:
    """A command known by name until it runs: ``target`` is ``module:attribute``."""

    name: str
    target: str
    help: str
    plugin: str

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            message = (f"command {self.name!r} of plugin {self.plugin!r} cannot be loaded from "
                       f"{self.target}: {exc}")
            raise PluginLoadError(message) from exc
        if not isinstance(command, click.Command):
            message = f"{self.target} (plugin {self.plugin!r}) is not a click command"
            raise PluginLoadError(message)
        return command


class LazySubcommand(click.Command):
    """A subcommand added to another plugin's group by import path: the group lists it with its
    registered help, and its module is imported when it runs."""

    def __init__(self, lazy: LazyCommand) -> None:
        super().__init__(lazy.name, help=lazy.help, short_help=lazy.help)
        self.lazy = lazy
        self.real: click.Command | None = None

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        if self.real is None:
            self.real = self.lazy.load()
        return self.real.make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        return ctx.command.invoke(ctx)


def _same(a: click.Command, b: click.Command) -> bool:
    """Whether two registrations are one command (groups are module globals: a CLI built twice
    in one process meets its own earlier registration)."""
    if isinstance(a, LazySubcommand) and isinstance(b, LazySubcommand):
        return a.lazy == b.lazy
    return a is b


class BalsamGroup(click.Group):
    """Loads registered commands on demand, runs them with the plugin manager the CLI was built
    from and the project's umask, and ends every error in one line."""

    pm: pluggy.PluginManager

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, LazyCommand] = {}
        #: Subcommands other plugins add to a group, attached when the group is loaded.
        self.nested: dict[str, list[click.Command]] = {}
        self.owners: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = self.lazy[cmd_name].load()
            self.attach(cmd_name, self.owners)
        return self.commands.get(cmd_name)

    def attach(self, group_name: str, owners: dict[str, str]) -> None:
        """Add the subcommands other plugins registered into ``group_name`` (now loaded)."""
        group = self.commands[group_name]
        for command in self.nested.pop(group_name, []):
            if not isinstance(group, click.Group):
                message = f"{command.name!r} is added to {group_name!r}, which is not a group"
                raise PluginLoadError(message)
            if not _same(group.commands.get(command.name or "", command), command):
                message = (f"command {group_name} {command.name!r} from plugin "
                           f"{owners.get(f'{group_name} {command.name}')!r} clashes with plugin "
                           f"{owners.get(group_name)!r}")
                raise BalsamError(message)
            group.add_command(command)

    def resolve_command(self, ctx: click.Context,
                        args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """The command to run, its arguments read as legacy Balsam's argparse read them
        (``balsam_cli.legacy_args``: underscores, abbreviations, multi-word values)."""
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            from balsam_cli.legacy_args import rewrite

            rest = rewrite(command, rest)
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the registrations (no module is imported)."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(60)))
            else:
                rows.append((name, self.lazy[name].help))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # The project's umask, not the shell's: collaborators' files stay group-writable.
        ctx.meta["balsam.shell_umask"] = apply_project_umask()
        try:
            ctx.obj = self.pm  # subcommands' contexts inherit it: see pass_plugin_manager
            super().invoke(ctx)
            return None  # a command's return value is not an exit status
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_pipe()
        except OSError as exc:
            if exc.filename is None and exc.errno in _WRITE_ERRORS:
                _cannot_write(exc)  # no file named: the output (a file's name is in its errors)
            raise click.ClickException(one_line(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - the one place every error becomes a line
            raise click.ClickException(one_line(exc)) from exc
        finally:
            os.umask(ctx.meta["balsam.shell_umask"])

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """click's main, with usage errors in one line (``Error: ... (see 'balsam ls -h')``)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
            _flush_output()
        except click.exceptions.NoArgsIsHelpError as exc:  # `balsam`, `balsam report`: help
            click.echo(exc.ctx.get_help())
            code = 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "balsam"
            _fail(f"{exc.format_message()} (see '{where} --help')", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except BrokenPipeError:
            _quiet_pipe()
        except OSError as exc:  # printing --help or --version, as the options are read
            _cannot_write(exc)
        sys.exit(code if isinstance(code, int) else 0)


#: What writing to a full or failing device says.
_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    try:  # what the command printed before it failed, if it can be
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError:
        _discard_output()
    sys.exit(code)


def _flush_output() -> None:
    """Flush standard output now, not at exit: a reader that went away ends quietly, and
    output that cannot be written (a full disk, ``>/dev/full``) is an error in one line, not
    Python's "Exception ignored" as it exits."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_pipe()
    except OSError as exc:
        _cannot_write(exc)


def _cannot_write(exc: OSError) -> NoReturn:
    _discard_output()
    _fail(f"cannot write the output: {exc.strerror or exc}", 1)


def _discard_output() -> None:
    """Point standard output at /dev/null: what could not be written is dropped at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _quiet_pipe() -> NoReturn:
    """The reader went away (``balsam ls | head``): stop without a word, as ``cat`` does."""
    _discard_output()
    sys.exit(141)


def one_line(exc: BaseException) -> str:
    """Any error as one line that says what happened and, where we know it, what to do."""
    if isinstance(exc, BalsamError):
        return str(exc)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        from balsam.db import translate

        return str(translate(exc))
    if isinstance(exc, OSError):
        name = str(exc.filename or "")
        name = name if len(name) <= 200 else f"{name[:100]}...{name[-100:]}"
        if isinstance(exc, PermissionError):
            return f"permission denied: {name or exc} (check the path's owner and mode)"
        if isinstance(exc, FileNotFoundError):
            return f"no such file or directory: {name or exc}"
        return f"{exc.strerror or exc}{': ' + name if name else ''}"
    if os.environ.get("BALSAM_DEBUG"):
        raise exc
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (f"internal error: {type(exc).__name__}{': ' + first if first else ''} "
            "(run again with BALSAM_DEBUG=1 for the traceback, and report it)")


def versions() -> list[tuple[str, str, str]]:
    """``(plugin, distribution, version)`` of every installed plugin, from package metadata
    alone (no plugin is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for ep in installed_entry_points():
        dist = ep.dist.name if ep.dist else "?"
        try:
            ver = ep.dist.version if ep.dist else version(dist)
        except PackageNotFoundError:
            ver = "?"
        rows.append((ep.name, dist, ver))
    return rows


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    rows = versions()
    own = next((v for _, d, v in rows if d == "balsam-cli"), "?")
    click.echo(f"balsam {own}")
    width = max((len(n) for n, _, _ in rows), default=0)
    dist_width = max((len(d) for _, d, _ in rows), default=0)
    for name, dist, ver in rows:
        click.echo(f"  {name:<{width}}  {dist:<{dist_width}}  {ver}")
    ctx.exit()


Register = Callable[..., None]


def build_cli(pm: pluggy.PluginManager) -> BalsamGroup:
    """Collect every plugin's commands; a name taken twice is an error naming both plugins."""

    @click.group(cls=BalsamGroup, context_settings=CONTEXT)
    @click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
                  callback=_print_version, help="Show the version of balsam and of every plugin.")
    def cli() -> None:
        """Balsam: a multi-user HPC workflow manager.

        Activate a project with 'source balsamactivate PROJECT', then add apps and tasks and
        run launchers inside batch jobs.
        """

    assert isinstance(cli, BalsamGroup)
    cli.pm = pm
    owners: dict[str, str] = {}
    nested: list[tuple[str, click.Command | LazyCommand, str]] = []  # (group, command, plugin)
    for impl in pm.hook.register_commands.get_hookimpls():
        impl.function(register=_registrar(cli, owners, nested, impl.plugin_name))
    # Subcommands of another plugin's group, once every group is known (install order is free).
    for group_name, command, plugin in nested:
        if group_name not in cli.commands and group_name not in cli.lazy:
            message = (f"plugin {plugin!r} adds {command.name!r} to a group {group_name!r} "
                       f"that no plugin provides")
            raise BalsamError(message)
        _claim(owners, f"{group_name} {command.name}", plugin)
        cli.nested.setdefault(group_name, []).append(
            LazySubcommand(command) if isinstance(command, LazyCommand) else command)
        if group_name in cli.commands:  # an imported group: attach now, clashes show now
            cli.attach(group_name, owners)
    cli.owners = owners
    return cli


def _registrar(cli: BalsamGroup, owners: dict[str, str],
               nested: list[tuple[str, click.Command | LazyCommand, str]], plugin: str) -> Register:
    def register(command: click.Command | str, target: str | None = None, *, help: str = "",
                 group: str | None = None) -> None:
        """``register(click_command)``, or ``register("name", "module:attr", help="...")`` to
        import the command's module only when it runs; ``group=`` adds it to another group."""
        if isinstance(command, str):
            if not target or ":" not in target:
                message = (f"plugin {plugin!r} registers command {command!r} without a "
                           "'module:attribute' target")
                raise PluginLoadError(message)
            entry: click.Command | LazyCommand = LazyCommand(command, target, help, plugin)
        else:
            entry = command
        if group is not None:
            nested.append((group, entry, plugin))
            return
        _claim(owners, entry.name or "", plugin)
        if isinstance(entry, LazyCommand):
            cli.lazy[entry.name] = entry
        else:
            cli.add_command(entry)

    return register


def _claim(owners: dict[str, str], name: str, plugin: str) -> None:
    """Record that ``plugin`` provides the command ``name``; a name taken twice is an error."""
    if name in owners:
        message = f"command {name!r} from plugin {plugin!r} clashes with plugin {owners[name]!r}"
        raise BalsamError(message)
    owners[name] = plugin


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    if sys.stdout is None:  # started with it closed (>&-): what it prints would be lost
        _fail("standard output is closed (send it to a file or to /dev/null)", 1)
    try:
        cli = build_cli(get_plugin_manager())
    except BalsamError as exc:
        _fail(str(exc), 1)
    cli.main(args=argv, prog_name="balsam")
