"""``balsam submit-launch``: render a job script from a template and submit it.

Templates are Jinja2 (undefined variables are errors), rendered in Jinja2's immutable sandbox and
only from files the renderer trusts, looked up by the scheduler's template name in
``<project>/job-templates/`` (the project's control zone: its owner's files), then
``~/.balsam/job-templates/`` (the renderer's own), then the package's defaults. A template that
anyone else could have written is refused, on ``--dry-run`` too: a template runs as whoever
renders it. They see: ``job`` (the batch_jobs row: id, owner, scheduler, project, queue, num_nodes,
wall_time_minutes, job_mode, wf_filter), ``scheduler``, ``project_dir``, ``script``, ``output``,
``bin_dir``, ``activate`` (the balsamactivate script), ``umask`` (``0007``), ``walltime``
(``HH:MM:SS``), ``launcher`` (the shell-quoted launcher command), ``launcher_args`` (its
argument list), ``scheduler_flags`` (extra directives from ``balsam config``) and the filter
``quote`` (shell quoting). A legacy template from ``~/.balsam/job-templates`` renders too: it
sees legacy's names (:data:`LEGACY_VARIABLES`); one of legacy's that has no value here is
refused with a message naming it and what to write instead. Legacy's names: ``project``,
``queue``, ``nodes``, ``time_minutes``, ``job_mode``, ``wf_filter`` (``wf-filter=NAME`` or
``consume-all``, as in ``balsam launcher --{{ wf_filter }}``), ``balsam_bin``, ``pg_bin``,
``python_path``, ``balsam_db_path`` and ``sched_flags``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pluggy

from balsam.config import load_settings
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import BalsamError, InvalidInput, UnsafeFile
from balsam.project import Project, balsam_home
from balsam.scheduler import Scheduler
from balsam.zones import Guard, home_guard, write_new
from balsam_launcher import batch_jobs, submitted
from balsam_launcher.options import MAX_NODES
from balsam_launcher.schedulers import get_scheduler

#: Account, queue and filter names go into scheduler directives: keep them to plain words.
_NAME = re.compile(r"[A-Za-z0-9_.@:+%=/-]*")
JOB_MODES = ("mpi", "serial")


class TemplateError(BalsamError):
    """The job template could not be rendered."""


#: The longest batch job asked for, in minutes (as a task's wall time: a year).
MAX_WALL_MINUTES = 525_600


@dataclass(frozen=True)
class JobRequest:
    """What the user asked for (``submit-launch`` options or a service decision)."""

    num_nodes: int
    wall_time_minutes: int
    job_mode: str = "mpi"
    project: str = ""
    queue: str = ""
    wf_filter: str = ""

    def validate(self) -> None:
        """Refuse bad input before anything is written (one clear line)."""
        if not 1 <= self.num_nodes <= MAX_NODES:
            message = f"--nodes must be between 1 and {MAX_NODES:,} (got {self.num_nodes})"
            raise InvalidInput(message)
        if not 1 <= self.wall_time_minutes <= MAX_WALL_MINUTES:
            message = (f"--time-minutes must be between 1 and {MAX_WALL_MINUTES:,} (a year; got "
                       f"{self.wall_time_minutes})")
            raise InvalidInput(message)
        if self.job_mode not in JOB_MODES:
            message = f"--job-mode must be mpi or serial (got {self.job_mode!r})"
            raise InvalidInput(message)
        for option, value in (("--project", self.project), ("--queue", self.queue),
                              ("--wf-filter", self.wf_filter)):
            if not _NAME.fullmatch(value):
                message = (f"{option} {value!r} has characters a batch scheduler would "
                           "misread; use letters, digits and _ . - @ : + % = /")
                raise InvalidInput(message)


# --- templates --------------------------------------------------------------------------------

#: Legacy's variables that have no value here, and what to write instead.
LEGACY_GONE = {
    "conda_path": "activate your environment in the template itself",
    "activate_path": "source {{ activate }} {{ project_dir }} (balsamactivate)",
    "balsam_lib": "remove it", "site_top": "remove it",
}


def legacy_context(job: dict[str, Any]) -> dict[str, Any]:
    """Legacy's template variables for the batch job row ``job`` (and ``balsam_db_path``, the
    project directory, added by :func:`render`)."""
    flags = load_settings().get("scheduler_flags") or []
    pg_ctl = shutil.which("pg_ctl")
    return {
        "project": job["project"], "queue": job["queue"], "nodes": job["num_nodes"],
        "time_minutes": job["wall_time_minutes"], "job_mode": job["job_mode"],
        "wf_filter": f"wf-filter={job['wf_filter']}" if job["wf_filter"] else "consume-all",
        "balsam_bin": str(bin_dir()), "python_path": str(Path(sys.executable).parent),
        "sched_flags": " ".join(flags) if isinstance(flags, list) else str(flags),
        "pg_bin": str(Path(pg_ctl).parent) if pg_ctl else str(bin_dir()),
    }


def _undefined_hint(exc: jinja2.UndefinedError) -> str:
    """What to write instead of a variable a template used that has no value."""
    match = re.match(r"'(\w+)' is undefined", exc.message or "")
    if match and match.group(1) in LEGACY_GONE:
        name = match.group(1)
        return f"; {name} is a legacy variable with no value here: {LEGACY_GONE[name]}"
    return ""


def template_dirs(project: Project) -> list[Path]:
    """Where job templates are looked up, first match wins (the package's own come last)."""
    return [project.templates_dir, balsam_home() / "job-templates"]


class TrustedLoader(jinja2.BaseLoader):
    """Templates from directories each guarded by whoever may write them: a template (or a
    directory on its way) that anyone else could have written is refused, not skipped."""

    def __init__(self, sources: list[tuple[Path, Guard]]) -> None:
        self.sources = sources

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = jinja2.loaders.split_template_path(template)
        for base, guard in self.sources:
            path = base.joinpath(*pieces)
            if not path.exists() and not path.is_symlink():
                continue
            try:
                text = guard.read(path)
                for directory in [base, *path.parents[:len(pieces) - 1][::-1]]:
                    guard.check(directory)
            except UnsafeFile as exc:
                message = f"job template {template!r}: {exc}"
                raise TemplateError(message) from None
            return text, str(path), lambda: False
        raise jinja2.TemplateNotFound(template)


def environment(project: Project) -> jinja2.Environment:
    """A sandboxed Jinja2 environment over the trusted template search path (StrictUndefined,
    no autoescape)."""
    trusted = TrustedLoader([(project.templates_dir, project.guard()),
                             (balsam_home() / "job-templates", home_guard())])
    loader = jinja2.ChoiceLoader([trusted, jinja2.PackageLoader("balsam_launcher", "templates")])
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
        autoescape=False)
    env.filters["quote"] = lambda value: shlex.quote(str(value))
    return env


