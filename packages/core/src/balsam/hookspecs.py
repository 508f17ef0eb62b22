"""Hook specifications for balsam plugins.

Implement a hook with ``from balsam import hookimpl`` and declare the module in your package's
``[project.entry-points.balsam]`` table; the plugin manager finds it when the package is installed.

Ordering: never rely on install order (entry points load in filesystem order). Use
``tryfirst``/``trylast``, or ``wrapper=True`` to run around the other implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from balsam.contracts import InitOptions, LauncherInfo
    from balsam.models import Task
    from balsam.project import Project
    from balsam.resources import Node, Resources
    from balsam.scheduler import Scheduler

hookspec = pluggy.HookspecMarker("balsam")
hookimpl = pluggy.HookimplMarker("balsam")


# --- Site lifecycle ---------------------------------------------------------------------------


@hookspec
def on_init(project: Project, options: InitOptions) -> None:
    """Set up a freshly created project directory.

    Called by ``balsam init`` after the directory skeleton exists. pgserver creates the cluster
    (or records the external DSN) and applies migrations; perms applies group ownership and modes.

    :param project: the new project (its ``server-info`` may still be empty).
    :param options: a :class:`balsam.contracts.InitOptions`: the ``balsam init`` options
        (``dsn``, ``group``) and ``migrations``, the plugin packages whose migrations to apply
        after core's (see ``migration_packages``).

    All implementations are called; return values are ignored. An exception stops the remaining
    implementations and propagates to the caller, which removes the half-made directory.
    """


@hookspec
def migration_packages() -> list[str] | None:
    """Name the import packages whose ``sql/migrations/*.sql`` this plugin adds to the schema.

    :returns: import package names (for example ``["balsam_pgserver"]``), or None.

    All implementations are called; results are concatenated. Core's own migrations always run
    first; plugin tables should be prefixed with the plugin's name.

    .. versionadded:: 0.1
    """


# --- Users -------------------------------------------------------------------------------------


@hookspec
def on_add_user(project: Project, username: str, role: str) -> None:
    """Authorise a collaborator on the project.

    :param project: the project (its server is running).
    :param username: the OS user name, already checked to be a valid SQL identifier.
    :param role: ``"member"`` (read and write tasks) or ``"viewer"`` (read only).

    Core fires it (:func:`balsam.users.add_user`) after checking the name and that the caller
    may manage users. All implementations are called; return values are ignored. pgserver
    creates the database role; perms warns if the OS user is not in the project's group.
    """


@hookspec
def on_drop_user(project: Project, username: str) -> None:
    """Withdraw a collaborator's access to the project.

    :param project: the project (its server is running).
    :param username: the OS user name, already checked to be a valid SQL identifier, not the
        owner's.

    Core fires it (:func:`balsam.users.drop_user`) after checking the name and that the caller
    may manage users. All implementations are called; return values are ignored; an exception
    (``NotFound`` for someone who is not a user) stops the rest. pgserver revokes the database
    roles and ends the user's sessions.

    .. versionadded:: 0.2
    """


# --- Activation --------------------------------------------------------------------------------


@hookspec
def on_activate(project: Project, user: str) -> dict[str, str] | None:
    """Prepare a shell (or a launcher) to use the project.

    :param project: the project being activated.
    :param user: the OS user activating it.
    :returns: environment variables to export, or None.

    All implementations are called; the returned mappings are merged in call order. pgserver starts
    the server when the caller owns the project (and checks it otherwise); perms checks modes.
    """


@hookspec
def describe_project(project: Project) -> dict[str, Any] | None:
    """Contribute lines to ``balsam which`` (server address, state, group, ...).

    :param project: the project being described.
    :returns: a mapping of label to value, or None.

    All implementations are called; the mappings are merged.

    .. versionadded:: 0.1
    """


# --- Scheduling --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def select_tasks(
    candidates: Sequence[Task], resources: Resources, launcher: LauncherInfo
) -> list[Task] | None:
    """Choose which of the candidate tasks to start now on the free resources.

    :param candidates: unclaimed tasks that need nodes (READY, STAGED_IN, PREPROCESSED,
        RESTART_READY), locked for this launcher (``FOR NO KEY UPDATE SKIP LOCKED``), already
        restricted to the launcher's workflow filter and to tasks that could fit its free nodes.
    :param resources: a copy of the launcher's nodes (a :class:`balsam.resources.Resources`);
        a policy may allocate on it to plan, the launcher's own state is not affected.
    :param launcher: the launcher, a :class:`balsam.contracts.LauncherInfo` (``id``, ``owner``,
        ``hostname``, ``job_mode``, ``wf_filter``, ``num_nodes``, ``simulated``,
        ``scheduler``, ``scratch``, ``remaining_minutes``).
    :returns: the tasks to start, a subset of ``candidates``, in start order.

    Stops at the first non-None result. The launcher's default policy is ``trylast`` (largest
    ``num_nodes`` first, then longest ``wall_time_minutes``, packed first-fit), so a site plugin
    overrides it. Core places the returned tasks first-fit in that order, drops those that do not
    fit, and claims exactly the placed ones in the same transaction, so a policy can reorder or
    skip tasks but never break exactly-once execution.
    """


# --- CLI ---------------------------------------------------------------------------------------


@hookspec
def register_commands(register: Callable[..., None]) -> None:
    """Add commands to the ``balsam`` CLI.

    :param register: call it once per command or group:
        ``register("name", "module:attribute", help="one line")`` registers a click command by
        import path, imported only when it runs (``balsam --help`` shows ``help``); the older
        ``register(click_command)`` registers an imported command. ``group="report"`` (either
        form) adds a subcommand to another plugin's group. A name already taken by another
        plugin is an error naming both plugins.

    All implementations are called; return values are ignored.

    .. versionchanged:: 0.1.4 commands may be registered by import path.
    """


# --- Batch schedulers --------------------------------------------------------------------------


@hookspec
def register_schedulers() -> dict[str, type[Scheduler]] | None:
    """Name the batch schedulers this plugin provides (for ``submit-launch`` and ``service``).

    :returns: a mapping of scheduler name (``"slurm"``) to a subclass of
        :class:`balsam.scheduler.Scheduler` (core: a site scheduler needs nothing else), or
        None.

    All implementations are called; the mappings are merged so that the implementation called
    first wins a name. The launcher's built-in schedulers (local, slurm, pbs, cobalt) are
    ``trylast``, so a site plugin's scheduler of the same name replaces the built-in one.

    .. versionadded:: 0.1
    """


# --- Data staging ------------------------------------------------------------------------------


@hookspec
def register_transfer_methods() -> dict[str, Any] | None:
    """Name the transfer methods this plugin provides for ``stage_in_url`` and ``stage_out_url``.

    :returns: a mapping of URL scheme (``"gsiftp"``, ``"globus"``) to an object with the
        ``stage_in`` and ``stage_out`` methods of ``balsam.staging.TransferMethod``, or None.

    All implementations are called; the mappings are merged so that the implementation called
    first wins a scheme. The launcher's own (``file`` for ``file://``, ``local:`` and absolute
    paths, ``rsync`` and ``scp`` over ssh) are ``trylast``, so a site's method of the same
    scheme replaces ours. A method sees only a private directory of the launcher's and its URL
    (never the task's working directory): see ``balsam.staging``.

    .. versionadded:: 0.2
    """


# --- Launching ---------------------------------------------------------------------------------


@hookspec(firstresult=True)
def mpi_command(task: Task, command: list[str], nodes: list[Node], env: dict[str, str],
                launcher: LauncherInfo) -> list[str] | None:
    """Build the command line that starts an MPI task on its nodes (mpirun, srun, aprun, ...).

    :param task: the task to start (``num_nodes``, ``ranks_per_node``, ``threads_per_rank``,
        ``threads_per_core``, ``cpu_affinity``).
    :param command: the application's own argument list (executable and arguments).
    :param nodes: the nodes the launcher gave the task (``host``; ``name`` is the scheduler's
        name for the node, for example a Cray nid).
    :param env: the task's own variables (``BALSAM_*`` and its ``environ_vars``). They are in the
        process environment already; forward them to remote ranks if the MPI needs it.
    :param launcher: the launcher, a :class:`balsam.contracts.LauncherInfo`.
    :returns: the full argument list to execute, or None to defer to the next implementation.

    Stops at the first non-None result. The launcher's default implementation is ``trylast``: srun
    inside a Slurm allocation, aprun on a Cray, otherwise mpirun (Open MPI or MPICH flavour).

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def gpu_environment(devices: list[int], task: Task, launcher: LauncherInfo
                    ) -> dict[str, str] | None:
    """The variables that give a task its GPUs (``CUDA_VISIBLE_DEVICES`` and the like).

    :param devices: the device numbers the launcher gave the task on each of its nodes
        (``gpus_per_rank * ranks_per_node`` of them, held by no other task while it runs; the
        same numbers on every node of an mpi-mode task); empty for a task that asked for none,
        which should then see none.
    :param task: the task to start.
    :param launcher: the launcher (:class:`balsam.contracts.LauncherInfo`: ``gpus_per_node``,
        ``job_mode``, ...).
    :returns: variables to set in the task's environment, or None to defer.

    Called only by launchers with ``--gpus-per-node``. Stops at the first non-None result. The
    launcher's default (``trylast``) sets ``CUDA_VISIBLE_DEVICES``; a site with other devices
    returns its own (``ROCR_VISIBLE_DEVICES``, ``ZE_AFFINITY_MASK``...).

    .. versionadded:: 0.2
    """
