"""The file policy of a shared project: one group, setgid directories the group can write, files
it can read and write, and the server's directories kept as PostgreSQL needs them."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from balsam.errors import InvalidInput, PermissionDenied
from balsam.project import DB_DIR, SOCKET_DIR, Project, current_user

#: Directories: group rwx, setgid so that whatever anyone creates inside keeps the group.
DIR_MODE = 0o2770
#: Files: group read and write; executables group x as well.
FILE_MODE = 0o660
EXEC_MODE = 0o770
#: The socket directory: the group may connect but not plant files (the server manages it).
SOCKET_DIR_MODE = 0o2750
#: The data directory: PostgreSQL refuses to start unless only its owner may enter.
DB_DIR_MODE = 0o700
#: The umask balsam tools apply for a project (group keeps every right, others get none).
DEFAULT_UMASK = 0o007


@dataclass
class Problem:
    """A path that breaks the policy, what is wrong and the mode and group that would fix it."""

    path: Path
    uid: int
    reasons: list[str] = field(default_factory=list)
    mode: int | None = None
    gid: int | None = None

    @property
    def owner(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    def describe(self, root: Path) -> str:
        rel = self.path.relative_to(root) if self.path != root else Path(".")
        return f"{rel}: {'; '.join(self.reasons)} (owner {self.owner})"


# --- groups ----------------------------------------------------------------------------------


def resolve_group(root: Path, requested: str | None) -> grp.struct_group:
    """The project's group: ``requested`` (which the caller must belong to), else the group of
    the project directory (the parent's group when the parent is setgid)."""
    if not requested:
        return grp.getgrgid(root.stat().st_gid)
    try:
        group = grp.getgrnam(requested)
    except KeyError:
        message = f"no such group {requested!r}"
        raise InvalidInput(message) from None
    if os.geteuid() != 0 and group.gr_gid not in {os.getegid(), *os.getgroups()}:
        message = (f"you ({current_user()}) are not in group {requested}, so you cannot give it "
                   f"the project (see the 'groups' command)")
        raise PermissionDenied(message)
    return group


def project_group(project: Project) -> grp.struct_group:
    """The group recorded in ``server-info`` (else the project directory's)."""
    name = project.info.get("group")
    if name:
        try:
            return grp.getgrnam(str(name))
        except KeyError:
            message = f"the project's group {name!r} does not exist on this host"
            raise InvalidInput(message) from None
    return grp.getgrgid(project.root.stat().st_gid)


def user_in_group(username: str, group: grp.struct_group) -> bool | None:
    """Whether an OS user belongs to ``group``; None if there is no such user here."""
    try:
        pw = pwd.getpwnam(username)
    except KeyError:
        return None
    return pw.pw_gid == group.gr_gid or username in group.gr_mem


# --- checking ----------------------------------------------------------------------------------


def _rule(rel: Path, st: os.stat_result) -> tuple[int, bool, bool, bool] | None:
    """``(mode, exact, check_group, descend)`` for a path relative to the root; None to skip."""
    if stat.S_ISDIR(st.st_mode):
        if rel == Path(DB_DIR):
            return DB_DIR_MODE, True, False, False
        if rel == Path(SOCKET_DIR):
            return SOCKET_DIR_MODE, False, True, False
        return DIR_MODE, False, True, True
    if stat.S_ISREG(st.st_mode):
        return (EXEC_MODE if st.st_mode & stat.S_IXUSR else FILE_MODE), False, True, False
    return None  # symlinks, sockets, fifos: not ours to judge


def _judge(path: Path, rel: Path, st: os.stat_result, gid: int) -> tuple[Problem | None, bool]:
    rule = _rule(rel, st)
    if rule is None:
        return None, False
    wanted, exact, check_group, descend = rule
    mode = stat.S_IMODE(st.st_mode)
    problem = Problem(path, st.st_uid)
    if exact and (mode & 0o777) != wanted:
        problem.mode = wanted
        problem.reasons.append(f"mode {mode:04o}, must be {wanted:04o} "
                               f"(PostgreSQL refuses to start otherwise)")
    elif not exact and mode & wanted != wanted:
        problem.mode = mode | wanted
        problem.reasons.append(f"mode {mode:04o}, needs {wanted:04o} ({_explain(wanted)})")
    if check_group and st.st_gid != gid:
        problem.gid = gid
        problem.reasons.append(f"group {_group_name(st.st_gid)}, not {_group_name(gid)}")
    return (problem if problem.reasons else None), descend


def _explain(mode: int) -> str:
    group = "".join(c if mode & bit else "" for c, bit in (("r", 0o40), ("w", 0o20), ("x", 0o10)))
    return f"group {group}" + (", setgid" if mode & stat.S_ISGID else "")


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def scan(root: Path, gid: int, *, depth: int | None = None) -> Iterator[Problem]:
    """Yield every path under ``root`` that breaks the policy (``depth`` 1: the skeleton only).

    Lazy: a directory is yielded before it is read, so a caller fixing it as it goes can then
    descend into it.
    """
    yield from _scan(root, root, gid, depth)


def _scan(root: Path, path: Path, gid: int, depth: int | None) -> Iterator[Problem]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    rel = path.relative_to(root)
    problem, descend = _judge(path, rel, st, gid)
    if problem:
        yield problem
    if not descend or depth == 0:
        return
    try:
        children = sorted(os.scandir(path), key=lambda e: e.name)
    except PermissionError:
        if problem is None:  # otherwise its mode already says why
            yield Problem(path, st.st_uid, ["cannot be read: its contents were not checked"])
        return
    for entry in children:
        yield from _scan(root, Path(entry.path), gid, None if depth is None else depth - 1)


def umask_problem(project: Project) -> str | None:
    """Why the project's umask (applied by every balsam tool) would lock the group out, if so."""
    if project.umask & 0o070:
        return (f"the project umask {project.umask:04o} denies the group; "
                f"balsam perms fix sets it to {DEFAULT_UMASK:04o}")
    return None


def check(project: Project, *, deep: bool = True) -> list[Problem]:
    """Every path of the project that breaks the policy (``deep=False``: the skeleton only)."""
    gid = project_group(project).gr_gid
    return list(scan(project.root, gid, depth=None if deep else 1))


# --- fixing ------------------------------------------------------------------------------------


def fix(project: Project) -> tuple[list[Problem], list[Problem]]:
    """Repair what this user may (paths they own; everything as root); return what was fixed and
    what is left for the paths' owners."""
    group = project_group(project)
    if umask_problem(project):
        project.info["umask"] = f"{DEFAULT_UMASK:04o}"
        project.save_info()
    return apply(project.root, group.gr_gid)


def apply(root: Path, gid: int) -> tuple[list[Problem], list[Problem]]:
    """Bring ``root`` in line with the policy for group ``gid``."""
    fixed: list[Problem] = []
    left: list[Problem] = []
    uid = os.geteuid()
    for problem in scan(root, gid):
        if problem.mode is None and problem.gid is None:
            left.append(problem)
            continue
        if uid not in (0, problem.uid):
            problem.reasons.append(f"only {problem.owner} can fix it: ask them to run "
                                   f"'balsam perms fix'")
            left.append(problem)
            continue
        try:
            if problem.gid is not None:
                os.chown(problem.path, -1, problem.gid, follow_symlinks=False)
            if problem.mode is not None:
                os.chmod(problem.path, problem.mode, follow_symlinks=False)
        except OSError as exc:
            problem.reasons.append(f"could not fix: {exc.strerror}")
            left.append(problem)
            continue
        fixed.append(problem)
    return fixed, left


def take_group(root: Path, group: grp.struct_group) -> None:
    """Give the (new) project directory ``group`` and setgid before anything is created in it."""
    if root.stat().st_gid != group.gr_gid:
        os.chown(root, -1, group.gr_gid)
    os.chmod(root, stat.S_IMODE(root.stat().st_mode) | DIR_MODE)
