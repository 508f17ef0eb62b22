"""Creating and activating projects: the plain functions behind ``balsam init`` and
``balsamactivate``, calling every plugin through its hooks."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pluggy

from balsam.contracts import DEFAULT_UMASK, InitOptions
from balsam.errors import AlreadyExists, BalsamError, InvalidInput, PluginLoadError
from balsam.project import SUBDIRS, Project, current_user, new_info, remember_project
from balsam.zones import TEMPLATES_DIR, user_name


def init_project(root: Path, options: InitOptions, pm: pluggy.PluginManager) -> Project:
    """Create the project skeleton, then let every plugin set it up (``on_init``).

    Refuses a non-empty directory, or one that belongs to someone else (its owner is the owner of
    the project's control zone). On failure, whatever this call created is removed. The modes
    are the layout's (``balsam.zones``); perms then gives everything the project's group.
    """
    root = root.expanduser().absolute()
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in str(root)):
        message = (f"a project's path cannot hold control characters (got {str(root)!r}): "
                   "its path goes into shell commands, job scripts and the list of projects")
        raise InvalidInput(message)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        message = f"{root} already exists and is not empty"
        raise AlreadyExists(message)
    if root.exists() and root.stat().st_uid != os.geteuid():
        message = (f"{root} belongs to {user_name(root.stat().st_uid)}: a project directory must "
                   f"be yours, since its owner alone writes the project's control files")
        raise InvalidInput(message)
    if not root.parent.is_dir():
        message = (f"parent directory {root.parent} is not a directory" if root.parent.exists()
                   else f"parent directory {root.parent} does not exist")
        raise InvalidInput(message)
    from balsam.migrate import plugin_packages  # here: it brings the database driver

    created = not root.exists()
    old_umask = os.umask(DEFAULT_UMASK)
    try:
        root.mkdir(exist_ok=True)
        os.chmod(root, 0o750)
        (root / TEMPLATES_DIR).mkdir(mode=0o750)
        for sub in SUBDIRS:
            (root / sub).mkdir()
            os.chmod(root / sub, 0o1770)
        project = Project(root, new_info(current_user(), dsn=options.dsn, group=options.group))
        project.save_info()
        options = replace(options, migrations=plugin_packages(pm))
        pm.hook.on_init(project=project, options=options)
    except BaseException:
        if created:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    finally:
        os.umask(old_umask)
    remember_project(project)
    return project


def activate(project: Project, pm: pluggy.PluginManager) -> dict[str, str]:
    """Run every plugin's ``on_activate`` and return the environment to export."""
    from balsam.models import ENV_NAME  # here: every command imports this module
    os.umask(project.umask)
    env = {"BALSAM_DB_PATH": str(project.root), "BALSAM_PROJECT": project.name}
    for result in reversed(pm.hook.on_activate(project=project, user=current_user())):
        for key, value in (result or {}).items():
            # The shell evaluates ``export KEY=value``: a key is a name, never code.
            if not (isinstance(key, str) and ENV_NAME.fullmatch(key) and isinstance(value, str)):
                message = (f"a plugin's on_activate returned {key!r}: {value!r}; it must map "
                           "environment variable names to strings")
                raise PluginLoadError(message)
            env[key] = value
    remember_project(project)
    return env


def apply_project_umask() -> int:
    """Apply the active project's umask to this process, whatever the shell's was, so files that
    balsam and the tasks it starts create stay usable by the group; return the previous umask.

    Without an active, readable project the umask is left alone.
    """
    previous = os.umask(0o077)
    os.umask(previous)
    try:
        project = Project.from_env()
    except BalsamError:
        return previous
    os.umask(project.umask)
    return previous
