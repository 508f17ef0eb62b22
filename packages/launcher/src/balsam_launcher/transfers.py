"""Data staging on the launcher's side: the transfer methods it ships (``file``, ``rsync``,
``scp``) and the two steps of the script pool that use them, :func:`stage_in_url` (before the
preprocess step) and :func:`stage_out` (after the postprocess step).

A method never sees a task's working directory. Stage-in fetches into a private directory of the
launcher's (0700, in its scratch space) and the launcher moves the result into the working
directory through the descriptor it opened; stage-out copies the matching files out of the
working directory into such a directory first (as legacy Balsam did), and the method sends that.
Files are reached without following a symlink the launcher's user did not make (a member of the
project may plant one in the shared work zone, pointing at the owner's control zone): a symlink
owned by root or by the launcher's user is followed at the top of a path, copied as a symlink
inside a tree; one owned by anyone else stops the transfer, naming it. Nothing in the working
directory is ever removed or changed by a stage-out, so a failed transfer loses no output.

``rsync`` and ``scp`` run as argument lists (never a shell) over ssh in batch mode; the remote
shell can be replaced (``BALSAM_TRANSFER_SSH``, a command line) for sites with a wrapper, and by
the tests, which run the real rsync and scp through a local stand-in for ssh.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import os
import posixpath
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from balsam.models import Task
from balsam.staging import TransferFailed, TransferMethod, Url, method_for, parse_url
from balsam_launcher.process import program

#: How long one transfer may take (seconds) before it is stopped and the task FAILED.
TRANSFER_TIMEOUT = 3600.0
#: The remote shell command for rsync and scp (a command line, split like a shell's).
SSH_VARIABLE = "BALSAM_TRANSFER_SSH"
SSH_OPTIONS = ("-o", "BatchMode=yes")

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_HOPS = 40
_SHELL_CHARS = re.compile(r"[\s;&|$`'\"\\<>(){}!#]")


# --- reaching files without following others' symlinks ------------------------------------------


def _trusted_link(st: os.stat_result) -> bool:
    return st.st_uid in (0, os.geteuid())


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _refused(path: str, st: os.stat_result) -> TransferFailed:
    return TransferFailed(f"{path} is a symlink owned by {_owner(st.st_uid)}: not followed")


def resolve(path: str, *, start: int | None = None, base: str = "/",
            forbidden: Sequence[str] = ()) -> tuple[int, str]:
    """Open ``path`` (relative to the directory ``start``, named ``base``; else absolute),
    following only symlinks owned by root or by us, and none that leads under ``forbidden``
    (the project's control zone). Returns the descriptor (a directory's, or a file's opened
    for reading) and the path it resolved to."""
    parts = deque(p for p in path.split("/") if p not in ("", "."))
    if path.startswith("/") or start is None:
        fd, where = os.open("/", _DIR), "/"
    else:
        fd, where = os.dup(start), base
    hops = 0
    try:
        while parts:
            part = parts.popleft()
            if part == "..":
                new = os.open("..", _DIR, dir_fd=fd)
                os.close(fd)
                fd, where = new, posixpath.dirname(where) or "/"
                continue
            here = posixpath.join(where, part)
            try:
                st = os.lstat(part, dir_fd=fd)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, here) from None
            if stat.S_ISLNK(st.st_mode):
                if not _trusted_link(st):
                    raise _refused(here, st)
                hops += 1
                if hops > _MAX_HOPS:
                    message = f"{path}: too many levels of symlinks"
                    raise TransferFailed(message)
                target = os.readlink(part, dir_fd=fd)
                if target.startswith("/"):
                    os.close(fd)
                    fd, where = os.open("/", _DIR), "/"
                parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            flags = _DIR if parts or stat.S_ISDIR(st.st_mode) else _READ
            try:
                new = os.open(part, flags, dir_fd=fd)  # O_NOFOLLOW: a link swapped in fails
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, here) from None
            os.close(fd)
            fd, where = new, here
        if any(where == f or where.startswith(f.rstrip("/") + "/") for f in forbidden):
            message = f"{path} leads into the project's control zone ({where}): refused"
            raise TransferFailed(message)
        return fd, where
    except BaseException:
        os.close(fd)
        raise


def copy_into(src_fd: int, name: str, dst_fd: int, *, shown: str) -> int:
    """Copy the open file or directory ``src_fd`` to ``name`` in the directory ``dst_fd``
    (written to a new name, then renamed over what was there). Inside a directory, a symlink of
    ours is copied as a symlink and anyone else's stops the copy. Returns the bytes copied."""
    st = os.fstat(src_fd)
    if stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o777, dir_fd=dst_fd)
        sub = os.open(name, _DIR, dir_fd=dst_fd)
        try:
            return _copy_tree(src_fd, sub, shown)
        finally:
            os.close(sub)
    if not stat.S_ISREG(st.st_mode):
        message = f"{shown} is not a regular file or a directory"
        raise TransferFailed(message)
    tmp = f".{name}.balsam-{os.getpid()}-{os.urandom(4).hex()}"
    out = os.open(tmp, _NEW, stat.S_IMODE(st.st_mode) | 0o600, dir_fd=dst_fd)
    try:
        os.set_blocking(src_fd, True)
        copied = 0
        while chunk := os.sendfile(out, src_fd, None, 1 << 24):
            copied += chunk
        os.rename(tmp, name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dst_fd)
        raise
    finally:
        os.close(out)
    return copied


