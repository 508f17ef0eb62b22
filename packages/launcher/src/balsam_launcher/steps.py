"""The work a launcher does for one task outside the database: its command line and environment,
and the steps of the script pool (stage-in from its parents, pre- and post-processing scripts),
which run in worker threads and report back through a callback.

Every program is resolved with the launcher's own PATH (:func:`balsam_launcher.process.program`);
every file is reached through the task's working directory as the launcher opened it, without
following a symlink (:mod:`balsam_launcher.workdirs`).
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import BalsamError, InvalidInput
from balsam.models import App, Task
from balsam_launcher import workdirs
from balsam_launcher.process import kill_group, program

__all__ = ["kill_group"]  # re-exported: the node agent's import

#: How long a pre- or post-processing script may run (legacy Balsam's limit).
SCRIPT_TIMEOUT = 300.0

#: Sources an app's envscript, then replaces itself with the command ("$@").
ENVSCRIPT_WRAPPER = 'source "$1" && shift && exec "$@"'

#: The steps the script pool runs, and the headers their logs get.
SCRIPTS = {"preprocess": "preprocess", "postprocess": "postprocess",
           "error_handler": "error handler", "timeout_handler": "timeout handler"}
#: Variables a handler script sees (legacy names too).
HANDLER_ENV = {
    "error_handler": {"BALSAM_TASK_ERROR": "1", "BALSAM_JOB_ERROR": "TRUE"},
    "timeout_handler": {"BALSAM_TASK_TIMEOUT": "1", "BALSAM_JOB_TIMEOUT": "TRUE"},
}


@dataclass(frozen=True)
class Parent:
    """What a task needs to know about one of its parents."""

    id: int
    workdir: Path


def output_name(task: Task) -> str:
    """The file a task's stdout and stderr go to, in its working directory: ``<name>.out``."""
    return f"{(task.name or f'task{task.id}').replace(os.sep, '_')}.out"


def output_path(workdir: Path, task: Task) -> Path:
    return workdir / output_name(task)


# --- the command line ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _words(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text))


def app_command(app: App, task: Task) -> list[str]:
    """The app's executable and the task's arguments as an argument list (shell quoting rules,
    no shell)."""
    try:
        command = [*_words(app.executable), *(shlex.split(task.args) if task.args else ())]
    except ValueError as exc:
        message = f"cannot parse the command of task {task.id}: {exc}"
        raise InvalidInput(message) from None
    if not command:
        message = f"app {app.name!r} has an empty executable"
        raise InvalidInput(message)
    return command


def resolved(argv: Sequence[str], *, envscript: str = "") -> list[str]:
    """``argv`` with its program found on the launcher's PATH. With an envscript, a program not
    on the launcher's PATH is left for the environment the envscript builds."""
    try:
        return [program(argv[0]), *argv[1:]]
    except FileNotFoundError:
        if envscript:
            return list(argv)
        raise


def with_envscript(envscript: str, argv: Sequence[str]) -> list[str]:
    """Run ``argv`` after sourcing ``envscript`` in bash (both passed as arguments, unquoted). A
    bare envscript name is looked up on the launcher's PATH, then in the task's directory: bash
    would look it up on the task's PATH."""
    if "/" not in envscript:
        try:
            envscript = program(envscript)
        except FileNotFoundError:
            envscript = f"./{envscript}"
    return [program("bash"), "-c", ENVSCRIPT_WRAPPER, "balsam-envscript", envscript, *argv]


def launcher_env(*, project_root: Path, launcher: int, job_mode: str,
                 num_nodes: int) -> dict[str, str]:
    """The variables a launcher gives every task (and its scripts)."""
    env = {"BALSAM_DB_PATH": str(project_root), "BALSAM_LAUNCHER_ID": str(launcher),
           "BALSAM_JOB_MODE": job_mode, "BALSAM_LAUNCHER_NODES": str(num_nodes)}
    if os.geteuid() == 0:
        # Open MPI refuses root unless told twice; tests and containers run as root.
        env["OMPI_ALLOW_RUN_AS_ROOT"] = env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    return env


