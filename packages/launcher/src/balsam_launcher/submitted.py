"""Each user's private record of the batch jobs they submitted, by scheduler and job id.

The ``batch_jobs`` table is shared: what a member writes there must never aim the owner's
``balsam queue --kill`` (or the service's cancel) at a job, or a process, the owner did not get
from the scheduler. So a user's tools act only on ids in their own record
(``~/.balsam/submitted/<project uuid>``, one JSON object a line, 0600 in a 0700 directory), and
the local scheduler also checks that the pid is still the job runner it started (its start time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from balsam.errors import PermissionDenied, UnsafeFile
from balsam.project import Project, balsam_home, current_user
from balsam.zones import home_guard


def record_path(project: Project) -> Path:
    return balsam_home() / "submitted" / str(project.info.uuid)


def record(project: Project, scheduler: str, scheduler_id: str, details: dict[str, Any]) -> None:
    """Add a job the scheduler just gave this user (appended: concurrent submitters are safe)."""
    path = record_path(project)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = json.dumps({"scheduler": scheduler, "id": scheduler_id, **details}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(line)


def lookup(project: Project, scheduler: str, scheduler_id: str) -> dict[str, Any] | None:
    """What this user recorded when they submitted that job, or None."""
    path = record_path(project)
    guard = home_guard()
    try:
        guard.check(path.parent, private=True)
        text = guard.read(path)
    except (FileNotFoundError, UnsafeFile):
        return None
    found = None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("scheduler") == scheduler and entry.get("id") == scheduler_id:
            found = entry
    return found


def require(project: Project, scheduler: str, scheduler_id: str, job_id: int) -> dict[str, Any]:
    """The record of a job this user is about to act on; PermissionDenied if there is none."""
    entry = lookup(project, scheduler, scheduler_id)
    if entry is None:
        message = (f"batch job {job_id} names {scheduler} job {scheduler_id}, which you "
                   f"({current_user()}) did not submit: refusing to act on it")
        raise PermissionDenied(message)
    return entry
