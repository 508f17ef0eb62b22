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

#: Each record's field names, read once (a launcher builds thousands of records a second).
_NAMES: dict[type, frozenset[str]] = {}


class _Row:
    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Build from a dict row, ignoring columns the record does not know."""
        names = _NAMES.get(cls)
        if names is None:
            names = _NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
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
    changed_by: str = ""
    changed_at: datetime | None = None


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
    gpus_per_rank: int = 0
    mpi_flags: str = ""
    coschedule_num_nodes: int = 0
    environ_vars: dict[str, str] = field(default_factory=dict)
    input_files: str = ""
    post_error_handler: bool = False
    post_timeout_handler: bool = False
    auto_timeout_retry: bool = True
    allow_failed_parents: bool = False
    stage_in_url: str = ""
    stage_out_url: str = ""
    stage_out_files: str = ""
    state: State = State.CREATED
    state_message: str = ""
    id: int | None = None
    owner: str = ""
    launcher_id: int | None = None
    attempts: int = 0
    created_at: datetime | None = None
    state_changed_at: datetime | None = None
    changed_by: str = ""
    changed_at: datetime | None = None
    app_name: str = ""

    def __post_init__(self) -> None:
        self.state = State(self.state)
        # Stored before the database bounded it, too deep a value would crash every reader.
        for name in _JSON_FIELDS:
            value = getattr(self, name)
            if value and json_depth(value) > JSON_MAX_DEPTH:
                setattr(self, name, {UNREADABLE: f"nested more than {JSON_MAX_DEPTH} levels deep"})

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


@dataclass
class Change(_Row):
    """One change of what a launcher would execute, a deletion, or a change of trust (a row of
    ``changes``): ``field`` is the column, or ``deleted`` (``old_value`` then holds the removed
    row's main fields as JSON); for ``entity == "trust"`` it is the truster, and ``new_value``
    (or ``old_value``) the user trusted (or no longer trusted)."""

    entity: str
    field: str
    entity_id: int | None = None
    old_value: str | None = None
    new_value: str | None = None
    changed_by: str = ""
    changed_at: datetime | None = None
    id: int | None = None

    @property
    def at(self) -> datetime | None:
        """When, as :attr:`Event.at` (histories merge both by time)."""
        return self.changed_at


@dataclass
class Trust(_Row):
    """``truster`` lets their launchers run what ``trustee`` owns or changed."""

    truster: str
    trustee: str
    granted_at: datetime | None = None


# --- user-settable fields ----------------------------------------------------------------------
# The limits below are also the database's (migration 0012_bounds.sql), which refuses what other
# clients write; here they are checked first, with a message naming the limit.

#: Longest name (task name, workflow, app name, cpu_affinity), in characters.
NAME_CHARS = 256
#: Longest path (a task's working directory), in UTF-8 bytes.
PATH_BYTES = 4096
#: Longest other text (args, an app's commands, descriptions, input file patterns), in bytes.
TEXT_BYTES = 65536
#: Deepest nesting of data and environ_vars (``{}`` is 1 level), and their largest size as JSON.
JSON_MAX_DEPTH = 32
JSON_MAX_BYTES = 1 << 20
#: The key of what a reader gets instead of a value too deeply nested to read safely.
UNREADABLE = "balsam_unreadable"

_JSON_FIELDS = ("data", "environ_vars")


@dataclass(frozen=True)
class FieldSpec:
    """How a user-settable column is parsed: ``kind`` is name (a directory name), word (a short
    text), str, command (text that splits into arguments like a shell's), path, url (a transfer
    URL, :func:`balsam.staging.parse_url`), int (between ``minimum`` and ``maximum``), bool,
    json or env."""

    kind: str
    minimum: int | None = None
    maximum: int | None = None


TASK_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec("name"),
    "workflow": FieldSpec("name"),
    "args": FieldSpec("command"),
    "description": FieldSpec("str"),
    "user_workdir": FieldSpec("path"),
    "wall_time_minutes": FieldSpec("int", 0, 525_600),
    "num_nodes": FieldSpec("int", 1, 100_000),
    "ranks_per_node": FieldSpec("int", 1, 10_000),
    "threads_per_rank": FieldSpec("int", 1, 10_000),
    "threads_per_core": FieldSpec("int", 1, 64),
    "cpu_affinity": FieldSpec("word"),
    "node_packing_count": FieldSpec("int", 1, 10_000),
    "gpus_per_rank": FieldSpec("int", 0, 1024),
    "mpi_flags": FieldSpec("command"),
    "coschedule_num_nodes": FieldSpec("int", 0, 100_000),
    "environ_vars": FieldSpec("env"),
    "data": FieldSpec("json"),
    "input_files": FieldSpec("str"),
    "post_error_handler": FieldSpec("bool"),
    "post_timeout_handler": FieldSpec("bool"),
    "auto_timeout_retry": FieldSpec("bool"),
    "allow_failed_parents": FieldSpec("bool"),
    "stage_in_url": FieldSpec("url"),
    "stage_out_url": FieldSpec("url"),
    "stage_out_files": FieldSpec("str"),
}

#: Other spellings accepted for task fields (legacy options and CLI names).
TASK_ALIASES: dict[str, str] = {
    "workdir": "user_workdir",
    "env": "environ_vars",
    "wall_minutes": "wall_time_minutes",
    "post_handle_error": "post_error_handler",
    "post_handle_timeout": "post_timeout_handler",
    "url_in": "stage_in_url",
    "url_out": "stage_out_url",
}

APP_FIELDS: dict[str, FieldSpec] = {
    "name": FieldSpec("word"),
    "executable": FieldSpec("command"),
    "description": FieldSpec("str"),
    "preprocess": FieldSpec("command"),
    "postprocess": FieldSpec("command"),
    "envscript": FieldSpec("str"),
}

_USER_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: An environment variable's name (used with ``fullmatch``).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LEGACY_ENV_SPLIT = re.compile(r":(?=[A-Za-z_][A-Za-z0-9_]*=)")
#: What a name or path may not hold: control characters (C0, DEL, C1) and the bidirectional
#: marks and overrides that make text show other than it reads.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut short: a refusal stays one short line whatever it was given."""
    text = repr(value)
    return text if len(text) <= width else f"{text[:width - 4]}...{text[-1]}"


def validate_user_name(name: str) -> str:
    """Refuse anything but a plain lower-case SQL identifier (the names of project users)."""
    if not isinstance(name, str) or not _USER_NAME.fullmatch(name) or name.startswith("pg_"):
        message = (f"invalid user name {_shown(name)}: expected a lower-case identifier (a-z, 0-9 "
                   f"and _, not starting with a digit or pg_, at most 63 characters)")
        raise InvalidInput(message)
    return name


def task_field(name: str) -> str:
    """The column behind a task field name (dashes, aliases); InvalidInput for unknown ones."""
    key = name.strip().replace("-", "_").lower()
    key = TASK_ALIASES.get(key, key)
    if key not in TASK_FIELDS:
        known = ", ".join(sorted(TASK_FIELDS))
        message = f"unknown task field {_shown(name)}; expected one of: {known}"
        raise InvalidInput(message)
    return key


def coerce_task_field(name: str, value: Any) -> Any:
    """Validate ``value`` for the task column ``name``, parsing strings (from the CLI)."""
    spec = TASK_FIELDS[name]
    if spec.kind == "int":
        return _integer(name, value, spec)
    if spec.kind == "bool":
        return _boolean(name, value)
    if spec.kind == "json":
        return _json_object(name, value)
    if spec.kind == "env":
        return parse_env(value)
    if spec.kind == "path" and value in (None, ""):
        return None
    if spec.kind == "url":
        from balsam.staging import parse_url

        text = _text(name, value, "path")
        if text.strip():
            parse_url(text, what=name)
        return text.strip()
    return _text(name, value, spec.kind)


def coerce_app_field(name: str, value: Any) -> str:
    """Validate an app column (all text; name and executable may not be empty)."""
    if name not in APP_FIELDS:
        known = ", ".join(APP_FIELDS)
        message = f"unknown app field {_shown(name)}; expected one of: {known}"
        raise InvalidInput(message)
    if not isinstance(value, str):
        message = f"app {name} must be a string, got {_shown(value)}"
        raise InvalidInput(message)
    if name in ("name", "executable") and not value.strip():
        message = f"app {name} may not be empty"
        raise InvalidInput(message)
    return _text(f"app {name}", value, APP_FIELDS[name].kind)


def _text(name: str, value: Any, kind: str) -> str:
    if not isinstance(value, str) or "\0" in value:
        message = f"{name} must be a string, got {_shown(value)}"
        raise InvalidInput(message)
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        message = f"{name} {_shown(value)} is not valid Unicode text"
        raise InvalidInput(message) from None
    if kind in ("name", "word"):
        if len(value) > NAME_CHARS:
            message = f"{name} is {len(value):,} characters long; the limit is {NAME_CHARS}"
            raise InvalidInput(message)
        if _CONTROL.search(value):
            message = f"{name} {_shown(value)} may not contain control characters"
            raise InvalidInput(message)
    else:
        limit = PATH_BYTES if kind == "path" else TEXT_BYTES
        if size > limit:
            message = f"{name} is {size:,} bytes long; the limit is {limit:,}"
            raise InvalidInput(message)
        if kind == "path" and _CONTROL.search(value):
            message = f"{name} {_shown(value)} may not contain control characters"
            raise InvalidInput(message)
    if kind == "name" and ("/" in value or value in (".", "..")):
        message = (f"{name} {_shown(value)} may not contain '/' or be '.' or '..' (it names a "
                   f"directory)")
        raise InvalidInput(message)
    if kind == "command" and any(c in value for c in "'\"\\"):  # else it splits anyway
        try:
            shlex.split(value)
        except ValueError as exc:
            message = (f"{name} {_shown(value)} cannot be split into arguments ({exc}): check its "
                       f"quotes")
            raise InvalidInput(message) from None
    return value


def _integer(name: str, value: Any, spec: FieldSpec) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            message = f"{name} must be an integer, got {_shown(value)}"
            raise InvalidInput(message) from None
    if isinstance(value, bool) or not isinstance(value, int):
        message = f"{name} must be an integer, got {_shown(value)}"
        raise InvalidInput(message)
    assert spec.minimum is not None and spec.maximum is not None
    if not spec.minimum <= value <= spec.maximum:
        message = f"{name} must be between {spec.minimum:,} and {spec.maximum:,}, got {value:,}"
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
    message = f"{name} must be true or false, got {_shown(value)}"
    raise InvalidInput(message)


def json_depth(value: Any, limit: int = JSON_MAX_DEPTH) -> int:
    """How deep containers nest in ``value`` (0 for a scalar, 1 for ``{}``), counted without
    recursion and no further than ``limit + 1``."""
    depth = 0
    level = [value]
    while depth <= limit:
        level = [v for v in level if isinstance(v, dict | list | tuple)]
        if not level:
            break
        depth += 1
        level = [item for v in level for item in (v.values() if isinstance(v, dict) else v)]
    return depth


def _json_object(name: str, value: Any) -> dict[str, Any]:
    too_deep = f"{name} is nested more than {JSON_MAX_DEPTH} levels deep"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            message = f"{name} is not valid JSON ({exc.msg} at position {exc.pos}): {_shown(value)}"
            raise InvalidInput(message) from None
        except RecursionError:
            raise InvalidInput(too_deep) from None
    if not isinstance(value, dict):
        message = f"{name} must be a JSON object, got {type(value).__name__}"
        raise InvalidInput(message)
    if json_depth(value) > JSON_MAX_DEPTH:
        raise InvalidInput(too_deep)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        message = f"{name} cannot be stored as JSON: {exc}"
        raise InvalidInput(message) from None
    if "\\u0000" in text:
        message = f"{name} cannot be stored: it contains a NUL character"
        raise InvalidInput(message)
    try:
        size = len(text.encode())
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): PostgreSQL's JSON refuses it
        message = f"{name} is not valid Unicode text: it holds a lone surrogate (\\ud800-\\udfff)"
        raise InvalidInput(message) from None
    if size > JSON_MAX_BYTES:
        message = f"{name} is {size:,} bytes as JSON; the limit is {JSON_MAX_BYTES:,} (1 MiB)"
        raise InvalidInput(message)
    return value


