"""The file policy of a shared project, in two zones (see :mod:`balsam.zones`).

Control zone (the project directory itself, ``server-info``, ``server-ca.pem``,
``job-templates/``, ``balsamdb/``, ``.pgsocket/``): the owner's files, readable by the group,
writable by nobody else. Work zone (``data/``, ``log/``, ``qsubmit/``): setgid directories the
group can write (sticky at the top), files the group can read and write. ``balsamdb/`` stays as
PostgreSQL needs it.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from balsam.contracts import DEFAULT_UMASK
from balsam.errors import InvalidInput, PermissionDenied
from balsam.project import Project, current_user
from balsam.zones import (
    CONTROL_DIR_MODE,
    CONTROL_FILE_MODE,
    DB_DIR,
    DB_DIR_MODE,
    OTHERS_WRITE,
    SOCKET_DIR,
    WORK_DIRS,
    WORK_TOP_MODE,
    Guard,
    group_name,
    project_guard,
    republish,
    user_name,
)

#: Work-zone directories: group rwx, setgid so that whatever anyone creates inside keeps the group.
DIR_MODE = 0o2770
#: Work-zone files: group read and write; executables group x as well.
FILE_MODE = 0o660
EXEC_MODE = 0o770


@dataclass(frozen=True)
class Rule:
    """What the layout asks of one path."""

    mode: int
    forbidden: int = 0
    exact: bool = False
    group: bool = True
    descend: bool = False
    control: bool = False


def rule(rel: PurePosixPath, kind: str) -> Rule | None:
    """The rule for a path relative to the project root; ``kind`` is ``dir``, ``file``,
    ``exec`` (an executable file) or ``link``. None: not ours to judge."""
    top = rel.parts[0] if rel.parts else ""
    if top in WORK_DIRS:
        if kind == "dir":
            return Rule(WORK_TOP_MODE if len(rel.parts) == 1 else DIR_MODE, descend=True)
        if kind in ("file", "exec"):
            return Rule(EXEC_MODE if kind == "exec" else FILE_MODE)
        return None  # symlinks, sockets, fifos in the work zone: their owners' business
    if kind == "link":
        return Rule(0, group=False, control=True)  # judged by its owner alone
    if kind == "dir":
        if rel == PurePosixPath(DB_DIR):
            return Rule(DB_DIR_MODE, exact=True, group=False, control=True)
        return Rule(CONTROL_DIR_MODE, OTHERS_WRITE, descend=rel != PurePosixPath(SOCKET_DIR),
                    control=True)
    if kind in ("file", "exec"):
        return Rule(0o750 if kind == "exec" else CONTROL_FILE_MODE, OTHERS_WRITE, control=True)
    return None


@dataclass
class Problem:
    """A path that breaks the policy, what is wrong and the mode and group that would fix it."""

    path: Path
    uid: int
    reasons: list[str] = field(default_factory=list)
    mode: int | None = None
    gid: int | None = None
    control: bool = False
    foreign: bool = False  # in the control zone, but not the owner's

    @property
    def owner(self) -> str:
        return user_name(self.uid)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.path.lstat().st_mode)

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
    name = project.info.group
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


def _kind(st: os.stat_result) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "exec" if st.st_mode & stat.S_IXUSR else "file"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return None


def judge(path: Path, rel: PurePosixPath, st: os.stat_result, gid: int,
          guard: Guard) -> tuple[Problem | None, bool]:
    """Whether one path (its ``lstat``) breaks the policy, and whether to look inside it."""
    kind = _kind(st)
    r = rule(rel, kind) if kind else None
    if r is None:
        return None, False
    problem = Problem(path, st.st_uid, control=r.control)
    if r.control and st.st_uid not in guard.trusted:
        problem.foreign = True
        problem.reasons.append(f"owned by {user_name(st.st_uid)}, not {user_name(guard.owner)}, "
                               f"in the control zone")
    if kind == "link":
        return (problem if problem.reasons else None), False
    mode = stat.S_IMODE(st.st_mode)
    if r.exact:
        if mode & 0o777 != r.mode:
            problem.mode = r.mode
            problem.reasons.append(f"mode {mode:04o}, must be {r.mode:04o} "
                                   f"(PostgreSQL refuses to start otherwise)")
    else:
        wanted = (mode | r.mode) & ~r.forbidden
        if mode & r.mode != r.mode:
            problem.reasons.append(f"mode {mode:04o}, needs {r.mode:04o} ({_explain(r.mode)})")
        if mode & r.forbidden:
            who = "group and others" if mode & r.forbidden == OTHERS_WRITE else (
                "the group" if mode & 0o020 else "others")
            problem.reasons.append(f"mode {mode:04o}: writable by {who} (control zone: only its "
                                   f"owner writes it)")
        if wanted != mode:
            problem.mode = wanted
    if r.group and st.st_gid != gid:
        problem.gid = gid
        problem.reasons.append(f"group {group_name(st.st_gid)}, not {group_name(gid)}")
    return (problem if problem.reasons else None), r.descend


def _explain(mode: int) -> str:
    group = "".join(c if mode & bit else "" for c, bit in (("r", 0o40), ("w", 0o20), ("x", 0o10)))
    extra = [name for name, bit in (("setgid", stat.S_ISGID), ("sticky", stat.S_ISVTX))
             if mode & bit]
    return ", ".join([f"group {group}", *extra])


def scan(root: Path, gid: int, *, depth: int | None = None,
         guard: Guard | None = None) -> Iterator[Problem]:
    """Yield every path under ``root`` that breaks the policy (``depth`` 1: the skeleton only).

    Lazy: a directory is yielded before it is read, so a caller fixing it as it goes can then
    descend into it. Symlinks are judged, never followed.
    """
    guard = guard or project_guard(root, root.stat().st_uid)
    yield from _scan(root, root, gid, depth, guard)


def _scan(root: Path, path: Path, gid: int, depth: int | None,
          guard: Guard) -> Iterator[Problem]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    problem, descend = judge(path, PurePosixPath(path.relative_to(root).as_posix()), st, gid,
                             guard)
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
        yield from _scan(root, Path(entry.path), gid, None if depth is None else depth - 1,
                         guard)


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
    """Repair what this user may: the owner (or root) both zones, publishing server-info and
    the CA certificate again from the private copies; anyone else their own work-zone paths.
    Return what was fixed and what is left for others."""
    group = project_group(project)
    guard = project.guard()
    owner = os.geteuid() in guard.trusted
    if owner:
        if umask_problem(project):
            project.info = replace(project.info, umask=DEFAULT_UMASK)
        project.save_info()  # the owner vouches for it (and it gets its private copy)
        republish(project.root, guard)
    return apply(project.root, group.gr_gid, control=owner)


def repair_control_dirs(project: Project) -> list[Problem]:
    """The owner's activation: undo what ``chmod -R g+w`` (the legacy page's recipe) does to the
    control zone, where that is safe without the owner looking: republish the files kept in
    ``balsamdb/`` and take group write from the owner's control directories. A control *file*
    that others could have edited (a template) waits for the owner's ``balsam perms fix``."""
    guard = project.guard()
    if os.geteuid() != guard.owner:
        return []
    republish(project.root, guard)
    gid = project_group(project).gr_gid
    fixed = []
    for problem in scan(project.root, gid, guard=guard):
        if problem.control and not problem.foreign and problem.is_dir and _repair(problem):
            fixed.append(problem)
    return fixed


