"""The owner's everyday connection is not a superuser: the cluster's superuser is balsam_admin,
reachable only from the owner's account over the project's socket (a pg_ident.conf peer map);
the owner's everyday role is a member like any collaborator. A project made before this split
(and before the two zones and TLS) is brought up to date by its owner."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from psycopg import sql

from balsam.project import Project
from balsam_testing.pg import ACTIVATE, RUN_SQL, balsam_as, sh, sql_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

TCP = {"BALSAM_DB_TRANSPORT": "tcp", "BALSAM_DB_HOST": "127.0.0.1"}
ME = "SELECT session_user AS me, rolsuper FROM pg_roles WHERE rolname = session_user"
#: Connect as balsam_admin by hand (argv: host, port, password or ""); print the refusal.
AS_ADMIN = """
import sys, psycopg
try:
    psycopg.connect(host=sys.argv[1], port=sys.argv[2], user="balsam_admin", dbname="balsam",
                    password=sys.argv[3] or None, sslmode="require", connect_timeout=5).close()
    print("connected")
except psycopg.OperationalError as exc:
    print(str(exc).strip().splitlines()[-1])
"""


def project(run_as, shared_dir: Path) -> Path:
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    return root


def test_owner_is_an_everyday_member_and_only_her_account_reaches_the_admin(run_as, shared_dir):
    root = project(run_as, shared_dir)
    port = str(Project.load(root).info.port)
    for env in ({}, TCP):  # over the socket, and over TCP with her stored password
        assert sql_as(run_as, "alice", root, ME, "SET ROLE balsam_admin", **env) == [
            [{"me": "alice", "rolsuper": False}],
            "PermissionDenied: permission denied to set role \"balsam_admin\""]
    assert sql_as(run_as, "alice", root, ME, ADMIN="1") == [[{"me": "balsam_admin",
                                                             "rolsuper": True}]]
    # bob reaches balsam_admin neither by peer over the socket nor by password over TCP.
    refused = sh(run_as, "bob", root, f'{ACTIVATE} && python -c "$CODE" "[]"', check=False,
                 CODE=RUN_SQL, ADMIN="1")
    assert refused.returncode == 1
    assert ("only the project owner (alice) can run administrative commands: balsam_admin is "
            "reachable only from their account, over the project's socket") in refused.stderr
    peer = run_as("bob", ["python", "-c", AS_ADMIN, str(root / ".pgsocket"), port, ""])
    assert peer.stdout.strip().endswith('Peer authentication failed for user "balsam_admin"')
    password = Path(f"/home/bob/.balsam/credentials/{Project.load(root).info.uuid}")
    tcp = run_as("bob", ["python", "-c", AS_ADMIN, "127.0.0.1", port,
                         password.read_text().strip()])
    assert 'pg_hba.conf rejects connection for host "127.0.0.1", user "balsam_admin"' \
        in tcp.stdout
    # The owner's administrative commands still work, through balsam_admin.
    out = balsam_as(run_as, "alice", root, "server", "--add-user", "carol", "--role", "viewer")
    assert "carol may now use the project as viewer" in out.stdout
    listed = balsam_as(run_as, "alice", root, "server", "--list-users").stdout
    assert "balsam_admin" in listed and "carol" in listed
    assert "carol may no longer" in balsam_as(run_as, "alice", root, "server", "--drop-user",
                                              "carol").stdout
    assert "schema is up to date" in balsam_as(run_as, "alice", root, "server", "migrate").stdout
    # The schema belongs to balsam_admin, not to the owner's everyday role.
    owners = sql_as(run_as, "alice", root, "SELECT DISTINCT tableowner FROM pg_tables "
                                           "WHERE schemaname = 'public'")
    assert owners == [[{"tableowner": "balsam_admin"}]]


#: Turn a new project back into one of the old layout's: the owner is the bootstrap superuser
#: (no balsam_admin), with the password her stored credentials hold.
MAKE_OLD = [
    "CREATE ROLE old_tmp SUPERUSER",
    "SET SESSION AUTHORIZATION old_tmp",
    "DROP ROLE alice",
    "ALTER ROLE balsam_admin RENAME TO alice",
    "RESET SESSION AUTHORIZATION",
    "DROP ROLE old_tmp",
]


def test_a_project_of_the_old_layout_is_brought_up_to_date(run_as, shared_dir):
    root = project(run_as, shared_dir)
    sh(run_as, "bob", root, f'{ACTIVATE} && balsam app --name hello --executable /bin/echo && '
                            'balsam job --name t1 --workflow X --application hello')
    credentials = Path(f"/home/alice/.balsam/credentials/{Project.load(root).info.uuid}")
    verifier = sql_as(run_as, "alice", root, "SELECT rolpassword FROM pg_authid "
                                             "WHERE rolname = 'alice'", ADMIN="1")[0][0]
    restore = sql.SQL("ALTER ROLE alice PASSWORD {}").format(sql.Literal(verifier["rolpassword"]))
    old = [*MAKE_OLD, restore.as_string(None)]
    assert sql_as(run_as, "alice", root, *old, ADMIN="1") == ["ok"] * len(old)
    balsam_as(run_as, "alice", root, "server", "stop")
    # The old layout: a group-writable project, no private copies, no CA, the server's log in
    # the work zone.
    sh(run_as, "alice", root, 'cd "$P" && rm server-ca.pem balsamdb/server-info balsamdb/ca.* '
                              '&& chmod 2770 . data log qsubmit job-templates .pgsocket '
                              '&& chmod 660 server-info && touch log/postgresql.log')
    refused = f"Error: refusing {root}: writable by group balsamtest; "
    for user, fix in (("alice", "check it, then repair it with: balsam perms fix (which also "
                                "brings a project of the old layout up to date)"),
                      ("bob", "ask the project owner alice to run: balsam perms fix")):
        proc = sh(run_as, user, root, ACTIVATE, check=False)
        assert proc.returncode == 1 and proc.stderr.strip() == refused + fix
    fix = balsam_as(run_as, "alice", root, "perms", "fix")
    assert "fixed server-info" not in fix.stdout  # published again, not chmodded
    assert stat.S_IMODE((root / "server-info").stat().st_mode) == 0o640
    assert stat.S_IMODE(root.stat().st_mode) == 0o2750
    assert stat.S_IMODE((root / "data").stat().st_mode) == 0o3770
    # The owner's activation starts the server with a new CA, and says the roles are old.
    proc = sh(run_as, "alice", root, ACTIVATE)
    assert "run balsam server migrate" in proc.stderr
    assert (root / "server-ca.pem").exists() and (root / "balsamdb/ca.key").exists()
    stored = credentials.read_text()
    migrated = balsam_as(run_as, "alice", root, "server", "migrate")
    assert "balsam_admin is now the administrative role" in migrated.stdout
    # The owner's everyday role kept her password; everyone's tasks are there.
    assert sql_as(run_as, "alice", root, ME, **TCP) == [[{"me": "alice", "rolsuper": False}]]
    assert credentials.read_text() == stored
    assert sql_as(run_as, "alice", root, "SELECT oid FROM pg_roles WHERE rolsuper",
                  ADMIN="1") == [[{"oid": 10}]]
    for user in ("alice", "bob"):
        assert sql_as(run_as, user, root, "SELECT name, owner FROM tasks", **TCP) == [
            [{"name": "t1", "owner": "bob"}]]
    assert balsam_as(run_as, "bob", root, "perms", "check").returncode == 0
    assert "schema is up to date" in balsam_as(run_as, "alice", root, "server",
                                               "migrate").stdout


def test_a_role_with_the_owners_name_cannot_take_over(run_as, shared_dir):
    """``--add-user`` cannot change the owner's own role (nor make it a viewer's)."""
    root = project(run_as, shared_dir)
    proc = balsam_as(run_as, "alice", root, "server", "--add-user", "alice", "--role", "viewer",
                     check=False)
    assert proc.returncode == 1
    assert "alice owns the project: their everyday role is a member's, always" in proc.stderr
    proc = balsam_as(run_as, "alice", root, "server", "--add-user", "balsam_admin", check=False)
    assert "balsam_admin is a superuser of this server and needs no role" in proc.stderr
