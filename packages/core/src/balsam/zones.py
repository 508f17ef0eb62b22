"""The two zones of a project directory, and the checks that keep the control zone its owner's.

The *control zone* steers the owner's tools: ``server-info``, ``server-ca.pem``,
``job-templates/``, ``balsamdb/`` (the cluster, its log, keys and lock) and ``.pgsocket/``. Only
the owner of the project directory writes it; every tool refuses a control path that anyone else
could have written, as sshd refuses a group-writable ``authorized_keys``. The *work zone*
(``data/``, ``log/``, ``qsubmit/``) is shared: group-writable, sticky at the top so that no one
replaces another's files. No tool follows a symlink it did not make: control files are opened with
``O_NOFOLLOW`` and checked on the open descriptor; new files are created under a random name with
``O_CREAT|O_EXCL|O_NOFOLLOW`` and renamed into place.
"""

from __future__ import annotations

import errno
import functools
import grp
import os
import pwd
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from balsam.errors import UnsafeFile

SERVER_INFO = "server-info"
SERVER_CA = "server-ca.pem"
TEMPLATES_DIR = "job-templates"
DB_DIR = "balsamdb"
SOCKET_DIR = ".pgsocket"
WORK_DIRS = ("data", "log", "qsubmit")
#: Entries of the project directory that belong to its owner's tools: the control zone.
CONTROL_ZONE = frozenset({SERVER_INFO, SERVER_CA, TEMPLATES_DIR, DB_DIR, SOCKET_DIR})
#: The project CA's certificate inside ``balsamdb/`` (published as ``server-ca.pem``).
CA_CERT = "ca.crt"

#: Modes of the layout (``docs/security.md``): the group may enter and read the control zone,
#: and write the work zone, where the sticky bit keeps each user's files their own.
CONTROL_DIR_MODE = 0o2750
CONTROL_FILE_MODE = 0o640
WORK_TOP_MODE = 0o3770
DB_DIR_MODE = 0o700
#: Bits a control path must not have: writable by the group or by everyone.
OTHERS_WRITE = 0o022

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@functools.cache
def private_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is ``uid``'s own group (their primary group, listing nobody else): group
    write on it is the user's alone (``umask g=rwx`` with user private groups)."""
    try:
        user = pwd.getpwuid(uid)
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    return user.pw_gid == gid and members <= {user.pw_name}


@dataclass(frozen=True)
class Guard:
    """Who may write the files of one trust domain (a project's control zone, or a user's own
    ``~/.balsam``), and what to tell the user when someone else could have."""

    owner: int
    fix: str

    @property
    def trusted(self) -> frozenset[int]:
        """The owner, and root (who can write anything anyway)."""
        return frozenset({self.owner, 0})

    def problem(self, st: os.stat_result, *, private: bool = False,
                modes: bool = True) -> str | None:
        """Why a path with this ``lstat`` may have been written by someone else (None: it is
        safe). ``private`` paths must not even be readable by others; ``modes=False`` for files
        inside a checked private directory, which guards them whatever their own mode."""
        if stat.S_ISLNK(st.st_mode):
            return "a symbolic link, which balsam does not follow"
        if st.st_uid not in self.trusted:
            return f"owned by {user_name(st.st_uid)}, not {user_name(self.owner)}"
        if not modes:
            return None
        if private and st.st_mode & 0o077:
            return f"mode {stat.S_IMODE(st.st_mode):04o}: others may reach it"
        if st.st_mode & 0o020 and not private_group(st.st_gid, self.owner):
            return f"writable by group {group_name(st.st_gid)}"
        if st.st_mode & 0o002:
            return "writable by everyone"
        return None

    def refuse(self, path: Path, reason: str) -> UnsafeFile:
        return UnsafeFile(f"refusing {path}: {reason}; {self.fix}")

    def check(self, path: Path, *, private: bool = False) -> os.stat_result:
        """``lstat`` a directory or file of this domain; UnsafeFile if others could write it."""
        st = path.lstat()
        reason = self.problem(st, private=private)
        if reason:
            raise self.refuse(path, reason)
        return st

    def read(self, path: Path, *, modes: bool = True) -> str:
        """The text of a regular file of this domain, checked on the open descriptor (no
        symlink followed, no swap between the check and the read)."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
                raise self.refuse(path, self.problem(path.lstat()) or "a symbolic link") from None
            raise
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            reason = self.problem(st, modes=modes)
            if not stat.S_ISREG(st.st_mode):
                reason = "not a regular file"
            if reason:
                raise self.refuse(path, reason)
            return f.read().decode()


def project_guard(root: Path, owner_uid: int) -> Guard:
    """The guard of a project's control zone: its directory's owner writes it."""
    owner = user_name(owner_uid)
    if os.geteuid() == owner_uid:
        fix = ("check it, then repair it with: balsam perms fix (which also brings a project "
               "of the old layout up to date)")
    else:
        fix = f"ask the project owner {owner} to run: balsam perms fix"
    return Guard(owner_uid, fix)


def home_guard() -> Guard:
    """The guard of the effective user's own files (``~/.balsam``)."""
    return Guard(os.geteuid(), "it must be yours and writable only by you (chmod go-w)")


# --- writing -----------------------------------------------------------------------------------


def write_new(path: Path, data: bytes | str, mode: int) -> Path:
    """Write ``path`` atomically without following any symlink: a random temporary name created
    with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in the same directory, then renamed over ``path`` (a rename
    replaces a planted symlink itself, never its target)."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            os.fchmod(f.fileno(), mode)  # the umask does not decide a control file's mode
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --- the owner's published copies ------------------------------------------------------------


def republish(root: Path, guard: Guard) -> list[str]:
    """(The owner) Restore the published control files from the private copies in
    ``balsamdb/``; return the names rewritten.

    ``server-ca.pem`` is always the CA's certificate. ``server-info`` is replaced when others
    could have written it (or it is gone); a copy only the owner could write is the owner's
    (a hand edit) and updates the private copy instead.
    """
    db = root / DB_DIR
    try:
        guard.check(db, private=True)
    except (OSError, UnsafeFile):
        return []  # no private copies (an external server): nothing to restore from
    rewritten = []
    for published, private, derived in ((SERVER_INFO, SERVER_INFO, False),
                                        (SERVER_CA, CA_CERT, True)):
        try:
            source = guard.read(db / private, modes=False)
        except (OSError, UnsafeFile):
            continue
        try:
            current: str | None = guard.read(root / published)
        except (OSError, UnsafeFile):
            current = None
        if current == source:
            continue
        try:
            if current is not None and not derived:
                write_new(db / private, current, 0o600)
                continue
            write_new(root / published, source, CONTROL_FILE_MODE)
        except OSError:
            continue  # something else is in the way: perms check names it
        rewritten.append(published)
    return rewritten
