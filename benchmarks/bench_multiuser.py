"""What sharing costs: connecting with peer vs scram-sha-256 (in clear, and over TLS verified
against a project CA as every TCP client of an embedded server does), the forged-owner triggers
on bulk inserts by a member, and ``balsam perms check``/``fix`` over a large project tree.

A throwaway cluster (run as an unprivileged user when root) listens on a private socket (peer
authentication, the benchmark's OS user mapped to a member role through pg_ident.conf) and on
127.0.0.1 (scram-sha-256 with a generated password), like a project's embedded server.
"""

from __future__ import annotations

import grp
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import make_conninfo

from balsam.db import connect
from balsam.migrate import upgrade
from balsam.project import Project, current_user, new_info
from balsam_perms import policy
from balsam_pgserver import roles, tls
from balsam_testing.pg import PgServer, cluster_os_user, throwaway_cluster

PG_USER = "balsam-pgtest"
MEMBER = "bench_member_user"


def _row(metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"benchmark": "multiuser", "metric": metric, "value": round(value, 3), "unit": unit}


@contextmanager
def cluster() -> Iterator[dict[str, Any]]:
    """A cluster with a migrated database ``bench`` and a member login role ``MEMBER``."""
    me = current_user()
    hba = ("local all all peer map=bench\n"
           "host all all 127.0.0.1/32 scram-sha-256\n")
    ident = (f"bench {me} postgres\nbench {me} {MEMBER}\n"
             f"bench {cluster_os_user() or PG_USER} postgres\n")
    password = secrets.token_urlsafe(32)
    with throwaway_cluster(prefix="balsam-bench-multiuser-", dbname="bench", hba=hba,
                           ident=ident, listen="127.0.0.1") as pg:
        with connect(pg.dsn("bench")) as conn:
            upgrade(conn, ("balsam_pgserver",))
            roles.add_user(conn, MEMBER, "member")
            verifier = conn.pgconn.encrypt_password(password.encode(), MEMBER.encode(),
                                                    b"scram-sha-256").decode()
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(MEMBER), sql.Literal(verifier)))
        ca = enable_tls(pg)
        tcp = {"host": "127.0.0.1", "port": pg.port, "user": MEMBER, "dbname": "bench",
               "password": password}
        yield {
            "admin": pg.dsn("bench"),
            "peer": make_conninfo(pg.dsn("bench"), user=MEMBER),
            "scram": make_conninfo(**tcp, sslmode="disable"),
            "tls": make_conninfo(**tcp, sslmode="verify-full", sslrootcert=str(ca)),
        }


def enable_tls(pg: PgServer) -> Path:
    """Give the cluster a certificate signed by a new CA, as an embedded server has (switched on
    by a reload); return the CA certificate's path."""
    ca_key, ca_cert = tls.make_ca("bench", datetime.now(UTC))
    key, cert = tls.make_server_cert(ca_key, ca_cert, tls.host_names(), tls.host_addresses(),
                                     datetime.now(UTC))
    owner = pg.datadir.stat()
    for name, data in ((tls.SERVER_KEY, key), (tls.SERVER_CERT, cert)):
        path = pg.datadir / name
        path.write_bytes(data)
        os.chmod(path, 0o600)
        os.chown(path, owner.st_uid, owner.st_gid)
    (pg.sockdir / "ca.pem").write_bytes(ca_cert)
    with connect(pg.dsn()) as conn:
        for setting, value in (("ssl_cert_file", tls.SERVER_CERT),
                               ("ssl_key_file", tls.SERVER_KEY), ("ssl", "on")):
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(setting),
                                                                  sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the reload is asynchronous
    return pg.sockdir / "ca.pem"


def connect_rate(conninfo: str, n: int) -> float:
    """Connections opened, queried and closed per second."""
    start = time.perf_counter()
    for _ in range(n):
        with connect(conninfo) as conn:
            conn.execute("SELECT 1")
    return n / (time.perf_counter() - start)


INSERT = ("INSERT INTO tasks (name, workflow, app_id, state) "
          "SELECT 't' || i, 'bench', %s, 'READY' FROM generate_series(1, %s) i")
#: task_events has none: only triggers write it, as session_user (pgserver 0010).
OWNER_TRIGGERS = {"apps": "apps_owner_insert", "tasks": "tasks_owner_insert"}


