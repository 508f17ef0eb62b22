"""Choosing a batch scheduler. The interface is core's (:class:`balsam.scheduler.Scheduler`);
plugins name theirs with the ``register_schedulers`` hook; :func:`get_scheduler` picks one.

Which scheduler a project uses (first that is set): the ``--scheduler`` option, the
``BALSAM_SCHEDULER`` environment variable (a site's module file can set it), the ``scheduler``
key of the project's ``server-info``, else ``local``. There is no auto-detection: clusters often
have several batch front-ends installed (Slurm's Torque wrappers provide ``qsub``), and
submitting to the wrong one by surprise is worse than asking.
"""

from __future__ import annotations

import os

import pluggy

from balsam.errors import InvalidInput
from balsam.project import Project
from balsam.scheduler import Scheduler


def available(pm: pluggy.PluginManager) -> dict[str, type[Scheduler]]:
    """Every registered scheduler by name; the first-called hook implementation wins a name."""
    found: dict[str, type[Scheduler]] = {}
    for result in reversed(pm.hook.register_schedulers()):
        found.update(result or {})
    return found


def chosen_name(project: Project, option: str | None = None) -> str:
    """The scheduler name for this project (see the module docstring for the precedence)."""
    return (option or os.environ.get("BALSAM_SCHEDULER") or project.info.scheduler
            or "local")


def get_scheduler(project: Project, pm: pluggy.PluginManager,
                  name: str | None = None) -> Scheduler:
    """An instance of the named (or the project's chosen) scheduler; InvalidInput lists the
    registered ones when the name is unknown."""
    name = chosen_name(project, name)
    schedulers = available(pm)
    if name not in schedulers:
        known = ", ".join(sorted(schedulers)) or "none"
        message = f"unknown scheduler {name!r}; registered schedulers: {known}"
        raise InvalidInput(message)
    return schedulers[name](project)


def builtin_schedulers() -> dict[str, type[Scheduler]]:
    """The schedulers balsam-launcher ships (imported on demand)."""
    from balsam_launcher.schedulers.cobalt import CobaltScheduler
    from balsam_launcher.schedulers.local import LocalScheduler
    from balsam_launcher.schedulers.pbs import PBSScheduler
    from balsam_launcher.schedulers.slurm import SlurmScheduler

    return {s.name: s for s in (LocalScheduler, SlurmScheduler, PBSScheduler, CobaltScheduler)}