def task_env(task: Task, parent_ids: Sequence[int], common: Mapping[str, str]) -> dict[str, str]:
    """A task's own variables: its ``environ_vars``, then ``common`` (:func:`launcher_env`) and
    its ids (legacy ``BALSAM_JOB_ID`` included)."""
    env = {str(k): str(v) for k, v in task.environ_vars.items()} if task.environ_vars else {}
    env.update(common)
    env["BALSAM_TASK_ID"] = env["BALSAM_JOB_ID"] = str(task.id)
    env["BALSAM_PARENT_IDS"] = json.dumps(list(parent_ids)) if parent_ids else "[]"
    if task.threads_per_rank > 1:
        env["OMP_NUM_THREADS"] = str(task.threads_per_rank)
    return env


# --- stage-in ------------------------------------------------------------------------------------


def stage_in(task: Task, dir_fd: int, parents: Sequence[Parent]) -> str:
    """Link the files matching ``input_files`` (space-separated glob patterns) from each parent's
    working directory into the task's (``dir_fd``). A name taken twice gets ``_<parent id>``
    appended.

    Returns a one-line summary; raises InvalidInput on a bad pattern or a failed link.
    """
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
                name = src.name
                if _exists(name, dir_fd):
                    name = f"{src.name}_{parent.id}"
                try:
                    os.symlink(src, name, dir_fd=dir_fd)
                except OSError as exc:
                    message = f"cannot link {src} into the task's directory: {exc.strerror}"
                    raise InvalidInput(message) from None
                linked += 1
    return f"{linked} input file(s) linked from {len(parents)} parent(s)"


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


# --- scripts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptResult:
    """How a pre- or post-processing script ended: ``returncode`` None means it was stopped."""

    returncode: int | None
    detail: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_script(command: str, *, dir_fd: int, env: Mapping[str, str], header: str,
               log: str, cancel: threading.Event,
               timeout: float = SCRIPT_TIMEOUT) -> ScriptResult:
    """Run an app's pre- or post-processing command in the task's directory (``dir_fd``),
    appending its output to ``log`` there; stop it if ``cancel`` is set or it outlives
    ``timeout`` seconds."""
    if cancel.is_set():
        return ScriptResult(None, f"{header} not started: the launcher is stopping")
    try:
        argv = list(_words(command))
        argv[0] = program(argv[0])
    except (ValueError, IndexError) as exc:
        return ScriptResult(1, f"cannot parse {command!r}: {exc}")
    except FileNotFoundError as exc:
        return ScriptResult(127, f"cannot start {exc.filename}: {exc.strerror}")
    out = workdirs.open_output(dir_fd, log)
    try:
        os.write(out, f"# balsam: {header}: {command}\n".encode())
        try:
            proc = subprocess.Popen(argv, cwd=f"/proc/self/fd/{dir_fd}", env=dict(env),
                                    stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, process_group=0)
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
            return ScriptResult(rc, f"{header} exited with {rc}: {workdirs.last_line(out)}")
        return ScriptResult(0, f"{header} done")
    finally:
        os.close(out)


# --- the pool ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Done:
    """A step of the pool ended: ``ok`` None if it was stopped with the launcher, False if it
    failed (``detail`` says why)."""

    task_id: int
    kind: str
    ok: bool | None
    detail: str


class ScriptPool:
    """Worker threads for stage-in and scripts. Each result is passed to ``post`` (from the
    worker thread); :meth:`cancel` stops the scripts that run and those not started."""

    def __init__(self, workers: int, post: Callable[[Done], None]) -> None:
        self.post = post
        self.cancelled = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step")

    def submit(self, task_id: int, kind: str,
               step: Callable[[threading.Event], ScriptResult | str]) -> None:
        """Run ``step(cancelled)``: a string is a success's detail; a ScriptResult says how a
        script ended; a BalsamError or OSError fails the task with its message."""

        def done(future: Future[ScriptResult | str]) -> None:
            try:
                result = future.result()
            except BalsamError as exc:  # InvalidInput, TransferFailed: their message says it all
                self.post(Done(task_id, kind, False, str(exc)))
            except OSError as exc:
                self.post(Done(task_id, kind, False, f"{kind}: {workdirs.describe(exc)}"))
            except Exception as exc:  # a bug in a step: fail the task, not the launcher
                self.post(Done(task_id, kind, False, f"{kind} failed: {exc!r}"))
            else:
                if isinstance(result, str):
                    self.post(Done(task_id, kind, True, result))
                else:
                    ok = None if result.returncode is None else result.ok
                    self.post(Done(task_id, kind, ok, result.detail))

        self._pool.submit(step, self.cancelled).add_done_callback(done)

    def cancel(self) -> None:
        self.cancelled.set()

    def shutdown(self) -> None:
        self.cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