def set_owner_triggers(admin: str, enabled: bool) -> None:
    with connect(admin) as conn:
        action = sql.SQL("ENABLE" if enabled else "DISABLE")
        for table, trigger in OWNER_TRIGGERS.items():
            conn.execute(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                sql.Identifier(table), action, sql.Identifier(trigger)))


def insert_rates(member: str, admin: str, n: int, rounds: int) -> dict[bool, float]:
    """Best tasks/s inserted by a member (each insert also records an event), with and without
    the forged-owner triggers, measured alternately to cancel out the machine's load."""
    with connect(member) as conn:
        app = conn.execute("INSERT INTO apps (name, executable) VALUES ('b', '/bin/true') "
                           "RETURNING id").fetchone()["id"]
    best = {True: 0.0, False: 0.0}
    for _ in range(rounds):
        for enabled in (True, False):
            set_owner_triggers(admin, enabled)
            with connect(admin) as conn:
                conn.execute("TRUNCATE tasks, task_events CASCADE")
            with connect(member) as conn:
                start = time.perf_counter()
                conn.execute(INSERT, [app, n])
                best[enabled] = max(best[enabled], n / (time.perf_counter() - start))
    set_owner_triggers(admin, True)
    return best


def make_tree(root: Path, files: int, gid: int) -> None:
    """A project-shaped tree: ``files`` output files in 100 per working directory, all wrong."""
    for i in range(0, files, 100):
        workdir = root / "data" / "wf" / f"task_{i // 100}"
        workdir.mkdir(parents=True)
        for j in range(min(100, files - i)):
            (workdir / f"out_{j}.txt").write_text("x")
    (root / "balsamdb").mkdir(mode=0o700)
    Project(root, new_info(current_user(), group=grp.getgrgid(gid).gr_name)).save_info()
    for path in [root, *root.rglob("*")]:
        if path.name != "balsamdb":
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def perms_rates(files: int) -> tuple[float, float, float]:
    """Paths per second for check (all wrong), fix, and check (all right)."""
    base = Path(tempfile.mkdtemp(prefix="balsam-bench-perms-"))
    try:
        gid = os.getegid()
        make_tree(base / "proj", files, gid)
        project = Project.load(base / "proj")
        total = sum(1 for _ in project.root.rglob("*")) + 1
        start = time.perf_counter()
        wrong = len(policy.check(project))
        t_check_bad = time.perf_counter() - start
        start = time.perf_counter()
        fixed, left = policy.fix(project)
        t_fix = time.perf_counter() - start
        start = time.perf_counter()
        clean = policy.check(project)
        t_check_ok = time.perf_counter() - start
        assert wrong == len(fixed) and not left and not clean
        return total / t_check_bad, total / t_fix, total / t_check_ok
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(quick: bool) -> list[dict[str, Any]]:
    connections = 50 if quick else 500
    tasks = 20_000 if quick else 100_000
    files = 5_000 if quick else 100_000
    rows = []
    with cluster() as dsn:
        peer = connect_rate(dsn["peer"], connections)
        scram = connect_rate(dsn["scram"], connections)
        over_tls = connect_rate(dsn["tls"], connections)
        rows += [_row("connect peer (socket)", peer, "conn/s"),
                 _row("connect scram-sha-256 (TCP, in clear)", scram, "conn/s"),
                 _row("connect scram-sha-256 (TCP, TLS verify-full)", over_tls, "conn/s"),
                 _row("scram cost per connection", 1000 / scram - 1000 / peer, "ms"),
                 _row("TLS cost per connection", 1000 / over_tls - 1000 / scram, "ms")]
        rates = insert_rates(dsn["peer"], dsn["admin"], tasks, rounds=3 if quick else 5)
        with_triggers, without = rates[True], rates[False]
        rows += [_row(f"member inserts {tasks} tasks, owner triggers", with_triggers, "tasks/s"),
                 _row(f"member inserts {tasks} tasks, no triggers", without, "tasks/s"),
                 _row("owner trigger overhead", 100 * (without / with_triggers - 1), "%")]
    check_bad, fix, check_ok = perms_rates(files)
    rows += [_row(f"perms check, {files} files all wrong", check_bad, "paths/s"),
             _row(f"perms fix, {files} files", fix, "paths/s"),
             _row(f"perms check, {files} files all right", check_ok, "paths/s")]
    return rows


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
