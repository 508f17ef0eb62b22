"""Plain records for rows of the core tables (built from dict rows), and the user-settable
fields of tasks and apps with their validation."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Self

from balsam.errors import InvalidInput
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
    allow_failed_parents: bool = False
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


@dataclass
class Event(_Row):
    """One state change of a task (a row of ``task_events``)."""

    task_id: int
    to_state: str
    from_state: str | None = None
    at: datetime | None = None
    db_user: str = ""
    launcher_id: int | None = None
    message: str = ""
    id: int | None = None


# --- user-settable fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """How a user-settable column is parsed: ``kind`` is str, name, path, int, bool, json or env."""

    kind: str
    minimum: int | None = None


TASK_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec("name"),
    "workflow": FieldSpec("name"),
    "args": FieldSpec("str"),
    "description": FieldSpec("str"),
    "user_workdir": FieldSpec("path"),
    "wall_time_minutes": FieldSpec("int", 0),
    "num_nodes": FieldSpec("int", 1),
    "ranks_per_node": FieldSpec("int", 1),
    "threads_per_rank": FieldSpec("int", 1),
    "threads_per_core": FieldSpec("int", 1),
    "cpu_affinity": FieldSpec("str"),
    "node_packing_count": FieldSpec("int", 1),
    "environ_vars": FieldSpec("env"),
    "data": FieldSpec("json"),
    "input_files": FieldSpec("str"),
    "post_error_handler": FieldSpec("bool"),
    "post_timeout_handler": FieldSpec("bool"),
    "auto_timeout_retry": FieldSpec("bool"),
    "allow_failed_parents": FieldSpec("bool"),
}

#: Other spellings accepted for task fields (legacy options and CLI names).
TASK_ALIASES: dict[str, str] = {
    "workdir": "user_workdir",
    "env": "environ_vars",
    "wall_minutes": "wall_time_minutes",
    "post_handle_error": "post_error_handler",
    "post_handle_timeout": "post_timeout_handler",
}

APP_FIELDS: tuple[str, ...] = (
    "name", "executable", "description", "preprocess", "postprocess", "envscript",
)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def task_field(name: str) -> str:
    """The column behind a task field name (dashes, aliases); InvalidInput for unknown ones."""
    key = name.strip().replace("-", "_").lower()
    key = TASK_ALIASES.get(key, key)
    if key not in TASK_FIELDS:
        known = ", ".join(sorted(TASK_FIELDS))
        message = f"unknown task field {name!r}; expected one of: {known}"
        raise InvalidInput(message)
    return key


def coerce_task_field(name: str, value: Any) -> Any:
    """Validate ``value`` for the task column ``name``, parsing strings (from the CLI)."""
    spec = TASK_FIELDS[name]
    if spec.kind == "int":
        return _integer(name, value, spec.minimum)
    if spec.kind == "bool":
        return _boolean(name, value)
    if spec.kind == "json":
        return _json_object(name, value)
    if spec.kind == "env":
        return parse_env(value)
    if spec.kind == "path" and value in (None, ""):
        return None
    if not isinstance(value, str) or "\0" in value:
        message = f"{name} must be a string, got {value!r}"
        raise InvalidInput(message)
    if spec.kind == "name" and ("/" in value or value in (".", "..")):
        message = f"{name} {value!r} may not contain '/' or be '.' or '..' (it names a directory)"
        raise InvalidInput(message)
    return value


def _integer(name: str, value: Any, minimum: int | None) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            message = f"{name} must be an integer, got {value!r}"
            raise InvalidInput(message) from None
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"{name} must be an integer, got {value!r}"
        raise InvalidInput(message)
    if minimum is not None and value < minimum:
        message = f"{name} must be at least {minimum}, got {value}"
        raise InvalidInput(message)
    return value


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    message = f"{name} must be true or false, got {value!r}"
    raise InvalidInput(message)


def _json_object(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            message = f"{name} is not valid JSON ({exc.msg} at position {exc.pos}): {value!r}"
            raise InvalidInput(message) from None
    if not isinstance(value, dict):
        message = f"{name} must be a JSON object, got {type(value).__name__}"
        raise InvalidInput(message)
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        message = f"{name} cannot be stored as JSON: {exc}"
        raise InvalidInput(message) from None
    return value


def parse_env(value: Any) -> dict[str, str]:
    """Environment variables from a mapping, a JSON object, or ``K=V`` words (shell-quoted)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = _json_object("environ_vars", text)
        else:
            try:
                words = shlex.split(text)
            except ValueError as exc:
                message = f"cannot parse environment {value!r}: {exc}"
                raise InvalidInput(message) from None
            value = words
    if isinstance(value, list | tuple):
        pairs: dict[str, Any] = {}
        for word in value:
            key, sep, val = str(word).partition("=")
            if not sep:
                message = f"environment variable {word!r} must look like NAME=VALUE"
                raise InvalidInput(message)
            pairs[key] = val
        value = pairs
    if not isinstance(value, dict):
        message = f"environ_vars must be a mapping of names to values, got {value!r}"
        raise InvalidInput(message)
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            message = f"invalid environment variable name {key!r}"
            raise InvalidInput(message)
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            message = f"environment variable {key} must be a string, got {val!r}"
            raise InvalidInput(message)
    return {k: str(v) for k, v in value.items()}


def coerce_app_field(name: str, value: Any) -> str:
    """Validate an app column (all text; name and executable may not be empty)."""
    if name not in APP_FIELDS:
        known = ", ".join(APP_FIELDS)
        message = f"unknown app field {name!r}; expected one of: {known}"
        raise InvalidInput(message)
    if not isinstance(value, str):
        message = f"app {name} must be a string, got {value!r}"
        raise InvalidInput(message)
    if name in ("name", "executable") and not value.strip():
        message = f"app {name} may not be empty"
        raise InvalidInput(message)
    return value
