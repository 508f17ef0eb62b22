"""A project directory: its layout, its ``server-info`` and how to reach its database.

``server-info`` holds no absolute path, so a stopped project can be copied or moved. It is part
of the control zone (see :mod:`balsam.zones`): every read checks that only the project's owner
could have written it. The owner also keeps a private copy in ``balsamdb/``, which their own
tools read when the published one is found writable by others (and which they publish again).
"""

from __future__ import annotations

import os
import pwd
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balsam.contracts import ServerInfo
from balsam.errors import InvalidInput, PermissionDenied, ProjectNotFound, UnsafeFile
from balsam.zones import (
    CONTROL_FILE_MODE,
    DB_DIR,
    SERVER_CA,
    SERVER_INFO,
    SOCKET_DIR,
    TEMPLATES_DIR,
    WORK_DIRS,
    Guard,
    project_guard,
    write_new,
)

SUBDIRS = WORK_DIRS
#: The embedded cluster's administrative role (its bootstrap superuser): reachable only over the
#: project's socket, from the owner's OS account, through a pg_ident.conf peer map.
ADMIN_ROLE = "balsam_admin"
#: sockaddr_un.sun_path is 108 bytes including the NUL.
MAX_SOCKET_PATH = 107


def current_user() -> str:
    """The effective OS user name (not $USER, which runuser and sudo may leave stale)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def user_home() -> Path:
    """The effective user's home directory from the password database."""
    return Path(pwd.getpwuid(os.geteuid()).pw_dir)


def balsam_home() -> Path:
    """``~/.balsam``: per-user credentials, job templates and the list of known projects."""
    return Path(os.environ.get("BALSAM_HOME") or user_home() / ".balsam")


def _shown(path: Path, most: int = 200) -> str:
    """A path in a message: shortened in the middle past ``most`` characters."""
    text = str(path)
    return text if len(text) <= most else f"{text[:most // 2]}...{text[-most // 2:]}"


