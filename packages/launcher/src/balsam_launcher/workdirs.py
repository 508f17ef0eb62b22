"""Task working directories: where a task may work, and reaching it without following a symlink.

A task works inside the project (``data/<workflow>/<name>_<id>`` by default, or its own
``user_workdir``, relative to the project or absolute inside it), outside the control zone, or
under a prefix the launcher's user allowed (``balsam launcher --allow-workdir PREFIX``). Anything
else, and any path that climbs out with ``..``, is refused with a one-line reason (:func:`place`,
pure).

The work zone is writable by every member of the project's group, so a member may plant a
symlink where a task's directory or output file will be. The launcher never follows one: it
walks from the project root (or the allowed prefix) one component at a time with ``O_NOFOLLOW``
directory descriptors, creates what is missing with ``mkdirat``, opens the output file relative
to the directory it opened, and starts the task in that very directory
(``/proc/self/fd/<fd>``, resolved by the child before it closes its descriptors and execs).
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from balsam import zones
from balsam.errors import InvalidInput

#: Entries of the project directory that belong to its owner's tools: no task works there.
CONTROL_ZONE = zones.CONTROL_ZONE

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: A planted FIFO must not block the launcher (O_NONBLOCK), and reading the last line of the
#: output back needs O_RDWR.
_OUT = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LOG = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Place(NamedTuple):
    """A working directory: ``parts`` below ``base``, a directory the launcher's user trusts
    (the project root or an allowed prefix)."""

    base: str
    parts: tuple[str, ...]

    @property
    def path(self) -> Path:
        return Path(self.base, *self.parts)


def place(workdir: str, root: str | os.PathLike[str], allowed: Sequence[str] = ()) -> Place:
    """Where a task's working directory is: ``workdir`` relative to the project ``root``, or
    absolute inside it or under one of the ``allowed`` prefixes. InvalidInput (one line) if it
    is anywhere else, climbs out with ``..``, or is in the project's control zone."""
    root = posixpath.normpath(os.fspath(root))
    path = posixpath.normpath(workdir)
    if posixpath.isabs(path):
        for base in (root, *(posixpath.normpath(p) for p in allowed)):
            if path == base:
                return _checked(workdir, base, (), in_project=base == root)
            if path.startswith(base.rstrip("/") + "/"):
                parts = tuple(path[len(base):].strip("/").split("/"))
                return _checked(workdir, base, parts, in_project=base == root)
        message = (f"working directory {workdir} is outside the project (a launcher may allow it "
                   "with --allow-workdir PREFIX)")
        raise InvalidInput(message)
    if path == ".." or path.startswith("../"):
        message = f"working directory {workdir} climbs out of the project"
        raise InvalidInput(message)
    return _checked(workdir, root, tuple(path.split("/")), in_project=True)


def _checked(workdir: str, base: str, parts: tuple[str, ...], *, in_project: bool) -> Place:
    if in_project and (parts in ((), (".",)) or parts[0] in CONTROL_ZONE):
        message = f"working directory {workdir} is in the project's control zone"
        raise InvalidInput(message)
    return Place(base, parts)


def open_dir(where: Place, base_fd: int | None = None, *, fresh: bool = False) -> int:
    """Open the working directory, creating what is missing (mode 0777 less the umask), one
    component at a time from ``where.base`` (or ``base_fd``, a descriptor of it), never
    following a symlink. ``fresh``: it most likely does not exist yet (made first, one lookup
    less). Returns a new descriptor; OSError naming the full path on failure."""
    fd = base_fd if base_fd is not None else os.open(where.base, _DIR & ~os.O_NOFOLLOW)
    owned = base_fd is None
    path = where.base
    try:
        last = len(where.parts) - 1
        for i, part in enumerate(where.parts):
            path = posixpath.join(path, part)
            try:
                child = _open_child(fd, part, new=fresh and i == last)
            except OSError as exc:
                raise _named(exc, path) from None
            if owned:
                os.close(fd)
            fd, owned = child, True
        return fd if owned else os.dup(fd)
    except BaseException:
        if owned:
            os.close(fd)
        raise


def _open_child(fd: int, part: str, *, new: bool = False) -> int:
    """Open the directory ``part`` in ``fd``, made first if missing (or, if ``new``, first)."""
    if not new:
        try:
            return os.open(part, _DIR, dir_fd=fd)
        except FileNotFoundError:
            pass
    try:
        os.mkdir(part, 0o777, dir_fd=fd)  # never follows a symlink: one is there, EEXIST
    except FileExistsError:
        pass  # there already (or made meanwhile by someone else): open (and check) it
    return os.open(part, _DIR, dir_fd=fd)


def open_output(dir_fd: int, name: str) -> int:
    """Open (create, mode 0666 less the umask) ``name`` in the directory ``dir_fd`` for
    appending, never following a symlink; it must be a regular file."""
    fd = os.open(name, _OUT, 0o666, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", name)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_log(directory: Path, name: str) -> int:
    """A new file for writing (``O_CREAT|O_EXCL|O_NOFOLLOW``): a name planted in advance, a
    symlink included, raises FileExistsError and is never written to."""
    return os.open(directory / name, _LOG, 0o666)


def last_line(fd: int, limit: int = 300) -> str:
    """The last line the program printed in an open file (read with ``pread``; at most
    ``limit`` characters): see :func:`program_line`."""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, 4096, max(0, size - 4096))
    except OSError:
        return ""
    return program_line(data.decode(errors="replace").splitlines())[-limit:]


#: Lines an MPI launcher or Slurm adds about a failed run (``srun: error: node1: task 0: Exited
#: with exit code 3``); the exit code says as much, the program's own last words say more.
_LAUNCHER_LINE = re.compile(r"(srun|slurmstepd(-\S+)?|mpirun|mpiexec|prterun|aprun|jsrun)"
                            r"(: | noticed | detected )")


def program_line(lines: list[str]) -> str:
    """The last non-empty line that is the program's: an MPI launcher's closing report (its
    ``srun:`` lines, or Open MPI's block between rules of dashes) is skipped, unless it is all
    there is."""
    kept = [ln.strip() for ln in lines if ln.strip()]
    if not kept:
        return ""
    ours: list[str] = []
    in_block = False
    for line in kept:
        if set(line) == {"-"} and len(line) >= 20:  # Open MPI frames its reports in rules
            in_block = not in_block
        elif not in_block and not _LAUNCHER_LINE.match(line):
            ours.append(line)
    return (ours or kept)[-1]


def describe(exc: OSError) -> str:
    """One line for an OSError: what failed, and where."""
    refused = "a symlink or not a directory (not followed)"
    what = {errno.ELOOP: refused, errno.ENOTDIR: refused}.get(exc.errno or 0,
                                                               exc.strerror or str(exc))
    return f"{what}: {exc.filename}" if exc.filename else what


def _named(exc: OSError, path: str) -> OSError:
    return OSError(exc.errno, exc.strerror, path)
