"""pytest fixtures for balsam and its plugins: a real PostgreSQL cluster per session and a fresh
database per test, cloned from a migrated template (pytest-postgresql's janitor).

Enable with ``pytest_plugins = ["balsam_testing.pg"]``. When pytest runs as root, the
cluster runs as the unprivileged user ``$BALSAM_TEST_PGUSER`` (default ``balsam-pgtest``),
created if missing, because PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import itertools
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import tuple_row
from pytest_postgresql.janitor import DatabaseJanitor

from balsam import api
from balsam.contracts import InitOptions
from balsam.db import Connection, connect
from balsam.lifecycle import init_project
from balsam.migrate import plugin_packages, upgrade
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_pgserver import server

TEST_HBA = "# test cluster: unix socket in a private directory only\nlocal all all trust\n"
_counter = itertools.count()


@dataclass
class PgServer:
    """A throwaway cluster listening on a unix socket (and on TCP at ``listen``, if set)."""

    sockdir: Path
    datadir: Path
    port: int = 5432
    user: str = "postgres"
    run_as: str | None = None
    listen: str = ""

    def dsn(self, dbname: str = "postgres", **extra: Any) -> str:
        return make_conninfo(host=str(self.sockdir), port=self.port, user=self.user,
                             dbname=dbname, **extra)

    def restart(self) -> None:
        """Stop and start again (fault injection: clients see their connections drop)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop at once, as a crash would (fault injection: an outage until :meth:`start`)."""
        server.stop(self.datadir, run_as=self.run_as, mode="immediate")

    def start(self) -> None:
        server.start(self.datadir, port=self.port, socket_dir=self.sockdir,
                     logfile=self.sockdir / "log", listen=self.listen, run_as=self.run_as,
                     settings=("max_connections=300", *server.FAST_SETTINGS))


def ensure_os_user(name: str) -> None:
    """Create an unprivileged OS user (root only); idempotent."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)


def cluster_os_user() -> str | None:
    """The OS user throwaway clusters run as: ``$BALSAM_TEST_PGUSER`` (default
    ``balsam-pgtest``) when root, else None (the current user)."""
    if os.geteuid() != 0:
        return None
    return os.environ.get("BALSAM_TEST_PGUSER", "balsam-pgtest")


@contextmanager
def throwaway_cluster(prefix: str = "balsam-pg-", dbname: str | None = None, *,
                      hba: str = TEST_HBA, ident: str | None = None,
                      listen: str = "") -> Iterator[PgServer]:
    """A cluster on a unix socket in a fresh temporary directory, removed afterwards (tests and
    benchmarks). As root it runs as :func:`cluster_os_user`.
    With ``dbname``, that (empty) database is created too. ``hba`` and ``ident`` are the contents
    of pg_hba.conf and pg_ident.conf; with ``listen`` (e.g. ``"127.0.0.1"``) the cluster also
    listens on TCP there, on a port free at start."""
    run_as = cluster_os_user()
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if run_as:
        ensure_os_user(run_as)
        pw = pwd.getpwnam(run_as)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    os.chmod(base, 0o755)
    pg = PgServer(sockdir=base, datadir=base / "data", port=server.free_port() if listen else 5432,
                  run_as=run_as, listen=listen)
    try:
        server.initdb(pg.datadir, superuser=pg.user, run_as=run_as, hba=hba)
        if ident is not None:
            (pg.datadir / "pg_ident.conf").write_text(ident)  # keeps initdb's file's owner
        pg.start()
        try:
            if dbname:
                with connect(pg.dsn()) as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            yield pg
        finally:
            server.stop(pg.datadir, run_as=run_as, mode="immediate")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def throwaway_project(prefix: str = "balsam-pg-") -> Iterator[tuple[Project, Connection]]:
    """An active project (external-DSN mode) on a throwaway cluster, and a connection to its
    database, for benchmarks: ``BALSAM_DB_PATH`` and ``BALSAM_HOME`` point at it meanwhile."""
    with (throwaway_cluster(prefix=prefix, dbname="bench") as pg,
          tempfile.TemporaryDirectory() as tmp):
        home = {"BALSAM_HOME": str(Path(tmp) / "home")}
        with patch.dict(os.environ, home):
            project = init_project(Path(tmp) / "project", InitOptions(dsn=pg.dsn("bench")),
                                   get_plugin_manager())
            os.environ["BALSAM_DB_PATH"] = str(project.root)
            with connect(pg.dsn("bench")) as conn:
                yield project, conn


def start_blocked(target: Callable[[], object], waiter: Connection, holder: Connection,
                  observer: Connection, timeout: float = 30.0) -> threading.Thread:
    """Start ``target`` (which uses ``waiter``) in a thread and return once PostgreSQL says
    ``waiter`` waits for a lock ``holder`` holds: a race test's transactions then overlap for
    certain, however slow the thread is to start."""
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    cursor = observer.cursor(row_factory=tuple_row)
    while True:
        row = cursor.execute("SELECT pg_blocking_pids(%s)", [waiter.info.backend_pid]).fetchone()
        if row is not None and holder.info.backend_pid in row[0]:
            return thread
        if not thread.is_alive() or time.monotonic() > deadline:
            message = "the other transaction never waited for the lock the test holds"
            raise AssertionError(message)
        time.sleep(0.01)