def parse_env(value: Any) -> dict[str, str]:
    """Environment variables from a mapping, a JSON object, or ``K=V`` words (shell-quoted).
    A word may hold several, legacy's way: ``A=1:B=2`` (a colon starts a new variable only
    where a NAME= follows it, so ``PATH=/a:/b`` stays one)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = _json_object("environ_vars", text)
        else:
            try:
                words = shlex.split(text)
            except ValueError as exc:
                message = f"cannot parse environment {_shown(value)}: {exc}"
                raise InvalidInput(message) from None
            value = words
    if isinstance(value, list | tuple):
        pairs: dict[str, Any] = {}
        for word in (w for item in value
                     for w in (_LEGACY_ENV_SPLIT.split(item) if isinstance(item, str) else [item])):
            key, sep, val = str(word).partition("=")
            if not sep:
                message = f"environment variable {_shown(word)} must look like NAME=VALUE"
                raise InvalidInput(message)
            pairs[key] = val
        value = pairs
    if not isinstance(value, dict):
        message = f"environ_vars must be a mapping of names to values, got {_shown(value)}"
        raise InvalidInput(message)
    for key, val in value.items():
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            message = f"invalid environment variable name {_shown(key)}"
            raise InvalidInput(message)
        if not isinstance(val, str | int | float) or isinstance(val, bool):
            message = f"environment variable {key} must be a string, got {_shown(val)}"
            raise InvalidInput(message)
    return _json_object("environ_vars", {k: str(v) for k, v in value.items()})