def _copy_tree(src_fd: int, dst_fd: int, shown: str) -> int:
    copied = 0
    for entry in sorted(os.listdir(src_fd)):
        here = f"{shown}/{entry}"
        st = os.lstat(entry, dir_fd=src_fd)
        if stat.S_ISLNK(st.st_mode):
            if not _trusted_link(st):
                raise _refused(here, st)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry, dir_fd=dst_fd)
            os.symlink(os.readlink(entry, dir_fd=src_fd), entry, dir_fd=dst_fd)
            continue
        flags = _DIR if stat.S_ISDIR(st.st_mode) else _READ
        fd = os.open(entry, flags, dir_fd=src_fd)
        try:
            copied += copy_into(fd, entry, dst_fd, shown=here)
        finally:
            os.close(fd)
    return copied


def move_into(src_fd: int, dst_fd: int, *, shown: str) -> list[str]:
    """Move every entry of the private directory ``src_fd`` into ``dst_fd`` (rename, or copy
    across file systems). Returns the names."""
    names = sorted(os.listdir(src_fd))
    for name in names:
        try:
            os.rename(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            continue
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR,
                                 errno.ENOTDIR):
                raise
        st = os.lstat(name, dir_fd=src_fd)
        if stat.S_ISLNK(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dst_fd)
            os.symlink(os.readlink(name, dir_fd=src_fd), name, dir_fd=dst_fd)
            continue
        fd = os.open(name, _DIR if stat.S_ISDIR(st.st_mode) else _READ, dir_fd=src_fd)
        try:
            copy_into(fd, name, dst_fd, shown=f"{shown}/{name}")
        finally:
            os.close(fd)
    return names


@contextlib.contextmanager
def private_dir(scratch: Path, prefix: str) -> Iterator[tuple[Path, int]]:
    """A new directory only we can enter (0700) in ``scratch``, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=scratch))
    fd = os.open(path, _DIR)
    try:
        yield path, fd
    finally:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)


# --- the methods shipped ------------------------------------------------------------------------


def _local(function: Callable[..., None]) -> Callable[..., None]:
    """A local transfer's OSError as TransferFailed, naming the path."""

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except OSError as exc:
            raise TransferFailed(_describe(exc)) from None

    return wrapped


class LocalCopy:
    """``file:///PATH``, ``local:PATH`` and absolute paths: a copy on the launcher's host (a
    shared file system), made by the launcher itself."""

    @_local
    def stage_in(self, url: Url, directory: Path, *, timeout: float) -> None:
        src, where = resolve(url.path)
        dst = os.open(directory, _DIR)
        try:
            if url.path.endswith("/") and stat.S_ISDIR(os.fstat(src).st_mode):
                _copy_tree(src, dst, where)
            else:
                name = posixpath.basename(url.path.rstrip("/")) or "root"
                copy_into(src, name, dst, shown=where)
        finally:
            os.close(src)
            os.close(dst)

    @_local
    def stage_out(self, directory: Path, names: Sequence[str], url: Url, *,
                  timeout: float) -> None:
        dst = _make_dirs(url.path)
        src = os.open(directory, _DIR)
        try:
            for name in names:
                fd = os.open(name, _READ, dir_fd=src)
                try:
                    copy_into(fd, name, dst, shown=f"{url.path}/{name}")
                finally:
                    os.close(fd)
        finally:
            os.close(src)
            os.close(dst)