@dataclass
class Project:
    root: Path
    info: ServerInfo = field(default_factory=ServerInfo)

    # --- locating ------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, check: bool = True) -> Project:
        """The project at ``path``; ProjectNotFound if it has no readable ``server-info``,
        UnsafeFile if someone other than its owner could have written it (``check=False``, for
        ``balsam perms``, reads it anyway)."""
        root = Path(path).expanduser().absolute()
        info_path = root / SERVER_INFO
        try:
            text = _read_info(root) if check else info_path.read_text()
        except (FileNotFoundError, NotADirectoryError):
            message = (f"{_shown(root)} is not a Balsam project (no {SERVER_INFO}); "
                       "create one with balsam init")
            raise ProjectNotFound(message) from None
        except PermissionError:
            message = (f"cannot read {info_path}: permission denied "
                       "(are you in the project's group?)")
            raise ProjectNotFound(message) from None
        except OSError as exc:  # a name too long, a loop of symlinks...
            message = f"cannot read {_shown(info_path)}: {exc.strerror or exc}"
            raise ProjectNotFound(message) from None
        try:
            info = ServerInfo.from_json(text)
        except ValueError as exc:
            message = f"{info_path} is corrupt: {exc}"
            raise ProjectNotFound(message) from None
        return cls(root=root, info=info)

    def reload(self) -> Project:
        """Read ``server-info`` again (checked): a client that lost its connection reconnects
        to wherever the server is now."""
        self.info = Project.load(self.root).info
        return self

    @classmethod
    def find(cls, name: str) -> Project:
        """A project by path, or by a unique substring of a project this user has used before."""
        path = Path(name).expanduser()
        try:
            exists = path.exists()
        except PermissionError:
            message = f"cannot reach {path}: permission denied (are you in the project's group?)"
            raise ProjectNotFound(message) from None
        if exists:
            return cls.load(path)
        matches = sorted({p for p in known_projects() if name in str(p)})
        if len(matches) == 1:
            return cls.load(matches[0])
        if not matches:
            message = f"no Balsam project at {name!r} and none known by that name"
            raise ProjectNotFound(message)
        listing = ", ".join(str(m) for m in matches)
        message = f"{name!r} matches several projects: {listing}"
        raise ProjectNotFound(message)

    @classmethod
    def from_env(cls, *, check: bool = True) -> Project:
        """The active project (``BALSAM_DB_PATH``, set by balsamactivate)."""
        path = os.environ.get("BALSAM_DB_PATH")
        if not path:
            message = "no active project: run 'source balsamactivate PROJECT' or set BALSAM_DB_PATH"
            raise ProjectNotFound(message)
        return cls.load(path, check=check)

    # --- layout --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def info_path(self) -> Path:
        return self.root / SERVER_INFO

    @property
    def db_dir(self) -> Path:
        return self.root / DB_DIR

    @property
    def socket_dir(self) -> Path:
        return self.root / SOCKET_DIR

    @property
    def ca_path(self) -> Path:
        return self.root / SERVER_CA

    @property
    def templates_dir(self) -> Path:
        return self.root / TEMPLATES_DIR

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def qsubmit_dir(self) -> Path:
        return self.root / "qsubmit"

    @property
    def owner(self) -> str:
        return self.info.owner

    @property
    def embedded(self) -> bool:
        """True for the project's own cluster, False for an external server (a DSN)."""
        return self.info.embedded

    @property
    def umask(self) -> int:
        """The umask every balsam tool applies for this project (group-writable by default)."""
        return self.info.umask

    def guard(self) -> Guard:
        """Who may write this project's control zone: the owner of its directory."""
        return project_guard(self.root, self.root.stat().st_uid)

    def save_info(self) -> None:
        """Publish ``server-info`` (0640) and keep the owner's private copy in ``balsamdb/``;
        atomically, since a half-written file would strand collaborators."""
        text = self.info.to_json()
        write_new(self.info_path, text, CONTROL_FILE_MODE)
        if self.embedded and self.db_dir.is_dir():
            write_new(self.db_dir / SERVER_INFO, text, 0o600)

    # --- database ------------------------------------------------------------------------------

    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.info.port or 5432}"

    def uses_socket(self) -> bool:
        """Whether this process reaches the embedded server through the project's socket."""
        if os.environ.get("BALSAM_DB_TRANSPORT") == "tcp":
            return False
        return self.info.host == socket.gethostname() and self.socket_path().exists()

    def conninfo(self, *, admin: bool = False, transport: str | None = None,
                 **overrides: Any) -> str:
        """Connection string for the effective user: the socket (peer auth) on the server's host,
        TCP with TLS (the server verified against the project's CA) and the user's generated
        password elsewhere. ``admin``: the administrative role, over the socket only.
        ``transport`` (``"socket"`` or ``"tcp"``) overrides the choice."""
        from psycopg.conninfo import make_conninfo  # here: commands that never connect skip it

        if self.info.dsn:
            return make_conninfo(self.info.dsn, **overrides)
        tcp = transport == "tcp" or (transport is None and not self.uses_socket())
        params: dict[str, Any] = {
            "dbname": self.info.dbname,
            "port": self.info.port,
            "user": current_user(),
            "application_name": "balsam",
            "connect_timeout": 10,
        }
        if admin:
            if tcp:
                message = (f"administrative commands reach the server over the project's socket: "
                           f"run this on {self.info.host}, as {self.owner}")
                raise PermissionDenied(message)
            params["user"] = ADMIN_ROLE
        if tcp:
            params["host"] = self.tcp_host()
            params["sslmode"] = "verify-full"
            params["sslrootcert"] = str(self.checked_ca())
            password = read_password(self)
            if password:
                params["password"] = password
        else:
            params["host"] = str(self.checked_socket_dir())
        params.update(overrides)
        return make_conninfo(**params)

    def tcp_host(self) -> str:
        """The server's host for TCP clients: ``$BALSAM_DB_HOST`` if set, else server-info's."""
        return str(os.environ.get("BALSAM_DB_HOST") or self.info.host)

    def checked_socket_dir(self) -> Path:
        """The socket directory, refused if anyone but the owner could plant a socket in it."""
        guard = self.guard()
        try:
            guard.check(self.socket_dir)
        except FileNotFoundError:
            pass  # the server is down: connecting says so
        return self.socket_dir

    def checked_ca(self) -> Path:
        """``server-ca.pem``, refused if anyone but the owner could have written it."""
        guard = self.guard()
        try:
            guard.read(self.ca_path)
        except FileNotFoundError:
            message = (f"{self.ca_path} is missing: the server has no TLS certificate yet "
                       f"(its owner {self.owner} creates one by starting it with balsamactivate)")
            raise UnsafeFile(message) from None
        return self.ca_path

    def workdir(self, relative: str) -> Path:
        """A task working directory: relative paths are inside the project."""
        path = Path(relative)
        return path if path.is_absolute() else self.root / path


