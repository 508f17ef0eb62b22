"""Site configuration: defaults for account, queue, scheduler, extra scheduler flags, output
mode and the MPI command line, from (last wins) the built-in defaults, ``~/.balsam/config.toml``,
the project's ``balsam.toml`` and ``BALSAM_<KEY>`` environment variables; a command-line option
wins over all.

``balsam.toml`` is in the project's control zone: it steers every member's tools, so it is read
through the zone's guard (:mod:`balsam.zones`): only when the project's owner owns it, nobody else
can write it and it is no symlink (a refusal names the fix). ``~/.balsam/config.toml`` likewise
must be the user's own.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from balsam.errors import InvalidInput
from balsam.zones import Guard, home_guard, project_guard

PROJECT_FILE = "balsam.toml"
USER_FILE = "config.toml"


@dataclass(frozen=True)
class Option:
    """A configuration key: its default and how a text value (environment) is parsed."""

    key: str
    default: Any
    help: str
    kind: str = "str"  # str, flags, choice, mpi (an mpi_command template)
    choices: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        return f"BALSAM_{self.key.upper()}"


OPTIONS: tuple[Option, ...] = (
    Option("account", "", "Project (allocation) charged by submit-launch and service (-A)."),
    Option("queue", "", "Queue or partition for submit-launch and service (-q)."),
    Option("scheduler", None, "Batch scheduler: local, slurm, pbs, cobalt or a plugin's."),
    Option("scheduler_flags", [], "Extra scheduler directives written into every job script, "
                                  "e.g. ['--constraint=knl', '--qos=debug'].", "flags"),
    Option("job_mode", "mpi", "Default job mode of submit-launch and service.", "choice",
           ("mpi", "serial")),
    Option("output", "auto", "How listings print: auto (table on a terminal, plain in a "
                              "pipe), table, plain, tsv or json.", "choice",
           ("auto", "table", "plain", "tsv", "json")),
    Option("mpi_command", "", "The MPI command line of mpi mode, split like a shell's, e.g. "
                              "'mpiexec -n {ranks} -ppn {ranks_per_node} --hosts {hosts} "
                              "{command}' (empty: the mpi_command hook's default).", "mpi"),
)
#: The placeholders of ``mpi_command``; ``{command}`` (the app's arguments, the task's mpi_flags
#: before them) is the last word.
MPI_FIELDS = ("ranks", "num_nodes", "ranks_per_node", "threads_per_rank", "threads_per_core",
              "cpu_affinity", "gpus_per_rank", "hosts")
BY_KEY = {o.key: o for o in OPTIONS}
_FLAG = re.compile(r"-[^\x00-\x1f\x7f]*")


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str  # "default", a file path, or an environment variable
    env: str


class Settings:
    """Resolved configuration: ``get(key)`` and, per key, where its value came from."""

    def __init__(self, items: dict[str, Setting]) -> None:
        self.items = items

    def get(self, key: str) -> Any:
        return self.items[key].value

    def __iter__(self) -> Any:
        return iter(self.items.values())


def user_file() -> Path:
    from balsam.project import balsam_home

    return balsam_home() / USER_FILE


def project_file(root: Path | None = None) -> Path | None:
    """The active project's ``balsam.toml`` (None without an active project)."""
    if root is None:
        path = os.environ.get("BALSAM_DB_PATH")
        if not path:
            return None
        root = Path(path)
    return root / PROJECT_FILE


def load_settings(project_root: Path | None = None,
                  env: dict[str, str] | None = None) -> Settings:
    """The configuration in force (InvalidInput or PermissionDenied name the bad file)."""
    env = dict(os.environ) if env is None else env
    items = {o.key: Setting(o.key, o.default, "default", o.env) for o in OPTIONS}
    layers: list[tuple[str, dict[str, Any]]] = []
    for path in (user_file(), project_file(project_root)):
        if path is not None and (path.is_file() or path.is_symlink()):
            layers.append((str(path), read_toml(path, _guard(path))))
    for source, values in layers:
        for key, value in values.items():
            items[key] = Setting(key, validate(key, value, source), source, BY_KEY[key].env)
    for option in OPTIONS:
        if env.get(option.env, "") != "":
            value = parse_env(option, env[option.env])
            items[option.key] = Setting(option.key, value, option.env, option.env)
    return Settings(items)


def _guard(path: Path) -> Guard:
    """Who must own a configuration file: the project's owner, or the user."""
    if path.name == PROJECT_FILE:
        return project_guard(path.parent, path.parent.stat().st_uid)
    return home_guard()


def read_toml(path: Path, guard: Guard) -> dict[str, Any]:
    import tomllib

    try:
        data = tomllib.loads(guard.read(path))
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read {path}: {exc}"
        raise InvalidInput(message) from None
    except tomllib.TOMLDecodeError as exc:
        message = f"{path} is not valid TOML: {exc}"
        raise InvalidInput(message) from None
    unknown = sorted(set(data) - set(BY_KEY))
    if unknown:
        message = (f"{path}: unknown setting {unknown[0]!r}; known: "
                   f"{', '.join(o.key for o in OPTIONS)}")
        raise InvalidInput(message)
    return data


def validate(key: str, value: Any, source: str) -> Any:
    """A value from a file or the environment, checked for its key."""
    option = BY_KEY[key]
    if option.kind == "flags":
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(f, str) for f in value):
            message = f"{source}: {key} must be a list of strings"
            raise InvalidInput(message)
        bad = [f for f in value if not _FLAG.fullmatch(f)]
        if bad:
            message = (f"{source}: scheduler flag {bad[0]!r} must start with '-' and hold no "
                       "control character (it becomes a directive line of the job script)")
            raise InvalidInput(message)
        return value
    if not isinstance(value, str):
        message = f"{source}: {key} must be a string, got {value!r}"
        raise InvalidInput(message)
    if option.kind == "mpi" and value:
        check_mpi_template(value, source)
    if option.kind == "choice" and value not in option.choices:
        message = f"{source}: {key} must be one of {', '.join(option.choices)}, got {value!r}"
        raise InvalidInput(message)
    return value


def check_mpi_template(text: str, source: str) -> list[str]:
    """The words of an ``mpi_command`` template (InvalidInput, one line, if it is not one)."""
    import shlex
    import string

    try:
        words = shlex.split(text)
    except ValueError as exc:
        message = f"{source}: mpi_command cannot be split into arguments ({exc})"
        raise InvalidInput(message) from None
    if not words or words[-1] != "{command}" or words.count("{command}") != 1:
        message = f"{source}: mpi_command must end with the word {{command}}, once: {text!r}"
        raise InvalidInput(message)
    for word in words[:-1]:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(word) if f is not None]
        except ValueError as exc:
            message = f"{source}: mpi_command word {word!r} is malformed ({exc})"
            raise InvalidInput(message) from None
        unknown = [n for n in names if n not in MPI_FIELDS]
        if unknown:
            message = (f"{source}: mpi_command has an unknown placeholder {{{unknown[0]}}}; known: "
                       f"{', '.join(MPI_FIELDS)}, command")
            raise InvalidInput(message)
    return words


def parse_env(option: Option, text: str) -> Any:
    return validate(option.key, text, option.env)
