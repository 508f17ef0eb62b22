"""Who may change a task while a launcher holds it: a pure rule, applied by ``api.modify_task``.

A held task is refused to everyone, because the launcher runs it from the values it read when it
claimed it, and plans its next steps with them. One exception keeps legacy scripts working (a
task, or its pre- and post-processing scripts, recording results with ``job.data[...] = ...;
job.save()``): the task itself, inside the launcher holding it, may change the fields that only
record or describe, which the launcher never reads. Its state goes through the state machine
(``api.set_state``), as a post-processing script's always did; its claim, and what a launcher
executes or plans with (app, arguments, environment, directory, resources, handlers), never.

The task is recognised by the variables its launcher exports to it (``BALSAM_TASK_ID``,
``BALSAM_LAUNCHER_ID``). That keeps the launcher's copy consistent, it grants no authority: who may
change a task at all is the database's decision (roles, row security, trust).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

#: Fields a running task may change on itself while its launcher holds it.
SELF_EDITABLE: frozenset[str] = frozenset({"data", "description"})


@dataclass(frozen=True)
class Caller:
    """The task and launcher a process runs under (None outside a task)."""

    task_id: int | None = None
    launcher_id: int | None = None


def _int(text: str | None) -> int | None:
    text = (text or "").strip()
    return int(text) if text.isdigit() else None


def caller(environ: Mapping[str, str] = os.environ) -> Caller:
    """The caller as its launcher described it in the environment."""
    return Caller(_int(environ.get("BALSAM_TASK_ID")), _int(environ.get("BALSAM_LAUNCHER_ID")))


def refusal(task_id: int, state: str, held_by: int | None, field: str, me: Caller) -> str | None:
    """Why ``field`` of task ``task_id`` (in ``state``, held by launcher ``held_by`` or by none)
    may not be changed by ``me``, or None if it may."""
    if held_by is None:
        return None
    itself = me.task_id == task_id and me.launcher_id == held_by
    if itself and field in SELF_EDITABLE:
        return None
    allowed = " and ".join(sorted(SELF_EDITABLE))
    return (f"task {task_id} is held by launcher {held_by} ({state}): only the task itself may "
            f"change its {allowed} meanwhile; kill it or wait until it is released")
