"""The typed values that cross package boundaries: what hooks receive, and the project's
``server-info``.

Each is a frozen dataclass: a plugin reads attributes (a typo is a type error, not a silent
``None``), and what one plugin received cannot change what the next one sees. A new field with
a default is a compatible change; removing or renaming one bumps core's minor version.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

#: The umask every balsam tool applies for a project unless its ``server-info`` says otherwise:
#: the group keeps every right, others get none.
DEFAULT_UMASK = 0o007


@dataclass(frozen=True)
class LauncherInfo:
    """A launcher, as the ``select_tasks`` and ``mpi_command`` hooks see it."""

    #: The launcher's row in the ``launchers`` table.
    id: int
    #: The OS user running it (whose trust decides which tasks it runs).
    owner: str
    #: The host it runs on (``socket.gethostname()``).
    hostname: str
    #: ``"mpi"`` (a task holds whole nodes) or ``"serial"`` (tasks share nodes).
    job_mode: str
    #: The workflow filter it was started with (``""``: every workflow).
    wf_filter: str
    #: How many nodes it drives.
    num_nodes: int
    #: True when its nodes are slots on this host (``--nodes`` outside an allocation), not hosts.
    simulated: bool
    #: The batch scheduler of its allocation (``"local"`` outside one, ``"slurm"``, ``"pbs"``...).
    scheduler: str
    #: Its private scratch directory on this host (removed when it ends, or by the next launcher
    #: of its user there if it was killed), for per-run files such as an MPI session directory.
    scratch: str
    #: Minutes left before its allocation ends, or None if it has no deadline.
    remaining_minutes: float | None = None
    #: GPUs on each of its nodes (``--gpus-per-node``), shared out by tasks' ``gpus_per_rank``.
    gpus_per_node: int = 0
    #: The site's MPI command line (the ``mpi_command`` setting), or "" for the built-in choice.
    mpi_command: str = ""


@dataclass(frozen=True)
class InitOptions:
    """What ``balsam init`` asks of the ``on_init`` hooks."""

    #: An external server's conninfo, or None for a cluster of the project's own.
    dsn: str | None = None
    #: The group to share the project with, or None for the directory's own.
    group: str | None = None
    #: Import packages whose migrations run after core's (the ``migration_packages`` hook).
    migrations: tuple[str, ...] = ()


_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,), "uuid": (str,), "owner": (str,), "dbname": (str,),
    "dsn": (str, type(None)), "host": (str, type(None)), "port": (int, type(None)),
    "group": (str, type(None)), "scheduler": (str, type(None)),
    "max_connections": (int, type(None)),
}


@dataclass(frozen=True)
class ServerInfo:
    """A project's ``server-info`` file: where its database is and how the project is shared.

    Written by ``balsam init`` (core), the server's start (pgserver: host and port) and the
    permissions policy (perms: group and umask); read by every tool. It holds no absolute path,
    so a stopped project can be copied or moved. Read and write it with :meth:`from_json` and
    :meth:`to_json` (``balsam.project.Project`` does, with the control zone's checks); change it
    with :func:`dataclasses.replace`.
    """

    #: A fresh identifier per project (per-user state such as passwords is filed under it).
    uuid: str = ""
    #: The owner's OS user name.
    owner: str = ""
    #: The database of the project's own cluster.
    dbname: str = "balsam"
    #: An external server's conninfo; None for the project's own cluster.
    dsn: str | None = None
    #: The host of the project's own server (None until it first starts).
    host: str | None = None
    #: Its TCP port (None until it first starts).
    port: int | None = None
    #: The group the project is shared with.
    group: str | None = None
    #: The umask every balsam tool applies for this project.
    umask: int = DEFAULT_UMASK
    #: The batch scheduler (``balsam_launcher.schedulers.chosen_name`` says which wins).
    scheduler: str | None = None
    #: The server's ``max_connections``, or None for pgserver's default.
    max_connections: int | None = None
    #: The file's format version.
    version: int = 1
    #: Keys this version does not know (a newer tool's), kept as they were written.
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """True for the project's own cluster, False for an external server (a DSN)."""
        return not self.dsn

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse the file's text; ValueError says what is wrong with it."""
        data = json.loads(text)
        if not isinstance(data, dict):
            message = "expected a JSON object"
            raise ValueError(message)
        values: dict[str, Any] = {}
        for key, kinds in _TYPES.items():
            if key in data:
                value = data.pop(key)
                if not isinstance(value, kinds) or isinstance(value, bool):
                    expected = " or ".join(k.__name__ for k in kinds)
                    message = f"{key} is {value!r}, expected {expected}"
                    raise ValueError(message)
                values[key] = value
        umask = data.pop("umask", None)
        if umask is not None:
            values["umask"] = parse_umask(umask)
        return cls(**values, extra=data)

    def to_json(self) -> str:
        """The file's text (keys sorted, the umask in octal)."""
        data: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name != "extra":
                data[f.name] = getattr(self, f.name)
        data["umask"] = f"{self.umask:04o}"
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_umask(value: object) -> int:
    """A umask written as octal text (``"0007"``); ValueError for anything else."""
    if isinstance(value, str):
        try:
            umask = int(value, 8)
        except ValueError:
            umask = -1
        if 0 <= umask <= 0o777:
            return umask
    message = f"umask is {value!r}, expected octal text such as \"0007\""
    raise ValueError(message)
