"""The end of a task's output file, read with the viewer's own rights and never through a symlink.

Task directories are in the project's shared work zone, where any collaborator may plant a
symlink or a FIFO in place of an output file. Every component below the starting directory is
opened with ``O_NOFOLLOW`` relative to its parent's descriptor, the file must be a regular file,
and at most ``limit`` bytes are read from its end.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath

#: Bytes read from the end of an output file, and lines shown at most.
TAIL_BYTES = 64 * 1024
TAIL_LINES = 400

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(frozen=True)
class Tail:
    """The last lines of a file, or why none are shown (``error``)."""

    path: str
    text: str = ""
    size: int = 0
    truncated: bool = False
    error: str = ""


def split_beneath(root: Path, path: Path) -> tuple[Path, tuple[str, ...]]:
    """Where to start and the components to walk: below ``root`` when ``path`` is inside it,
    from ``/`` otherwise. ``..`` is refused (it would climb out of where the walk started)."""
    pure = PurePath(path)
    try:
        start, parts = root, pure.relative_to(root).parts
    except ValueError:
        start, parts = Path(pure.anchor or "/"), pure.parts[1:]
    if not parts or ".." in parts:
        message = f"{path} is not a plain path to a file"
        raise ValueError(message)
    return start, parts


def read_tail(root: Path, path: Path, limit: int = TAIL_BYTES, lines: int = TAIL_LINES) -> Tail:
    """The last ``lines`` lines of the file ``path`` (within its last ``limit`` bytes)."""
    shown = str(path)
    try:
        start, parts = split_beneath(root, path)
    except ValueError as exc:
        return Tail(shown, error=str(exc))
    fd = -1
    walked = start
    try:
        fd = os.open(start, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name in parts[:-1]:
            walked = walked / name
            parent, fd = fd, os.open(name, _DIR, dir_fd=fd)
            os.close(parent)
        walked = walked / parts[-1]
        parent, fd = fd, os.open(parts[-1], _FILE, dir_fd=fd)
        os.close(parent)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return Tail(shown, error=f"not shown: {walked} is not a regular file")
        offset = max(0, info.st_size - limit)
        data = os.pread(fd, limit, offset)
    except OSError as exc:
        return Tail(shown, error=_why(exc, walked))
    finally:
        if fd >= 0:
            os.close(fd)
    text = data.decode(errors="replace")
    if offset > 0:
        text = text.partition("\n")[2]  # the first line is cut: drop it
    kept = text.splitlines()
    truncated = offset > 0 or len(kept) > lines
    return Tail(shown, "\n".join(kept[-lines:]), info.st_size, truncated)


def _why(exc: OSError, path: Path) -> str:
    """One line saying why a file cannot be shown."""
    if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        return f"not shown: {path} is a symbolic link (the page never follows one)"
    if exc.errno == errno.ENOENT:
        return "no output yet (the file does not exist)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"you may not read {path} (permission denied)"
    return f"cannot read {path}: {exc.strerror}"
