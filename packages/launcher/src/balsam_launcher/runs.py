"""How the launcher carries out a held task's steps on this host: a run started in the task's
working directory (its command line, environment and devices), and stage-in, stage-out and
scripts handed to the script pool.

Each method takes what the ledger asked for and returns the ledger's answer (intents); the loop
(:mod:`balsam_launcher.launcher`) carries those out. A working directory is opened relative to
the project's directory, without following symlinks (:mod:`balsam_launcher.workdirs`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy

from balsam import staging
from balsam.contracts import LauncherInfo
from balsam.errors import InvalidInput
from balsam.models import Task
from balsam.resources import Node, Resources
from balsam_launcher import ledger, mpi, steps, transfers, workdirs
from balsam_launcher.options import Options
from balsam_launcher.process import Processes, program
from balsam_launcher.session import Parents, Request


class Runs:
    """The steps of held tasks, carried out. ``ask`` sends the session a request (a task's
    parents, for its stage-in); ``info`` is the launcher as hooks see it."""

    def __init__(self, *, options: Options, pm: pluggy.PluginManager, root: str,
                 book: ledger.Ledger, resources: Resources, processes: Processes,
                 pool: steps.ScriptPool, ask: Callable[[Request], None],
                 info: Callable[[], LauncherInfo], scratch: Path) -> None:
        self.options = options
        self.pm = pm
        self.root = root
        self.ledger = book
        self.resources = resources
        self.processes = processes
        self.pool = pool
        self.ask = ask
        self.info = info
        self.scratch = scratch
        self.root_fd = -1
        #: The environment every task gets (set once the launcher is registered).
        self.common_env: dict[str, str] = {}
        self.transfers: dict[str, Any] | None = None

    def open(self, common_env: dict[str, str]) -> None:
        """Ready to run tasks: the project's directory opened, the common environment known."""
        self.root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.common_env = common_env

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def place(self, task: Task) -> workdirs.Place:
        """Where the task works (InvalidInput if outside the project and the allowed places)."""
        return workdirs.place(task.workdir, self.root, self.options.allow_workdir)

    # --- runs ----------------------------------------------------------------------------------

    def start(self, tid: int) -> list[ledger.Intent]:
        """Start a task's run in its working directory, opened without following symlinks."""
        e = self.ledger.tasks[tid]
        task = e.task
        nodes = self.resources.nodes_of(tid)
        hosts = ",".join(dict.fromkeys(n.name or n.host for n in nodes))
        try:
            where = self.place(task)
            # a first run with no preprocess step most likely makes its directory
            dir_fd = workdirs.open_dir(where, self._base_fd(where),
                                       fresh=e.task.attempts == 0 and not e.app.preprocess)
        except InvalidInput as exc:
            return self.ledger.not_started(tid, str(exc))
        except OSError as exc:
            return self.ledger.not_started(
                tid, f"cannot create its working directory: {workdirs.describe(exc)}")
        try:
            name = steps.output_name(task)
            try:
                out_fd = workdirs.open_output(dir_fd, name)
            except OSError as exc:
                return self.ledger.not_started(
                    tid, f"cannot create its output file: {workdirs.describe(exc)}")
            try:
                env = steps.task_env(task, e.parent_ids, self.common_env)
                env.update(self._device_env(task, nodes))
                argv = self._command(e, env, nodes)
                serial = self.options.job_mode == "serial"
                at = time.time()
                where_run = self.processes.start(
                    tid, argv, dir_fd=dir_fd, directory=where.path, env=env, output_fd=out_fd,
                    output=where.path / name, node=nodes[0] if nodes else None,
                    cpus=nodes[0].cpus_of(tid) if nodes and serial else ())
            except (OSError, InvalidInput) as exc:
                os.close(out_fd)
                reason = workdirs.describe(exc) if isinstance(exc, OSError) else str(exc)
                return self.ledger.start_failed(tid, time.time(), f"starting on {hosts}", reason)
        finally:
            os.close(dir_fd)
        return self.ledger.started(tid, at, f"{where_run} on {hosts}")

    def _command(self, e: ledger.Entry, env: dict[str, str], nodes: list[Node]) -> list[str]:
        """The argv of a run: the app's command, through the MPI launcher in mpi mode, through the
        envscript if the app has one; every program found on the launcher's own PATH."""
        argv = steps.resolved(steps.app_command(e.app, e.task), envscript=e.app.envscript)
        if self.options.job_mode == "mpi":
            command = argv
            argv = self.pm.hook.mpi_command(task=e.task, command=command,
                                            nodes=nodes[:e.task.num_nodes], env=env,
                                            launcher=self.info())
            if not argv:
                message = "the mpi_command hook returned no command"
                raise InvalidInput(message)
            argv = mpi.with_flags(argv, command, e.task.mpi_flags)
            argv = [program(argv[0]), *argv[1:]]
        if e.app.envscript:
            argv = steps.with_envscript(e.app.envscript, argv)
        return argv

    def _device_env(self, task: Task, nodes: list[Node]) -> dict[str, str]:
        """The variables naming what the task holds beside its cores: its GPUs (through the
        ``gpu_environment`` hook, on a launcher with GPUs) and its co-scheduled nodes."""
        env: dict[str, str] = {}
        if self.options.gpus_per_node and nodes:
            assert task.id is not None
            env.update(self.pm.hook.gpu_environment(
                devices=list(nodes[0].gpus_of(task.id)), task=task, launcher=self.info()) or {})
        if self.options.job_mode == "mpi" and len(nodes) > task.num_nodes:
            env["BALSAM_COSCHEDULED_NODES"] = ",".join(
                n.name or n.host for n in nodes[task.num_nodes:])
        return env

    # --- stage-in, stage-out and scripts, in the pool -------------------------------------------

    def work(self, tid: int, kind: str) -> list[ledger.Intent]:
        """Stage-in (its parents first, from the database) or a script, in the pool."""
        e = self.ledger.tasks[tid]
        try:
            place = self.place(e.task)
        except InvalidInput as exc:
            return self.ledger.work_done(tid, kind, False, str(exc))
        if kind == "stage_in":
            self.ask(Parents(tid))
            return []
        if kind == "stage_out":
            task, methods = e.task, self._transfer_methods()
            zone = [os.path.join(self.root, name) for name in sorted(workdirs.CONTROL_ZONE)]
            self._submit(tid, kind, place, lambda dir_fd, cancel: transfers.stage_out(
                task, dir_fd, place.path, methods=methods, scratch=self.scratch, forbidden=zone))
            return []
        command = e.app.preprocess if kind == "preprocess" else e.app.postprocess
        env = {**self.processes.base_env,
               **steps.task_env(e.task, e.parent_ids, self.common_env),
               **steps.HANDLER_ENV.get(kind, {})}
        header = steps.SCRIPTS[kind]
        logname = "preprocess.log" if kind == "preprocess" else "postprocess.log"
        timeout = self.options.script_timeout

        def script(dir_fd: int, cancel: Any) -> steps.ScriptResult:
            return steps.run_script(command, dir_fd=dir_fd, env=env, header=header,
                                    log=logname, cancel=cancel, timeout=timeout)

        self._submit(tid, kind, place, script)
        return []

    def stage_in(self, event: Parents) -> list[ledger.Intent]:
        """The task's parents are read: stage in from them (and its URL) in the pool."""
        e = self.ledger.tasks.get(event.task_id)
        if e is None or e.phase is not ledger.Phase.WORKING:
            return []
        if event.error:
            self.ask(Parents(event.task_id))  # the session backs off if it must
            return []
        try:
            parents = [steps.Parent(p.id or 0, self.place(p).path) for p in event.parents]
        except InvalidInput as exc:
            return self.ledger.work_done(e.id, "stage_in", False, f"a parent's {exc}")
        task, place, methods = e.task, self.place(e.task), self._transfer_methods()

        def stage_in(dir_fd: int, cancel: Any) -> str:
            done = []
            if task.stage_in_url:
                done.append(transfers.stage_in_url(task, dir_fd, place.path, methods=methods,
                                                   scratch=self.scratch))
            if task.input_files.strip() and parents:
                done.append(steps.stage_in(task, dir_fd, parents))
            return "; ".join(done) or "nothing to stage in"

        self._submit(e.id, "stage_in", place, stage_in)
        return []

    def _transfer_methods(self) -> dict[str, Any]:
        """The installed transfer methods (asked of the plugins once, on first use, by the
        loop's thread)."""
        if self.transfers is None:
            self.transfers = staging.transfer_methods(self.pm)
        return self.transfers

    def _submit(self, tid: int, kind: str, place: workdirs.Place, step: Any) -> None:
        """Run ``step(dir_fd, cancel)`` in the pool, in the task's directory ``place``."""
        base = self._base_fd(place)

        def run(cancel: Any) -> Any:
            dir_fd = workdirs.open_dir(place, base)
            try:
                return step(dir_fd, cancel)
            finally:
                os.close(dir_fd)

        self.pool.submit(tid, kind, run)

    def _base_fd(self, place: workdirs.Place) -> int | None:
        """The project directory's descriptor for a place inside it (None: an allowed prefix,
        opened from its path)."""
        return self.root_fd if place.base == self.root else None
