"""The work a launcher does for one task outside the database: its command line and
environment, stage-in from its parents, and the pre- and post-processing scripts."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import InvalidInput
from balsam.models import App, Task

#: How long a pre- or post-processing script may run (legacy Balsam's limit).
SCRIPT_TIMEOUT = 300.0

#: Sources an app's envscript, then replaces itself with the command ("$@").
ENVSCRIPT_WRAPPER = 'source "$1" && shift && exec "$@"'


@dataclass(frozen=True)
class Parent:
    """What a task needs to know about one of its parents."""

    id: int
    workdir: Path


def output_path(workdir: Path, task: Task) -> Path:
    """The file a task's stdout and stderr go to: ``<name>.out`` in its working directory."""
    stem = (task.name or f"task{task.id}").replace(os.sep, "_")
    return workdir / f"{stem}.out"


def app_command(app: App, task: Task) -> list[str]:
    """The app's executable and the task's arguments as an argument list (shell quoting rules,
    no shell)."""
    try:
        command = shlex.split(app.executable) + shlex.split(task.args)
    except ValueError as exc:
        message = f"cannot parse the command of task {task.id}: {exc}"
        raise InvalidInput(message) from None
    if not command:
        message = f"app {app.name!r} has an empty executable"
        raise InvalidInput(message)
    return command


def with_envscript(envscript: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` after sourcing ``envscript`` in bash (both passed as arguments, unquoted)."""
    return ["bash", "-c", ENVSCRIPT_WRAPPER, "balsam-envscript", envscript, *argv]


def task_env(task: Task, *, project_root: Path, launcher: int, job_mode: str, num_nodes: int,
             parent_ids: Sequence[int]) -> dict[str, str]:
    """The variables a launcher adds for a task (legacy ``BALSAM_JOB_ID`` included)."""
    env = {str(k): str(v) for k, v in (task.environ_vars or {}).items()}
    env.update({
        "BALSAM_DB_PATH": str(project_root),
        "BALSAM_TASK_ID": str(task.id),
        "BALSAM_JOB_ID": str(task.id),
        "BALSAM_PARENT_IDS": json.dumps(list(parent_ids)),
        "BALSAM_LAUNCHER_ID": str(launcher),
        "BALSAM_JOB_MODE": job_mode,
        "BALSAM_LAUNCHER_NODES": str(num_nodes),
    })
    if task.threads_per_rank > 1:
        env["OMP_NUM_THREADS"] = str(task.threads_per_rank)
    if os.geteuid() == 0:
        # Open MPI refuses root unless told twice; tests and containers run as root.
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


# --- stage-in ----------------------------------------------------------------------------------


def stage_in(task: Task, workdir: Path, parents: Sequence[Parent]) -> str:
    """Link the files matching ``input_files`` (space-separated glob patterns) from each parent's
    working directory into the task's. A name taken twice gets ``_<parent id>`` appended.

    Returns a one-line summary; raises InvalidInput on a bad pattern or a failed link.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    patterns = task.input_files.split()
    linked = 0
    for parent in parents:
        for pattern in patterns:
            try:
                matches = sorted(parent.workdir.glob(pattern))
            except (ValueError, NotImplementedError) as exc:
                message = f"bad input_files pattern {pattern!r}: {exc}"
                raise InvalidInput(message) from None
            for src in matches:
                dst = workdir / src.name
                if dst.exists() or dst.is_symlink():
                    dst = workdir / f"{src.name}_{parent.id}"
                try:
                    dst.symlink_to(src)
                except OSError as exc:
                    message = f"cannot link {src} into {workdir}: {exc.strerror}"
                    raise InvalidInput(message) from None
                linked += 1
    return f"{linked} input file(s) linked from {len(parents)} parent(s)"


# --- scripts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptResult:
    """How a pre- or post-processing script ended: ``returncode`` None means it was stopped."""

    returncode: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_script(command: str, *, cwd: Path, env: Mapping[str, str], log: Path, header: str,
               cancel: threading.Event, timeout: float = SCRIPT_TIMEOUT) -> ScriptResult:
    """Run an app's pre- or post-processing command in the task's directory, appending its output
    to ``log``; stop it if ``cancel`` is set or it outlives ``timeout`` seconds."""
    if cancel.is_set():
        return ScriptResult(None, f"{header} not started: the launcher is stopping")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return ScriptResult(1, f"cannot parse {command!r}: {exc}")
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"# balsam: {header}: {command}\n")
        out.flush()
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    process_group=0)
        except OSError as exc:
            return ScriptResult(127, f"cannot start {argv[0]}: {exc.strerror}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            rc = proc.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        if cancel.is_set() or time.monotonic() > deadline:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            if cancel.is_set():
                return ScriptResult(None, f"{header} stopped with the launcher")
            return ScriptResult(124, f"{header} timed out after {timeout:.0f}s")
    if rc != 0:
        return ScriptResult(rc, f"{header} exited with {rc}: {tail(log)}")
    return ScriptResult(0, f"{header} done")


def kill_group(pgid: int, sig: int) -> None:
    """Signal a process group (its leader may be gone already)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int = 5, limit: int = 400) -> str:
    """The last lines of a file on one line (for state messages)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    last = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    joined = " | ".join(last)
    return joined[-limit:]
