"""The plugin manager: built on demand, never at import."""

from __future__ import annotations

import os
from importlib.metadata import EntryPoint, entry_points

import click
import pluggy

from balsam import hookspecs
from balsam.errors import PluginLoadError

GROUP = "balsam"


def get_plugin_manager(*, autoload: bool = True) -> pluggy.PluginManager:
    """Return a plugin manager with the hookspecs and every installed ``balsam`` entry point.

    ``BALSAM_DISABLED_PLUGINS`` (comma separated) blocks plugins by name;
    ``BALSAM_DISABLE_PLUGIN_AUTOLOAD`` skips entry points entirely. A plugin that fails to import
    raises PluginLoadError: on shared HPC systems a silently missing site plugin is worse.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, os.environ.get("BALSAM_DISABLED_PLUGINS", "").split(",")):
        pm.set_blocked(name.strip())
    if autoload and not os.environ.get("BALSAM_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in installed_entry_points():
            if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                dist = ep.dist.name if ep.dist else "?"
                message = f"plugin {ep.name!r} ({dist}) failed to load: {type(exc).__name__}: {exc}"
                raise PluginLoadError(message) from exc
            pm.register(plugin, name=ep.name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(str(exc)) from exc
    if os.environ.get("BALSAM_TRACE_PLUGINS"):
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    return pm


def installed_entry_points() -> list[EntryPoint]:
    """The ``balsam`` entry points of the installed distributions, sorted by name."""
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


#: A command's decorator that passes it the plugin manager the running CLI was built with (the
#: click context's object: a CLI built from a test's own manager never reaches for the installed
#: plugins). ``@pass_plugin_manager`` then ``def command(pm, ...)``.
pass_plugin_manager = click.make_pass_decorator(pluggy.PluginManager)
