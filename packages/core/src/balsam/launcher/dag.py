"""Legacy Balsam 0.5's ``balsam.launcher.dag``: what a running task, and its pre- and
post-processing scripts, use to reach the database::

    from balsam.launcher.dag import current_job
    current_job.data["energy"] = energy
    current_job.save()

Module attributes, read from the environment the launcher gives the task (``BALSAM_TASK_ID``,
or legacy's ``BALSAM_JOB_ID``) on first use rather than at import, so that importing this module
connects to nothing: ``current_job`` (None outside a task), ``JOB_ID`` (its integer id, or ``""``),
``parents`` and ``children`` (queries of its jobs), ``TIMEOUT`` and ``ERROR`` (whether the script
runs as the timeout or error handler) and ``LAUNCHER_NODES``. Each is computed once per process,
as legacy's were at import. Functions: ``add_job``, ``spawn_child``, ``add_dependency``,
``kill``; and ``BalsamJob``, ``ApplicationDefinition`` as in :mod:`balsam.core.models`.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from balsam import api
from balsam.core.models import ApplicationDefinition, BalsamJob, _job_id
from balsam.errors import InvalidInput

#: Module attributes computed on first use (module ``__getattr__``).
_LAZY = ("current_job", "JOB_ID", "parents", "children", "TIMEOUT", "ERROR", "LAUNCHER_NODES")
__all__ = ["ApplicationDefinition", "BalsamJob", "add_dependency", "add_job", "kill",
           "spawn_child", *_LAZY]

#: Fields a clone does not copy (legacy's list, in this project's names).
_NOT_CLONED = ("state", "user_workdir")


def _task_id() -> int | None:
    for name in ("BALSAM_TASK_ID", "BALSAM_JOB_ID"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def _lazy(name: str) -> Any:
    """The value of a module attribute, from the environment and the database."""
    if name == "JOB_ID":
        return _task_id() or ""
    if name == "TIMEOUT":
        return os.environ.get("BALSAM_JOB_TIMEOUT") == "TRUE"
    if name == "ERROR":
        return os.environ.get("BALSAM_JOB_ERROR") == "TRUE"
    if name == "LAUNCHER_NODES":
        value = os.environ.get("BALSAM_LAUNCHER_NODES", "").strip()
        return int(value) if value.isdigit() else 1
    if name == "current_job":
        task_id = _task_id()
        return None if task_id is None else BalsamJob.objects.get(job_id=task_id)
    job = _get("current_job")
    if job is None:
        return None
    return job.get_parents() if name == "parents" else job.get_children()


def _get(name: str) -> Any:
    """A module attribute, computed on first use and kept, like legacy's import-time values."""
    if name not in globals():
        globals()[name] = _lazy(name)
    return globals()[name]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        message = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(message)
    return _get(name)


def add_job(name: str, workflow: str, application: str, description: str = "",
            args: str = "", mpi_flags: str = "", num_nodes: int = 1, ranks_per_node: int = 1,
            cpu_affinity: str = "depth", threads_per_rank: int = 1, threads_per_core: int = 1,
            environ_vars: Any = None, data: dict[str, Any] | None = None, save: bool = True,
            **kwargs: Any) -> BalsamJob:
    """A new job with legacy ``add_job``'s defaults (saved unless ``save=False``)."""
    job = BalsamJob(name=name, workflow=workflow, application=application,
                    description=description, args=args, mpi_flags=mpi_flags,
                    num_nodes=num_nodes, ranks_per_node=ranks_per_node,
                    cpu_affinity=cpu_affinity, threads_per_rank=threads_per_rank,
                    threads_per_core=threads_per_core, environ_vars=environ_vars or "",
                    data=data or {}, **kwargs)
    if save:
        job.save()
    return job


def spawn_child(clone: bool = False, **kwargs: Any) -> BalsamJob:
    """A new job that waits for the current one (and for its parents, as in legacy): a copy of
    it with ``clone=True``; ``kwargs`` set fields; the workflow is the current job's unless
    given."""
    me = _current()
    fields = {k: copy.deepcopy(getattr(me, k)) for k in BalsamJob._writable
              if k not in _NOT_CLONED} if clone else {}
    fields.setdefault("workflow", me.workflow)
    child = BalsamJob(**{**fields, **kwargs})
    child.set_parents([*me.get_parents_by_id(), me.pk])
    child.save()
    return child


def add_dependency(parent: Any, child: Any) -> None:
    """Make ``child`` wait for ``parent`` (jobs or ids); a cycle is refused."""
    api.add_dependency(_job_id(parent), _job_id(child))


def kill(job: Any, recursive: bool = True) -> None:
    """Mark ``job`` USER_KILLED, and everything below it unless ``recursive=False``."""
    api.kill([_job_id(job)], recursive=recursive)


def _current() -> BalsamJob:
    job = _get("current_job")
    if job is None:
        message = "no current job: this runs only inside a balsam task (BALSAM_TASK_ID)"
        raise InvalidInput(message)
    assert isinstance(job, BalsamJob)
    return job