def _read_info(root: Path) -> str:
    """``server-info`` as only the owner could have written it: the published copy if it is
    safe, else (for the owner) their private copy in ``balsamdb/``."""
    root_st = root.stat()
    guard = project_guard(root, root_st.st_uid)
    try:
        reason = guard.problem(root_st)
        if reason:
            raise guard.refuse(root, reason)
        return guard.read(root / SERVER_INFO)
    except (UnsafeFile, FileNotFoundError):
        private = _owner_copy(root, guard)
        if private is None:
            raise
        return private


def _owner_copy(root: Path, guard: Guard) -> str | None:
    """The owner's private copy of ``server-info``, when the caller is the owner and it is safe."""
    if os.geteuid() != guard.owner:
        return None
    try:
        guard.check(root / DB_DIR, private=True)
        return guard.read(root / DB_DIR / SERVER_INFO, modes=False)
    except (OSError, UnsafeFile):
        return None


def new_info(owner: str, *, dsn: str | None = None, group: str | None = None) -> ServerInfo:
    """The initial ``server-info`` of a project."""
    return ServerInfo(uuid=str(uuid.uuid4()), owner=owner, dsn=dsn, group=group)


def check_socket_path(root: Path) -> None:
    """Refuse a project path too long for a unix socket inside it."""
    probe = root / SOCKET_DIR / ".s.PGSQL.65535.lock"
    if len(str(probe).encode()) > MAX_SOCKET_PATH:
        message = (f"project path {root} is too long for a unix socket inside it "
                   f"(max {MAX_SOCKET_PATH - len(probe.name) - len(SOCKET_DIR) - 2} characters)")
        raise InvalidInput(message)


# --- per-user state -------------------------------------------------------------------------


def credentials_path(project: Project) -> Path:
    return balsam_home() / "credentials" / project.info.uuid


def read_password(project: Project) -> str | None:
    try:
        return credentials_path(project).read_text().strip() or None
    except (FileNotFoundError, PermissionError):
        return None


def write_password(project: Project, password: str) -> Path:
    """Store the user's password in a file only they can read (0600 in a 0700 directory)."""
    path = credentials_path(project)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return path


def known_projects() -> list[Path]:
    """Projects this user has initialised or activated (for ``balsamactivate SUBSTRING``)."""
    try:
        lines = (balsam_home() / "projects").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return []
    return [Path(ln) for ln in lines if ln.strip() and (Path(ln) / SERVER_INFO).exists()]


def remember_project(project: Project) -> None:
    """Add the project to the user's list of known projects (best effort)."""
    home = balsam_home()
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        known = {str(p) for p in known_projects()}
        if str(project.root) not in known:
            with open(home / "projects", "a") as f:
                f.write(f"{project.root}\n")
    except OSError:
        pass