def _make_dirs(path: str) -> int:
    """Open the directory ``path``, creating what is missing (symlinks: as :func:`resolve`)."""
    parts = [p for p in path.split("/") if p]
    for n in range(len(parts), -1, -1):
        try:
            fd, where = resolve("/" + "/".join(parts[:n]))
        except FileNotFoundError:
            continue
        try:
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), where)
            for part in parts[n:]:
                where = posixpath.join(where, part)
                try:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o777, dir_fd=fd)
                    new = os.open(part, _DIR, dir_fd=fd)
                except OSError as exc:
                    raise OSError(exc.errno, exc.strerror, where) from None
                os.close(fd)
                fd = new
        except BaseException:
            os.close(fd)
            raise
        return fd
    message = f"cannot reach {path}"
    raise TransferFailed(message)


def _ssh() -> list[str]:
    """The remote shell: ``BALSAM_TRANSFER_SSH`` or ssh in batch mode (never a password
    prompt), resolved on the launcher's PATH."""
    words = shlex.split(os.environ.get(SSH_VARIABLE, "")) or ["ssh", *SSH_OPTIONS]
    return [program(words[0]), *words[1:]]


def _run(argv: list[str], what: str, timeout: float) -> None:
    """Run a transfer program; TransferFailed with its last line of output if it fails."""
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False, process_group=0)
    except subprocess.TimeoutExpired:
        message = f"{what}: {posixpath.basename(argv[0])} timed out after {timeout:.0f}s"
        raise TransferFailed(message) from None
    except OSError as exc:
        message = f"{what}: cannot start {argv[0]}: {exc.strerror}"
        raise TransferFailed(message) from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
        last = lines[-1].strip()[:300] if lines else "no output"
        message = f"{what}: {posixpath.basename(argv[0])} exited {done.returncode}: {last}"
        raise TransferFailed(message)


class Rsync:
    """``rsync://[USER@]HOST[:PORT]/PATH``: rsync over ssh (not the rsync daemon protocol).
    Symlinks are sent as symlinks (``--links``), never followed; stage-out creates the last
    directory of the path, not its parents (rsync before 3.2.3 has no ``--mkpath``)."""

    def _remote(self, url: Url) -> tuple[list[str], str]:
        ssh = _ssh() + (["-p", str(url.port)] if url.port else [])
        return ["-e", shlex.join(ssh)], f"{url.remote}:{url.path}"

    def stage_in(self, url: Url, directory: Path, *, timeout: float) -> None:
        shell, remote = self._remote(url)
        _run([program("rsync"), "--recursive", "--links", "--times", "--protect-args", *shell,
              "--", remote, f"{directory}/"], f"rsync from {url.text}", timeout)

    def stage_out(self, directory: Path, names: Sequence[str], url: Url, *,
                  timeout: float) -> None:
        shell, remote = self._remote(url)
        _run([program("rsync"), "--recursive", "--links", "--times", "--protect-args", *shell,
              "--", *(f"{directory}/{n}" for n in names), f"{remote}/"],
             f"rsync to {url.text}", timeout)


class Scp:
    """``scp://[USER@]HOST[:PORT]/PATH``: scp over ssh; stage-out into an existing remote
    directory. A directory's contents (``PATH/``) are fetched as ``PATH/*``, without its
    dot-files."""

    def _args(self, url: Url) -> list[str]:
        if _SHELL_CHARS.search(url.path):  # scp before OpenSSH 9 hands the path to a shell
            message = (f"an scp path may not contain shell characters or spaces: {url.path!r} "
                       "(rsync:// takes any path)")
            raise TransferFailed(message)
        ssh = _ssh()
        return ["-S", ssh[0], *(f"-o{w}" for w in ssh[1:] if w != "-o"),
                *(["-P", str(url.port)] if url.port else [])]

    def stage_in(self, url: Url, directory: Path, *, timeout: float) -> None:
        path = f"{url.path}*" if url.path.endswith("/") else url.path  # a remote glob
        _run([program("scp"), "-p", "-r", "-q", *self._args(url), "--",
              f"{url.remote}:{path}", f"{directory}/"], f"scp from {url.text}", timeout)

    def stage_out(self, directory: Path, names: Sequence[str], url: Url, *,
                  timeout: float) -> None:
        _run([program("scp"), "-p", "-r", "-q", *self._args(url), "--",
              *(f"{directory}/{n}" for n in names), f"{url.remote}:{url.path}/"],
             f"scp to {url.text}", timeout)


def builtin_methods() -> dict[str, TransferMethod]:
    return {"file": LocalCopy(), "rsync": Rsync(), "scp": Scp()}


# --- the steps of the script pool ---------------------------------------------------------------