def bin_dir() -> Path:
    """The directory holding ``balsam`` and ``balsamactivate`` (this interpreter's scripts)."""
    here = Path(sys.executable).parent
    if (here / "balsamactivate").exists():
        return here
    found = shutil.which("balsamactivate")
    return Path(found).parent if found else here


def launcher_args(job: dict[str, Any]) -> list[str]:
    """The launcher command line for a batch job: run everything it can until the time limit,
    stopping a minute early to leave time for a clean exit."""
    minutes = job["wall_time_minutes"]
    args = ["balsam", "launcher", "--job-mode", job["job_mode"], "--consume-all",
            "--time-limit-minutes", str(minutes - 1 if minutes > 1 else minutes),
            "--batch-job-id", str(job["id"])]
    if job["wf_filter"]:
        args += ["--wf-filter", job["wf_filter"]]
    return args


def script_path(project: Project, job_id: int) -> Path:
    return project.qsubmit_dir / f"qlaunch{job_id}.sh"


def render(project: Project, scheduler: Scheduler, job: dict[str, Any],
           template: str | None = None) -> str:
    """The job script text for the batch job row ``job``."""
    name = template or scheduler.template
    script = script_path(project, job["id"])
    minutes = job["wall_time_minutes"]
    args = launcher_args(job)
    context = {
        "job": job,
        "scheduler": scheduler.name,
        "project_dir": str(project.root),
        "script": str(script),
        "output": str(script.with_suffix(".out")),
        "bin_dir": str(bin_dir()),
        "activate": str(bin_dir() / "balsamactivate"),
        "umask": f"{project.umask:04o}",
        "walltime": f"{minutes // 60:02d}:{minutes % 60:02d}:00",
        "launcher": shlex.join(args),
        "launcher_args": args,
        "scheduler_flags": load_settings().get("scheduler_flags"),
    }
    context = {**legacy_context(job), "balsam_db_path": str(project.root), **context}
    try:
        return environment(project).get_template(name).render(context)
    except jinja2.TemplateNotFound:
        searched = ", ".join(str(d) for d in template_dirs(project))
        message = f"job template {name!r} not found in {searched} or the balsam-launcher package"
        raise TemplateError(message) from None
    except jinja2.TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        hint = _undefined_hint(exc) if isinstance(exc, jinja2.UndefinedError) else ""
        message = f"job template {name!r}{where}: {exc.message or type(exc).__name__}{hint}"
        raise TemplateError(message) from None


