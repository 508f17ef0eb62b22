"""Plain records for rows of the core tables (built from dict rows)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

from balsam.states import State


class _Row:
    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Build from a dict row, ignoring columns the record does not know."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in row.items() if k in names})


@dataclass
class App(_Row):
    name: str
    executable: str
    description: str = ""
    preprocess: str = ""
    postprocess: str = ""
    envscript: str = ""
    id: int | None = None
    owner: str = ""
    created_at: datetime | None = None


@dataclass
class Task(_Row):
    name: str = ""
    workflow: str = ""
    app_id: int | None = None
    args: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    user_workdir: str | None = None
    description: str = ""
    wall_time_minutes: int = 1
    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    threads_per_core: int = 1
    cpu_affinity: str = "none"
    node_packing_count: int = 1
    environ_vars: dict[str, str] = field(default_factory=dict)
    input_files: str = ""
    post_error_handler: bool = False
    post_timeout_handler: bool = False
    auto_timeout_retry: bool = True
    state: State = State.CREATED
    state_message: str = ""
    id: int | None = None
    owner: str = ""
    launcher_id: int | None = None
    attempts: int = 0
    created_at: datetime | None = None
    state_changed_at: datetime | None = None
    app_name: str = ""

    def __post_init__(self) -> None:
        self.state = State(self.state)

    @property
    def workdir(self) -> str:
        """Working directory, relative to the project unless the user gave an absolute one."""
        if self.user_workdir:
            return self.user_workdir
        return f"data/{self.workflow or '_'}/{self.name or 'task'}_{self.id}"