def finished(thread: threading.Thread, timeout: float = 30.0) -> None:
    """Join ``thread``; fail if it is still running."""
    thread.join(timeout)
    assert not thread.is_alive(), "the other transaction did not finish"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL cluster for the session (skipped if PostgreSQL is not installed)."""
    try:
        server.bindir()
    except server.PostgresError as exc:
        pytest.skip(str(exc))
    os.environ.setdefault("BALSAM_PG_FAST", "1")
    with throwaway_cluster() as pg:
        yield pg


@pytest.fixture(scope="session")
def db_template(pg_server: PgServer) -> str:
    """Name of a template database migrated with core and every installed plugin."""
    name = f"balsam_tmpl_{os.getpid()}"
    janitor = DatabaseJanitor(user=pg_server.user, host=str(pg_server.sockdir),
                              port=pg_server.port, dbname=name, as_template=True)
    janitor.init()
    with connect(pg_server.dsn(name)) as conn:
        upgrade(conn, plugin_packages(get_plugin_manager()))
    janitor.is_template()
    return name


@pytest.fixture
def db_dsn(pg_server: PgServer, db_template: str) -> Iterator[str]:
    """Conninfo of a fresh, fully migrated database, dropped after the test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    janitor = DatabaseJanitor(user=pg_server.user, host=str(pg_server.sockdir),
                              port=pg_server.port, dbname=name, template_dbname=db_template)
    janitor.init()
    try:
        yield pg_server.dsn(name)
    finally:
        janitor.drop()


@pytest.fixture
def db(db_dsn: str) -> Iterator[Connection]:
    """An autocommit connection (rows as dicts) to a fresh database."""
    with connect(db_dsn) as conn:
        yield conn


@pytest.fixture
def project(tmp_path_factory: pytest.TempPathFactory, db_dsn: str,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    """An activated project on the per-test database (external-DSN mode, no embedded cluster);
    the API's connection to it is closed afterwards."""
    root = tmp_path_factory.mktemp("proj") / "project"
    proj = init_project(root, InitOptions(dsn=db_dsn), get_plugin_manager())
    monkeypatch.setenv("BALSAM_DB_PATH", str(proj.root))
    monkeypatch.setenv("BALSAM_HOME", str(root.parent / "home"))
    yield proj
    api.disconnect()


# --- helpers for multi-user tests (``run_as`` is the root conftest's fixture) ---------------------

RunAs = Callable[..., subprocess.CompletedProcess[str]]
#: Activate the project named by ``$P`` quietly.
ACTIVATE = '. balsamactivate "$P" >/dev/null'
#: Run SQL statements (argv[1], a JSON list) as the activated user (as the administrative role
#: with ADMIN=1, over TCP with BALSAM_DB_TRANSPORT=tcp); print each result as JSON, an error as
#: ``"ErrorClass: message"``.
RUN_SQL = """
import json, os, sys
from balsam.db import connect, wrap_db_errors
from balsam.errors import BalsamError
from balsam.project import Project
out = []
with connect(Project.from_env(), admin=bool(os.environ.get("ADMIN"))) as conn:
    for statement in json.loads(sys.argv[1]):
        try:
            with wrap_db_errors():
                cur = conn.execute(statement)
                out.append(cur.fetchall() if cur.description else "ok")
        except BalsamError as exc:
            out.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(out, default=str))
"""


def sh(run_as: RunAs, user: str, root: Path, script: str, check: bool = True,
       **env: str) -> subprocess.CompletedProcess[str]:
    """Run a bash script as ``user`` in the project's parent, with ``$P`` naming the project."""
    return run_as(user, ["bash", "-c", script], cwd=root.parent, env={"P": str(root), **env},
                  check=check)


def sql_as(run_as: RunAs, user: str, root: Path, *statements: str, **env: str) -> list[Any]:
    """Activate the project as ``user`` and run ``statements`` (see :data:`RUN_SQL`)."""
    proc = run_as(user, ["bash", "-c", f'{ACTIVATE} && python -c "$CODE" "$STATEMENTS"'],
                  cwd=root.parent, env={"P": str(root), "CODE": RUN_SQL,
                                        "STATEMENTS": json.dumps(statements), **env})
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def write_as(run_as: RunAs, user: str, path: Path, text: str, mode: int = 0o640) -> None:
    """Write ``path`` as ``user`` with ``mode``, whatever umask the test process has."""
    run_as(user, ["bash", "-c", 'umask 077 && cat > "$F" && chmod "$M" "$F"'],
           env={"F": str(path), "M": f"{mode:o}"}, input=text)


def balsam_as(run_as: RunAs, user: str, root: Path, *args: str,
              check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """``balsam ARGS`` as ``user`` with the project active (no activation)."""
    return run_as(user, ["balsam", *args], env={"BALSAM_DB_PATH": str(root), **env}, check=check)
