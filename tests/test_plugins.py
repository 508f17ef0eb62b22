"""Plugins: entry-point discovery, a third-party package extending the CLI, loud failures."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from balsam import hookimpl
from balsam.errors import BalsamError, PluginLoadError
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli

SHIPPED = {"cli", "pgserver", "perms", "launcher"}


def test_entry_points_discovered():
    pm = get_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert SHIPPED | {"testplugin"} <= names


def test_site_plugin_adds_a_command():
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["hello", "bob"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello bob from balsam-testplugin"


def test_plugins_command_lists_versions_and_hooks():
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["plugins"], terminal_width=200)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if "testplugin" in ln)
    assert "balsam-testplugin" in line and "0.0.1" in line and "register_commands" in line


def test_blocked_plugin_is_not_loaded(monkeypatch):
    monkeypatch.setenv("BALSAM_DISABLED_PLUGINS", "testplugin")
    cli = build_cli(get_plugin_manager())
    names = cli.list_commands(click.Context(cli))
    assert "hello" not in names and "goodbye" not in names
    assert "init" in names


def test_commands_are_imported_only_when_they_run():
    """``balsam --help`` lists a lazily registered command from its registration alone; the
    command's module is imported when it runs. A plugin's click command still works."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from balsam.plugins import get_plugin_manager\n"
        "from balsam_cli.main import build_cli\n"
        "cli = build_cli(get_plugin_manager())\n"
        "help = CliRunner().invoke(cli, ['--help']).output\n"
        "before = sorted(m for m in sys.modules if m.startswith(('balsam_testplugin.', "
        "'balsam_launcher.', 'balsam_pgserver.', 'balsam_perms.', 'balsam_web.', 'psycopg')) "
        "and not m.endswith('.plugin'))\n"
        "hello = CliRunner().invoke(cli, ['hello']).output\n"
        "after = 'balsam_testplugin.commands' in sys.modules\n"
        "bye = CliRunner().invoke(cli, ['goodbye']).output\n"
        "print(repr((before, after, 'Say hello (a site plugin).' in help, hello, bye)))\n")
    import ast
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    before, after, listed, hello, bye = ast.literal_eval(proc.stdout.strip())
    assert before == [], f"imported before any command ran: {before}"
    assert after and listed
    assert hello == "hello world from balsam-testplugin\n"
    assert bye == "goodbye from balsam-testplugin\n"


def test_a_lazy_subcommand_of_another_plugins_lazy_group():
    class Into:
        @hookimpl
        def register_commands(self, register):
            register("hi", "balsam_testplugin.commands:hello", group="report", help="Greets.")

    pm = get_plugin_manager()
    pm.register(Into(), name="site-into")
    cli = build_cli(pm)
    listed = CliRunner().invoke(cli, ["report", "--help"])
    assert listed.exit_code == 0 and "Greets." in listed.output
    result = CliRunner().invoke(cli, ["report", "hi", "you"])
    assert result.exit_code == 0 and result.output == "hello you from balsam-testplugin\n"


def test_a_lazy_command_that_cannot_load_names_its_plugin():
    class Broken:
        @hookimpl
        def register_commands(self, register):
            register("oops", "balsam_no_such_module:cmd", help="broken")

    pm = get_plugin_manager(autoload=False)
    pm.register(Broken(), name="site-broken")
    result = CliRunner().invoke(build_cli(pm), ["oops"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: command 'oops' of plugin 'site-broken' cannot be "
                                    "loaded from balsam_no_such_module:cmd")


def test_broken_plugin_fails_loudly(tmp_path, monkeypatch):
    dist = tmp_path / "balsam_broken-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: balsam-broken\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[balsam]\nbroken = balsam_broken_missing_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError, match=r"plugin 'broken' \(balsam-broken\) failed to load"):
        get_plugin_manager()


class _Clash:
    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def register_commands(self, register):
        register(click.Command("start", help="a second start"))


def test_hook_register_commands():
    pm = get_plugin_manager(autoload=False)
    pm.register(_Clash("a"), name="site-a")
    assert "start" in build_cli(pm).commands

    class Lazy:
        @hookimpl
        def register_commands(self, register):
            register("start", "balsam_cli.project_commands:which", help="a lazy start")

    pm.register(Lazy(), name="site-lazy")
    with pytest.raises(BalsamError, match="command 'start' from plugin 'site-.*' clashes with"):
        build_cli(pm)
    pm.unregister(name="site-lazy")
    pm.register(_Clash("b"), name="site-b")
    with pytest.raises(BalsamError, match="command 'start' from plugin 'site-.' clashes with"):
        build_cli(pm)


class _Group:
    @hookimpl
    def register_commands(self, register):
        register(click.Group("grp", commands=[click.Command("own")]))


class _Into:
    def __init__(self, group: str, name: str) -> None:
        self.command = click.Command(name)
        self.group = group

    @hookimpl
    def register_commands(self, register):
        register(self.command, group=self.group)


def test_register_commands_into_another_plugins_group():
    pm = get_plugin_manager(autoload=False)
    into = _Into("grp", "extra")
    pm.register(into, name="site-into")  # registered first: install order does not matter
    pm.register(_Group(), name="site-group")
    group = build_cli(pm).commands["grp"]
    assert isinstance(group, click.Group) and group.commands["extra"] is into.command
    pm.register(_Into("grp", "own"), name="site-clash")
    with pytest.raises(BalsamError, match="command grp 'own' from plugin 'site-clash' clashes"):
        build_cli(pm)
    pm = get_plugin_manager(autoload=False)
    pm.register(_Into("nogroup", "x"), name="site-lost")
    with pytest.raises(BalsamError, match="plugin 'site-lost' adds 'x' to a group 'nogroup' that"):
        build_cli(pm)


def test_hook_migration_packages():
    from balsam.migrate import plugin_packages

    pm = get_plugin_manager()
    assert "balsam_pgserver" in plugin_packages(pm)

    class Extra:
        @hookimpl
        def migration_packages(self):
            return ["balsam_pgserver", "site_pkg"]

    pm.register(Extra(), name="extra")
    packages = plugin_packages(pm)
    assert packages.count("balsam_pgserver") == 1 and "site_pkg" in packages


@pytest.mark.pg
def test_hook_describe_project(project):
    class Site:
        @hookimpl
        def describe_project(self, project):
            return {"site": f"allocation for {project.name}"}

    pm = get_plugin_manager()
    pm.register(Site(), name="site")
    result = CliRunner().invoke(build_cli(pm), ["which"])
    assert result.exit_code == 0, result.output
    lines = dict(ln.split(None, 1) for ln in result.output.splitlines())
    assert lines["site"] == "allocation for project"
    assert lines["project"] == str(project.root)