def write_script(project: Project, job_id: int, text: str) -> Path:
    """Write the script (executable, group-accessible per the project's umask) without
    following a symlink: a random name created exclusively, renamed into ``qsubmit/`` (sticky:
    a name another user took stays theirs, and the rename fails). The output file the
    scheduler will append to is created first, as ours, for the same reason."""
    path = script_path(project, job_id)
    output = path.with_suffix(".out")
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o666 & ~project.umask)
        os.close(fd)
    except FileExistsError:
        st = output.lstat()
        if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
            message = f"{output} exists and is not yours: remove it, or ask its owner to"
            raise InvalidInput(message) from None
    try:
        return write_new(path, text, 0o777 & ~project.umask & ~0o002)
    except PermissionError:
        message = f"{path} exists and is not yours: remove it, or ask its owner to"
        raise InvalidInput(message) from None


# --- submission -------------------------------------------------------------------------------


def dry_run(project: Project, pm: pluggy.PluginManager, request: JobRequest, *,
            scheduler: str | None = None, template: str | None = None) -> str:
    """The script ``submit`` would write (for batch job id 0); nothing is written or queued."""
    request.validate()
    sched = get_scheduler(project, pm, scheduler)
    job = {"id": 0, "owner": "", "scheduler": sched.name, **asdict(request)}
    return render(project, sched, job, template)


def submit(project: Project, pm: pluggy.PluginManager, request: JobRequest, *,
           scheduler: str | None = None, template: str | None = None,
           conn: Connection | None = None) -> dict[str, Any]:
    """Record, render and submit one batch job; return its row.

    Bad input, a broken template or a refusing scheduler leave nothing behind: the row and the
    script are removed again. Once the scheduler has accepted the job, the row says so.
    """
    request.validate()
    sched = get_scheduler(project, pm, scheduler)
    own = conn is None
    conn = conn or connect(project)
    try:
        with wrap_db_errors():
            job = batch_jobs.create(conn, sched.name, asdict(request))
        path = None
        try:
            path = write_script(project, job["id"], render(project, sched, job, template))
            rel = str(path.relative_to(project.root))
            with wrap_db_errors():
                batch_jobs.set_script(conn, job["id"], rel)
            scheduler_id = sched.submit(path, job)
        except BaseException:
            with contextlib.suppress(BalsamError), wrap_db_errors():
                batch_jobs.delete(conn, job["id"])  # best effort: keep the first error
            if path is not None:
                path.unlink(missing_ok=True)
                path.with_suffix(".out").unlink(missing_ok=True)
            raise
        try:
            # The private record comes first: it is what lets this user cancel the job later.
            submitted.record(project, sched.name, scheduler_id, sched.details(scheduler_id))
            with wrap_db_errors():
                job = batch_jobs.mark_submitted(conn, job["id"], scheduler_id)
        except (BalsamError, OSError) as exc:
            message = (f"{sched.name} accepted job {scheduler_id} (batch job {job['id']}) but "
                       f"recording it failed: {exc}")
            raise BalsamError(message) from exc
        if job["state"] == "cancelled":  # cancelled while we were submitting it
            sched.cancel(scheduler_id)
        return job
    finally:
        if own:
            conn.close()