def stage_in_url(task: Task, dir_fd: int, workdir: Path, *,
                 methods: Mapping[str, TransferMethod], scratch: Path,
                 timeout: float = TRANSFER_TIMEOUT) -> str:
    """Fetch the task's ``stage_in_url`` into its working directory (``dir_fd``). Returns a
    one-line summary; raises TransferFailed."""
    url = parse_url(task.stage_in_url, what="stage_in_url")
    method = method_for(methods, url)
    with private_dir(scratch, f"stage-in-{task.id}-") as (path, fd):
        try:
            method.stage_in(url, path, timeout=timeout)
            names = move_into(fd, dir_fd, shown=str(workdir))
        except TransferFailed as exc:
            message = f"stage-in from {url.text} failed: {exc}"
            raise TransferFailed(message) from None
        except OSError as exc:
            message = f"stage-in from {url.text} failed: {_describe(exc)}"
            raise TransferFailed(message) from None
    return f"{len(names)} item(s) staged in from {url.text}"


def stage_out(task: Task, dir_fd: int, workdir: Path, *,
              methods: Mapping[str, TransferMethod], scratch: Path,
              forbidden: Sequence[str] = (), timeout: float = TRANSFER_TIMEOUT) -> str:
    """Send the files of the working directory (``dir_fd``) matching ``stage_out_files`` to
    ``stage_out_url``. Nothing in the working directory changes. Returns a one-line summary;
    raises TransferFailed (saying that the outputs stay where they are)."""
    url = parse_url(task.stage_out_url, what="stage_out_url")
    kept = f"the outputs stay in {workdir}"
    try:
        method = method_for(methods, url)
        with private_dir(scratch, f"stage-out-{task.id}-") as (path, fd):
            names = collect(dir_fd, str(workdir), task.stage_out_files.split(), fd,
                            forbidden=forbidden)
            if names:
                method.stage_out(path, names, url, timeout=timeout)
    except TransferFailed as exc:
        message = f"stage-out to {url.text} failed: {exc}; {kept}"
        raise TransferFailed(message) from None
    except OSError as exc:
        message = f"stage-out to {url.text} failed: {_describe(exc)}; {kept}"
        raise TransferFailed(message) from None
    if not names:
        return f"stage-out: no file matches {task.stage_out_files!r}: nothing sent"
    return f"{len(names)} item(s) staged out to {url.text}"


def collect(dir_fd: int, workdir: str, patterns: Sequence[str], dst_fd: int, *,
            forbidden: Sequence[str] = ()) -> list[str]:
    """Copy the entries of the working directory matching ``patterns`` (globs, relative, ``*``
    not matching a leading dot; ``sub/*.h5`` looks into ``sub``) into ``dst_fd``. Returns the
    top-level names copied."""
    copied: dict[str, None] = {}
    for pattern in patterns:
        pieces = [p for p in pattern.split("/") if p not in ("", ".")]
        if pattern.startswith("/") or ".." in pieces or not pieces:
            message = f"stage_out_files pattern {pattern!r} must stay in the working directory"
            raise TransferFailed(message)
        for rel in _matches(dir_fd, pieces):
            src, _ = resolve(rel, start=dir_fd, base=workdir, forbidden=forbidden)
            try:
                top, *rest = rel.split("/")
                target = dst_fd if not rest else _make_under(dst_fd, [top, *rest[:-1]])
                try:
                    copy_into(src, rel.split("/")[-1], target, shown=f"{workdir}/{rel}")
                finally:
                    if target != dst_fd:
                        os.close(target)
            finally:
                os.close(src)
            copied[top] = None
    return list(copied)


def _matches(dir_fd: int, pieces: list[str], prefix: str = "") -> Iterator[str]:
    """Relative paths below ``dir_fd`` matching the pattern ``pieces`` (directories opened
    without following symlinks)."""
    first, rest = pieces[0], pieces[1:]
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError:
        return
    for name in names:
        if not fnmatch.fnmatchcase(name, first) or (name.startswith(".")
                                                    and not first.startswith(".")):
            continue
        if not rest:
            yield prefix + name
            continue
        try:
            sub = os.open(name, _DIR, dir_fd=dir_fd)
        except OSError:
            continue
        try:
            yield from _matches(sub, rest, f"{prefix}{name}/")
        finally:
            os.close(sub)


def _make_under(fd: int, parts: list[str]) -> int:
    current = os.dup(fd)
    for part in parts:
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700, dir_fd=current)
        new = os.open(part, _DIR, dir_fd=current)
        os.close(current)
        current = new
    return current


def _describe(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{what}: {exc.filename}" if exc.filename else what