def apply(root: Path, gid: int, *, control: bool = True) -> tuple[list[Problem], list[Problem]]:
    """Bring ``root`` in line with the policy for group ``gid`` (``control=False``: leave the
    control zone alone, as a member's fix must)."""
    guard = project_guard(root, root.stat().st_uid)
    fixed: list[Problem] = []
    left: list[Problem] = []
    uid = os.geteuid()
    for problem in scan(root, gid, guard=guard):
        if problem.foreign:
            problem.reasons.append(f"move it out, or remove it: balsam trusts only "
                                   f"{user_name(guard.owner)}'s files there")
            left.append(problem)
        elif problem.control and not control:
            problem.reasons.append(f"only {user_name(guard.owner)} can fix the control zone")
            left.append(problem)
        elif problem.mode is None and problem.gid is None:
            left.append(problem)
        elif uid not in (0, problem.uid):
            problem.reasons.append(f"only {problem.owner} can fix it: ask them to run "
                                   f"'balsam perms fix'")
            left.append(problem)
        elif _repair(problem):
            fixed.append(problem)
        else:
            left.append(problem)
    return fixed, left


def _repair(problem: Problem) -> bool:
    """chgrp/chmod one path (never through a symlink); False, with the reason, if it failed."""
    try:
        if problem.gid is not None:
            os.chown(problem.path, -1, problem.gid, follow_symlinks=False)
        if problem.mode is not None:
            os.chmod(problem.path, problem.mode, follow_symlinks=False)
    except OSError as exc:
        problem.reasons.append(f"could not fix: {exc.strerror}")
        return False
    return True


def take_group(root: Path, group: grp.struct_group) -> None:
    """Give the (new) project directory ``group`` and setgid before anything is created in it."""
    if root.stat().st_gid != group.gr_gid:
        os.chown(root, -1, group.gr_gid)
    os.chmod(root, (stat.S_IMODE(root.stat().st_mode) | CONTROL_DIR_MODE) & ~OTHERS_WRITE)
