"""Project roles on a real PostgreSQL: what a member and a viewer may do, and user management.

Collaborators' login roles are global to the test cluster, so each test makes its own uniquely
named ones (the test cluster trusts its private socket, so the tests can connect as them).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from psycopg import sql

from balsam.db import connect, wrap_db_errors
from balsam.errors import BalsamError, InvalidInput, NotFound, PermissionDenied
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_pgserver import roles

pytestmark = pytest.mark.pg
_n = itertools.count()


@pytest.fixture
def user_name(pg_server) -> Iterator[Callable[..., str]]:
    """Make unique login-role names; drop whatever roles they became afterwards."""
    made: list[str] = []

    def make(prefix: str = "u") -> str:
        made.append(f"{prefix}_{os.getpid()}_{next(_n)}")
        return made[-1]

    yield make
    with connect(pg_server.dsn()) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def as_user(db_dsn: str, name: str) -> psycopg.Connection:
    return connect(db_dsn + f" user={name}")


def _app_and_task(conn) -> int:
    app = conn.execute("INSERT INTO apps (name, executable) VALUES ('hello', '/bin/echo') "
                       "RETURNING id").fetchone()["id"]
    return conn.execute("INSERT INTO tasks (name, app_id, state) VALUES ('t', %s, 'READY') "
                        "RETURNING id", [app]).fetchone()["id"]


def test_migration_creates_roles_named_after_the_database(db):
    kinds = {r["kind"]: r["rolname"] for r in db.execute("SELECT * FROM pgserver_roles")}
    assert set(kinds) == {"member", "viewer"}
    template = db.execute("SELECT datname FROM pg_database WHERE datistemplate "
                          "AND datname LIKE 'balsam_tmpl_%%'").fetchall()
    assert kinds["member"] in {f"{t['datname']}_member" for t in template}
    for name in kinds.values():
        row = db.execute("SELECT rolcanlogin, rolsuper, rolcreaterole FROM pg_roles "
                         "WHERE rolname = %s", [name]).fetchone()
        assert row == {"rolcanlogin": False, "rolsuper": False, "rolcreaterole": False}


def test_member_reads_and_writes_tasks_but_not_the_schema(db, db_dsn, user_name):
    bob = user_name("bob")
    assert roles.add_user(db, bob, "member") == "created"
    with as_user(db_dsn, bob) as conn:
        task = _app_and_task(conn)
        child = conn.execute("INSERT INTO tasks (name, app_id, state) SELECT 'child', app_id, "
                             "'AWAITING_PARENTS' FROM tasks RETURNING id").fetchone()["id"]
        conn.execute("INSERT INTO task_parents (parent_id, child_id) VALUES (%s, %s)",
                     [task, child])
        conn.execute("UPDATE tasks SET state = 'USER_KILLED' WHERE id = %s", [task])
        conn.execute("UPDATE tasks SET args = '--again', state = 'READY' WHERE id = %s", [task])
        forbidden = [
            "CREATE TABLE sneaky (i int)",
            "DROP TABLE tasks",
            "ALTER TABLE tasks ADD COLUMN x int",
            "INSERT INTO task_transitions VALUES ('READY', 'JOB_FINISHED')",
            "DELETE FROM task_states",
            "UPDATE task_events SET db_user = 'alice'",
            "DELETE FROM task_events",
            "DELETE FROM balsam_migrations",
            "TRUNCATE tasks",
            f"CREATE ROLE {bob}_friend LOGIN",
            f"GRANT {roles.project_roles(db)['member']} TO {bob}",
            f"ALTER ROLE {bob} CREATEROLE",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'postgres'",
        ]
        for statement in forbidden:
            with pytest.raises(PermissionDenied), wrap_db_errors():
                conn.execute(statement)
        states = [r["to_state"] for r in conn.execute(
            "SELECT to_state FROM task_events WHERE task_id = %s ORDER BY id", [task])]
        assert states == ["READY", "USER_KILLED", "READY"]
        conn.execute("DELETE FROM tasks WHERE id = %s", [task])
    # The cascade to task_parents runs with the table owner's rights; the history stays.
    assert db.execute("SELECT count(*) AS n FROM task_events WHERE task_id = %s",
                      [task]).fetchone()["n"] == 3
    assert db.execute("SELECT count(*) AS n FROM task_parents").fetchone()["n"] == 0


def test_rows_record_who_wrote_them_and_cannot_be_forged(db, db_dsn, user_name):
    bob = user_name("bob")
    roles.add_user(db, bob)
    with as_user(db_dsn, bob) as conn:
        task = _app_and_task(conn)
        with pytest.raises(PermissionDenied, match=rf"tasks.owner .* must be {bob}"), \
                wrap_db_errors():
            conn.execute("INSERT INTO tasks (name, app_id, owner) "
                         "SELECT 'forged', id, 'alice' FROM apps")
        with pytest.raises(PermissionDenied, match="owner"), wrap_db_errors():
            conn.execute("UPDATE tasks SET owner = 'alice' WHERE id = %s", [task])
        with pytest.raises(PermissionDenied, match="task_events"), wrap_db_errors():
            conn.execute("INSERT INTO task_events (task_id, to_state, db_user) "
                         "VALUES (%s, 'READY', 'alice')", [task])
        with pytest.raises(PermissionDenied), wrap_db_errors():
            conn.execute("INSERT INTO batch_jobs (scheduler, num_nodes, wall_time_minutes, owner)"
                         " VALUES ('local', 1, 1, 'alice')")
    db.execute("UPDATE tasks SET state = 'STAGED_IN' WHERE id = %s", [task])
    rows = db.execute("SELECT owner FROM tasks UNION ALL SELECT owner FROM apps").fetchall()
    assert {r["owner"] for r in rows} == {bob}
    events = db.execute("SELECT from_state, to_state, db_user FROM task_events "
                        "WHERE task_id = %s ORDER BY id", [task]).fetchall()
    assert events == [{"from_state": None, "to_state": "READY", "db_user": bob},
                      {"from_state": "READY", "to_state": "STAGED_IN", "db_user": "postgres"}]
    # The owner (a superuser) may import rows on someone's behalf.
    db.execute("UPDATE tasks SET owner = 'imported' WHERE id = %s", [task])


def test_viewer_reads_only(db, db_dsn, user_name):
    task = _app_and_task(db)
    carol = user_name("carol")
    roles.add_user(db, carol, "viewer")
    with as_user(db_dsn, carol) as conn:
        assert conn.execute("SELECT id FROM tasks").fetchall() == [{"id": task}]
        assert conn.execute("SELECT count(*) AS n FROM task_events").fetchone()["n"] == 1
        for statement in ("INSERT INTO apps (name, executable) VALUES ('x', '/bin/true')",
                          "UPDATE tasks SET state = 'USER_KILLED'", "DELETE FROM tasks",
                          "INSERT INTO batch_jobs (scheduler, num_nodes, wall_time_minutes) "
                          "VALUES ('local', 1, 1)"):
            with pytest.raises(PermissionDenied), wrap_db_errors():
                conn.execute(statement)


def test_tables_of_later_migrations_are_covered(db, db_dsn, user_name):
    db.execute("CREATE TABLE launcher_later (id int PRIMARY KEY, note text)")
    bob, carol = user_name("bob"), user_name("carol")
    roles.add_user(db, bob, "member")
    roles.add_user(db, carol, "viewer")
    with as_user(db_dsn, bob) as conn:
        conn.execute("INSERT INTO launcher_later VALUES (1, 'by bob')")
    with as_user(db_dsn, carol) as conn:
        assert conn.execute("SELECT note FROM launcher_later").fetchone() == {"note": "by bob"}
        with pytest.raises(PermissionDenied), wrap_db_errors():
            conn.execute("DELETE FROM launcher_later")


def test_add_user_is_idempotent_and_switches_roles(db, user_name):
    bob = user_name("bob")
    assert roles.add_user(db, bob) == "created"
    assert roles.add_user(db, bob) == "unchanged"
    assert roles.memberships(db, bob) == ["member"]
    assert roles.add_user(db, bob, "viewer") == "changed"
    assert roles.memberships(db, bob) == ["viewer"]
    listed = {r["name"]: r["role"] for r in roles.list_users(db)}
    assert listed[bob] == "viewer" and listed["postgres"] == "superuser"


def test_add_user_refuses_superusers_and_group_roles(db, user_name):
    with pytest.raises(InvalidInput, match="superuser"):
        roles.add_user(db, "postgres")
    with pytest.raises(InvalidInput, match="group role"):
        roles.add_user(db, roles.project_roles(db)["viewer"])


@pytest.mark.parametrize("name", ["Bob", "1bob", "bob;drop table tasks", 'bob"', "bob-smith",
                                  "pg_monitor", "b" * 64, "", "bob\n", "bób"])
def test_invalid_names_are_refused_before_any_sql(db_dsn, name):
    closed = connect(db_dsn)
    closed.close()
    with pytest.raises(InvalidInput, match="invalid user name"):
        roles.add_user(closed, name)
    with pytest.raises(InvalidInput, match="invalid user name"):
        roles.drop_user(closed, name, drop_role=True)


def test_invalid_role_is_refused(db, user_name):
    with pytest.raises(InvalidInput, match="invalid role 'admin'"):
        roles.add_user(db, user_name(), "admin")


def test_drop_user_revokes_or_drops(db, db_dsn, user_name):
    _app_and_task(db)
    bob, carol = user_name("bob"), user_name("carol")
    roles.add_user(db, bob)
    roles.add_user(db, carol)
    lingering = as_user(db_dsn, carol)
    # Shared external server: only this project's role is withdrawn.
    assert roles.drop_user(db, bob, drop_role=False) == 0
    assert roles.memberships(db, bob) == []
    with as_user(db_dsn, bob) as conn, pytest.raises(PermissionDenied), wrap_db_errors():
        conn.execute("SELECT * FROM tasks")
    # Embedded cluster: the role goes and its sessions end.
    assert roles.drop_user(db, carol, drop_role=True) == 1
    assert db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [carol]).fetchone() is None
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")
    lingering.close()
    with pytest.raises(NotFound, match="not a user of this project"):
        roles.drop_user(db, carol, drop_role=True)


def test_database_without_roles_says_so(db):
    db.execute("DELETE FROM pgserver_roles")
    with pytest.raises(BalsamError, match="no member and viewer roles"):
        roles.add_user(db, "bob")


# --- through the hook and the CLI (a project on an external server, owned by this user) -------


def test_hook_on_add_user(project, user_name, capsys):
    name = user_name("nobody")
    get_plugin_manager().hook.on_add_user(project=project, username=name, role="viewer")
    with connect(project) as conn:
        assert roles.memberships(conn, name) == ["viewer"]
    assert f"warning: there is no user {name} on this host" in capsys.readouterr().err


def test_hook_on_drop_user(project, user_name):
    name = user_name("dropped")
    pm = get_plugin_manager()
    pm.hook.on_add_user(project=project, username=name, role="member")
    pm.hook.on_drop_user(project=project, username=name)
    with connect(project) as conn:
        assert roles.memberships(conn, name) == []
    with pytest.raises(NotFound, match="not a user of this project"):
        pm.hook.on_drop_user(project=project, username=name)


def test_server_user_options(project, user_name):
    cli = build_cli(get_plugin_manager())
    name = user_name("bob")
    added = CliRunner().invoke(cli, ["server", "--add-user", name])
    assert added.exit_code == 0, added.output
    assert f"{name} may now use the project as member" in added.output
    listed = CliRunner().invoke(cli, ["server", "--list-users"], terminal_width=200)
    assert any(name in ln and "member" in ln for ln in listed.output.splitlines())
    dropped = CliRunner().invoke(cli, ["server", "--drop-user", name])
    assert dropped.exit_code == 0 and f"{name} may no longer use the project" in dropped.output
    with connect(project) as conn:
        assert roles.memberships(conn, name) == []
        # On a shared external server the login role stays (other projects may use it).
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
    both = CliRunner().invoke(cli, ["server", "--add-user", name, "status"])
    assert both.exit_code == 2 and "take no subcommand" in both.output
    status = CliRunner().invoke(cli, ["server"])
    assert status.exit_code == 0 and "external" in status.output


# --- role management as a state machine ------------------------------------------------------


class RoleMachine(RuleBasedStateMachine):
    """Any sequence of add (as member or viewer) and drop leaves each user with exactly the role
    the last call gave, and what they may do in the database follows."""

    def __init__(self, db_dsn: str, names: list[str]) -> None:
        super().__init__()
        self.dsn, self.names = db_dsn, names
        self.conn = connect(db_dsn)
        for name in names:  # each example starts from no such users
            self.conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        self.model: dict[str, str | None] = {}

    @rule(i=st.integers(0, 2), role=st.sampled_from(roles.ROLES))
    def add(self, i: int, role: str) -> None:
        name = self.names[i]
        outcome = roles.add_user(self.conn, name, role)
        previous = self.model.get(name)
        expected = ("unchanged" if previous == role
                    else "changed" if name in self.model else "created")
        assert outcome == expected
        self.model[name] = role

    @rule(i=st.integers(0, 2), drop_role=st.booleans())
    def drop(self, i: int, drop_role: bool) -> None:
        name = self.names[i]
        if self.model.get(name) is None:
            with pytest.raises(NotFound):
                roles.drop_user(self.conn, name, drop_role=drop_role)
            return
        roles.drop_user(self.conn, name, drop_role=drop_role)
        if drop_role:
            del self.model[name]
        else:
            self.model[name] = None  # the login role stays, with no project role

    @invariant()
    def memberships_follow_the_model(self) -> None:
        for name in self.names:
            role = self.model.get(name)
            assert roles.memberships(self.conn, name) == ([role] if role else [])
        listed = {r["name"]: r["role"] for r in roles.list_users(self.conn)
                  if r["name"] in self.names}
        assert listed == {n: r for n, r in self.model.items() if r}

    @invariant()
    def rights_follow_the_model(self) -> None:
        for name, role in self.model.items():
            with as_user(self.dsn, name) as conn:
                for statement, allowed in (("SELECT count(*) FROM tasks", role is not None),
                                           ("DELETE FROM apps WHERE false", role == "member")):
                    try:
                        with wrap_db_errors():
                            conn.execute(statement)
                        assert allowed, (name, role, statement)
                    except PermissionDenied:
                        assert not allowed, (name, role, statement)

    def teardown(self) -> None:
        self.conn.close()


def test_role_management_state_machine(db_dsn, user_name):
    names = [user_name("sm") for _ in range(3)]

    def machine() -> RoleMachine:
        return RoleMachine(db_dsn, names)

    run_state_machine_as_test(machine, settings=settings(
        max_examples=15, stateful_step_count=8, deadline=None,
        suppress_health_check=list(HealthCheck)))
