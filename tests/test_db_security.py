"""The database as a hostile collaborator finds it: real login roles in the project's member and
viewer roles doing raw SQL against a real PostgreSQL (docs/security.md, "The database").

Login roles are global to the test cluster, so each test makes its own (dropped afterwards); the
test cluster trusts its private socket, so a test connects as any of them.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from psycopg import sql

from balsam import api, claim, monitor
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import (
    BalsamError,
    Busy,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PermissionDenied,
)
from balsam.models import Change, Event
from balsam.project import ADMIN_ROLE
from balsam.resources import Resources
from balsam_launcher import policy
from balsam_pgserver import roles
from balsam_testing.pg import finished, start_blocked

pytestmark = pytest.mark.pg
_serial = itertools.count()

Login = Callable[[str], Connection]
PINNED = "search_path=pg_catalog, public, pg_temp"


@pytest.fixture
def login(db: Connection, db_dsn: str, pg_server) -> Iterator[Callable[[str], Connection]]:
    """``login(role)`` -> a connection as a new user given the project's ``role`` (member or
    viewer); its user name is ``conn.info.user``."""
    made: list[str] = []
    conns: list[Connection] = []

    def make(role: str) -> Connection:
        name = f"{role}_{os.getpid()}_{next(_serial)}"
        roles.add_user(db, name, role)
        made.append(name)
        conns.append(connect(f"{db_dsn} user={name}"))
        return conns[-1]

    yield make
    for conn in conns:
        conn.close()
    with connect(pg_server.dsn()) as admin:
        # A closed session's backend drops its temporary objects after the client has gone:
        # its role can be dropped once the backend has ended.
        deadline = time.monotonic() + 30
        while admin.execute("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = ANY(%s)",
                            [made]).fetchone()["n"] and time.monotonic() < deadline:
            time.sleep(0.05)
        for name in made:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def refused(conn: Connection, statement: str, *params: object) -> BalsamError:
    """Run ``statement``, which must fail; the failure, as a balsam error."""
    with pytest.raises(BalsamError) as caught, wrap_db_errors():
        conn.execute(statement, params or None)
    return caught.value


def app_and_task(conn: Connection, name: str = "sim") -> tuple[int, int]:
    app = api.add_app(name, "/bin/echo", conn=conn)
    return app.id, api.add_task(app, name="t", args="hello", conn=conn).id  # type: ignore[return-value]


def count(db: Connection, table: str) -> int:
    return db.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
                      ).fetchone()["n"]


# --- search_path -------------------------------------------------------------------------------


def test_every_function_pins_its_search_path(db):
    """Later migrations cannot forget: CREATE OR REPLACE FUNCTION resets the setting."""
    rows = db.execute("""
        SELECT p.oid::regprocedure::text AS name, p.proconfig
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
    """).fetchall()
    assert len(rows) > 20
    unpinned = [r["name"] for r in rows if PINNED not in (r["proconfig"] or [])]
    assert unpinned == []


def test_security_definer_functions_are_not_public(db):
    """A collaborator could attach one to a temporary table of their own and have it write
    whatever that table holds: only the roles that need one may execute it."""
    rows = db.execute("""
        SELECT p.oid::regprocedure::text AS name,
               has_function_privilege('public', p.oid, 'EXECUTE') AS public,
               (SELECT array_agg(r.kind ORDER BY r.kind) FROM pgserver_roles r
                WHERE has_function_privilege(r.rolname, p.oid, 'EXECUTE')) AS kinds
        FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef ORDER BY 1
    """).fetchall()
    assert {r["name"] for r in rows} >= {"balsam_record_event()", "balsam_record_change()",
                                         "balsam_record_deletion()", "balsam_lock_dag()"}
    for r in rows:
        assert not r["public"], r["name"]
        assert r["kinds"] == (["member"] if r["name"] == "balsam_lock_dag()" else None), r


def test_a_temporary_pg_roles_no_longer_switches_the_forgery_check_off(db, login):
    bob = login("member")
    app_id, _ = app_and_task(bob)
    bob.execute("CREATE TEMP TABLE pg_roles (rolname name, rolsuper bool)")
    bob.execute("INSERT INTO pg_roles VALUES (session_user, true)")
    error = refused(bob, "INSERT INTO tasks (app_id, owner) VALUES (%s, 'alice')", app_id)
    assert isinstance(error, PermissionDenied) and "tasks.owner" in str(error)
    assert count(db, "tasks") == 1


def test_a_temporary_state_machine_no_longer_switches_the_checks_off(db, login):
    bob = login("member")
    app_id, task = app_and_task(bob)
    bob.execute("CREATE TEMP TABLE task_transitions (from_state text, to_state text)")
    bob.execute("INSERT INTO task_transitions VALUES ('READY', 'JOB_FINISHED')")
    bob.execute("CREATE TEMP TABLE task_states (state text, initial bool, final bool, "
                "runnable bool)")
    bob.execute("INSERT INTO task_states VALUES ('JOB_FINISHED', true, true, false)")
    error = refused(bob, "UPDATE tasks SET state = 'JOB_FINISHED' WHERE id = %s", task)
    assert isinstance(error, InvalidTransition) and "READY -> JOB_FINISHED" in str(error)
    error = refused(bob, "INSERT INTO tasks (app_id, state) VALUES (%s, 'JOB_FINISHED')", app_id)
    assert isinstance(error, InvalidTransition) and "cannot be created" in str(error)
    assert db.execute("SELECT state FROM tasks").fetchall() == [{"state": "READY"}]


# --- the audit trail is written by the database alone -------------------------------------------


def test_members_cannot_write_the_audit_trail(db, login):
    bob = login("member")
    _, task = app_and_task(bob)
    bob.execute("UPDATE tasks SET args = 'changed' WHERE id = %s", [task])
    events, changes = count(db, "task_events"), count(db, "changes")
    for statement in (
        "INSERT INTO task_events (task_id, to_state) VALUES (%s, 'JOB_FINISHED')",
        "UPDATE task_events SET to_state = 'JOB_FINISHED' WHERE task_id = %s",
        "DELETE FROM task_events WHERE task_id = %s",
        "INSERT INTO changes (entity, entity_id, field) VALUES ('task', %s, 'args')",
        "UPDATE changes SET changed_by = 'alice' WHERE entity_id = %s",
        "DELETE FROM changes WHERE entity_id = %s",
    ):
        assert isinstance(refused(bob, statement, task), PermissionDenied), statement
    for statement in ("TRUNCATE task_events", "TRUNCATE changes",
                      "ALTER TABLE tasks DISABLE TRIGGER tasks_events_update",
                      "ALTER TABLE tasks DISABLE TRIGGER ALL",
                      "DROP TRIGGER tasks_record_change ON tasks",
                      "SET session_replication_role = replica",
                      "CREATE OR REPLACE FUNCTION balsam_record_event() RETURNS trigger "
                      "LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'"):
        assert isinstance(refused(bob, statement), PermissionDenied), statement
    assert (count(db, "task_events"), count(db, "changes")) == (events, changes)


def test_the_recording_functions_cannot_be_borrowed(db, login):
    """Attached to a member's temporary table, balsam_record_event would insert its rows as
    events, with the schema owner's rights."""
    bob = login("member")
    bob.execute("CREATE TEMP TABLE fake (id bigint, state text, state_changed_at timestamptz, "
                "launcher_id bigint, state_message text)")
    error = refused(bob, "CREATE TRIGGER forge AFTER INSERT ON fake REFERENCING NEW TABLE AS "
                         "new_rows FOR EACH STATEMENT "
                         "EXECUTE FUNCTION public.balsam_record_insert_event()")
    assert isinstance(error, PermissionDenied) and "balsam_record_insert_event" in str(error)


def test_events_record_the_login_whatever_role_it_sets(db, login):
    bob = login("member")
    _, task = app_and_task(bob)
    member_role = roles.project_roles(db)["member"]
    bob.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(member_role)))
    bob.execute("UPDATE tasks SET state = 'USER_KILLED', args = 'as a group' WHERE id = %s",
                [task])
    who = bob.info.user
    assert {e.db_user for e in api.history(task, conn=db) if isinstance(e, Event)} == {who}
    row = db.execute("SELECT changed_by FROM tasks WHERE id = %s", [task]).fetchone()
    assert row == {"changed_by": who}
    assert {c.changed_by for c in api.history(task, conn=db) if isinstance(c, Change)} == {who}


def test_a_writer_dates_a_change_only_between_the_previous_one_and_now(db, login):
    bob = login("member")
    _, task = app_and_task(bob)
    created = db.execute("SELECT state_changed_at FROM tasks WHERE id = %s", [task]).fetchone()
    for state, at in (("STAGED_IN", "2999-01-01"), ("FAILED", "1999-01-01")):
        bob.execute("UPDATE tasks SET state = %s, state_changed_at = %s WHERE id = %s",
                    [state, at, task])
    staged, failed = db.execute("SELECT at FROM task_events WHERE task_id = %s ORDER BY id "
                                "OFFSET 1", [task]).fetchall()
    now = db.execute("SELECT now() AS now").fetchone()["now"]
    assert created["state_changed_at"] <= staged["at"] <= now  # not in the future
    assert failed["at"] == staged["at"]  # not before the previous change
    # Nor by creating a task in the past, to date its history back from there.
    app_id = db.execute("SELECT app_id FROM tasks").fetchone()["app_id"]
    for column in ("state_changed_at", "created_at"):
        error = refused(bob, f"INSERT INTO tasks (app_id, {column}) VALUES (%s, '2001-01-01')",
                        app_id)
        assert isinstance(error, PermissionDenied) and "created now" in str(error)


def test_a_member_copying_tasks_in_bulk_forges_nothing(db, login):
    """The bulk path is a COPY into tasks: a member's own COPY whose last row forges a field is
    refused whole by the statement-level checks, after a block of good rows where the field has
    a good literal value; the tasks of a good bulk insert are stamped with the member, and each
    one's creation is in its history."""
    bob = login("member")
    app_id, _ = app_and_task(bob)
    before = count(db, "tasks"), count(db, "task_events")
    me = bob.info.user
    for column, good, forged, error in (
            ("changed_by", me, ADMIN_ROLE, PermissionDenied),
            ("owner", me, ADMIN_ROLE, PermissionDenied),
            ("state", "READY", "RUN_DONE", InvalidTransition),
            ("data", "{}", "[1]", InvalidInput),
            ("changed_at", None, "2001-01-01", PermissionDenied),
            ("created_at", None, "2001-01-01", PermissionDenied)):
        copy = sql.SQL("COPY tasks (app_id, {}) FROM STDIN").format(sql.Identifier(column))
        with pytest.raises(error), wrap_db_errors(), bob.transaction(), \
                bob.cursor().copy(copy) as writer:
            writer.write(f"{app_id}\t{good}\n" * 999 if good else "")
            writer.write(f"{app_id}\t{forged}\n")
        assert (count(db, "tasks"), count(db, "task_events")) == before, column
    ids = api.add_tasks([{"app": app_id, "name": f"t{i}"} for i in range(2500)], conn=bob)
    stamps = db.execute("SELECT count(*) AS n, min(changed_by) AS first, max(changed_by) AS last "
                        "FROM tasks WHERE id = ANY(%s)", [ids]).fetchone()
    assert stamps == {"n": 2500, "first": me, "last": me}
    events = db.execute("SELECT count(*) AS n, min(db_user) AS first, max(db_user) AS last "
                        "FROM task_events WHERE task_id = ANY(%s) AND from_state IS NULL",
                        [ids]).fetchone()
    assert events == {"n": 2500, "first": me, "last": me}


def test_changed_by_is_set_by_the_database_only(db, login):
    bob, carol = login("member"), login("member")
    app_id, task = app_and_task(bob)
    assert isinstance(refused(carol, "INSERT INTO tasks (app_id, changed_by) VALUES (%s, %s)",
                              app_id, bob.info.user), PermissionDenied)
    assert isinstance(refused(carol, "INSERT INTO apps (name, executable, changed_at) VALUES "
                                     "('x', '/bin/x', now() - interval '1 day')"),
                      PermissionDenied)
    for statement in ("UPDATE tasks SET changed_by = %s WHERE id = %s",
                      "UPDATE apps SET changed_by = %s WHERE id = (SELECT app_id FROM tasks "
                      "WHERE id = %s)"):
        assert isinstance(refused(carol, statement, ADMIN_ROLE, task), PermissionDenied)
    # Set with a real change, it is overwritten with the writer.
    carol.execute("UPDATE tasks SET args = 'rm -rf ~', changed_by = %s, "
                  "changed_at = '2000-01-01' WHERE id = %s", [ADMIN_ROLE, task])
    carol.execute("UPDATE apps SET executable = '/bin/sh' WHERE id = %s", [app_id])
    row = db.execute("SELECT t.changed_by, t.changed_at > now() - interval '1 minute' AS recent, "
                     "a.changed_by AS app_changed_by FROM tasks t JOIN apps a ON a.id = t.app_id "
                     "WHERE t.id = %s", [task]).fetchone()
    assert row == {"changed_by": carol.info.user, "recent": True,
                   "app_changed_by": carol.info.user}
    changes = api.history(task, conn=db)
    assert [(c.field, c.old_value, c.new_value, c.changed_by) for c in changes
            if isinstance(c, Change)] == [("args", "hello", "rm -rf ~", carol.info.user)]
    assert [(c.field, c.old_value, c.new_value) for c in api.app_history(app_id, conn=db)] == [
        ("executable", "/bin/echo", "/bin/sh")]


def test_mpi_flags_a_collaborator_plants_make_the_task_untrusted(db, login):
    """An MPI launcher's options can run anything (``--mca plm_rsh_agent``, ``-x LD_PRELOAD``):
    carol's raw UPDATE of bob's mpi_flags stamps her as the task's last writer, and she cannot
    stamp it back."""
    bob, carol = login("member"), login("member")
    _, task = app_and_task(bob)
    carol.execute("UPDATE tasks SET mpi_flags = '-x LD_PRELOAD=/tmp/evil.so' WHERE id = %s",
                  [task])
    assert isinstance(refused(carol, "UPDATE tasks SET changed_by = %s WHERE id = %s",
                              bob.info.user, task), PermissionDenied)
    why = db.execute("SELECT balsam_untrusted(%s, t.owner, t.changed_by, t.app_id) AS why "
                     "FROM tasks t WHERE t.id = %s", [[bob.info.user], task]).fetchone()["why"]
    assert why == f"changed by {carol.info.user}"
    assert [(c.field, c.new_value, c.changed_by) for c in api.history(task, conn=db)
            if isinstance(c, Change)] == [
        ("mpi_flags", "-x LD_PRELOAD=/tmp/evil.so", carol.info.user)]


def test_removing_keeps_the_history_and_says_who(db, login):
    bob, carol = login("member"), login("member")
    app_id, task = app_and_task(bob)
    carol.execute("DELETE FROM tasks WHERE id = %s", [task])
    carol.execute("DELETE FROM apps WHERE id = %s", [app_id])
    history = api.history(task, conn=db)
    assert [type(h).__name__ for h in history] == ["Event", "Change"]
    removal = history[-1]
    assert isinstance(removal, Change)
    assert (removal.field, removal.changed_by) == ("deleted", carol.info.user)
    assert '"args": "hello"' in (removal.old_value or "")
    assert [c.field for c in api.app_history(app_id, conn=db)] == ["deleted"]
    with pytest.raises(NotFound):
        api.history(task + 1000, conn=db)


# --- trust -------------------------------------------------------------------------------------


def test_each_user_grants_and_withdraws_only_their_own_trust(db, login):
    bob, carol, viewer = login("member"), login("member"), login("viewer")
    b, c = bob.info.user, carol.info.user
    assert api.add_trust([c], conn=bob) == [c]
    assert api.add_trust([c], conn=bob) == []  # already
    for conn, statement, params in (
        (carol, "INSERT INTO trust (truster, trustee) VALUES (%s, %s)", (b, c)),
        (carol, "INSERT INTO trust (trustee, granted_at) VALUES (%s, '2000-01-01')", (b,)),
        (carol, "UPDATE trust SET trustee = %s", (c,)),
        (viewer, "INSERT INTO trust (trustee) VALUES (%s)", (c,)),
    ):
        assert isinstance(refused(conn, statement, *params), PermissionDenied), statement
    carol.execute("DELETE FROM trust")  # sees bob's row, deletes none of it
    assert [(t.truster, t.trustee) for t in api.list_trust(conn=viewer)] == [(b, c)]
    assert claim.trusted_users(bob) == sorted({ADMIN_ROLE, b, c})
    assert claim.trusted_users(carol, extra=["dave"]) == sorted({ADMIN_ROLE, c, "dave"})
    assert api.remove_trust([c], conn=bob) == [c]
    with pytest.raises(NotFound, match=f"you do not trust {c}"):
        api.remove_trust([c], conn=bob)
    trust_changes = db.execute("SELECT field, old_value, new_value, changed_by FROM changes "
                               "WHERE entity = 'trust' ORDER BY id").fetchall()
    assert trust_changes == [
        {"field": b, "old_value": None, "new_value": c, "changed_by": b},
        {"field": b, "old_value": c, "new_value": None, "changed_by": b},
    ]


def test_trust_names_are_checked_at_the_door(db, login):
    bob = login("member")
    for names, error in (([bob.info.user], "always trusted"), ([ADMIN_ROLE], "always trusted"),
                         (["Robert'); DROP TABLE tasks; --"], "invalid user name"),
                         (["pg_signal_backend"], "invalid user name"),
                         (["nobody_here"], "no user nobody_here")):
        with pytest.raises(BalsamError, match=error):
            api.add_trust(names, conn=bob)
    with pytest.raises(InvalidInput, match="invalid user name"):
        claim.trusted_users(bob, extra=["x y"])
    assert count(db, "trust") == 0


def test_untrusted_says_why_a_launcher_must_not_run_a_task(db, login):
    alice, bob = login("member"), login("member")
    a, b = alice.info.user, bob.info.user
    own = app_and_task(alice, "mine")[1]
    theirs = app_and_task(bob, "theirs")[1]
    mixed = api.add_task("mine", name="mixed", conn=alice).id
    bob.execute("UPDATE tasks SET args = 'by bob' WHERE id = %s", [mixed])
    borrowed = api.add_task("theirs", name="borrowed", conn=alice).id

    def why(trusted: list[str]) -> dict[int, str | None]:
        rows = db.execute("SELECT t.id, balsam_untrusted(%s, t.owner, t.changed_by, t.app_id) "
                          "AS why FROM tasks t ORDER BY t.id", [trusted]).fetchall()
        return {r["id"]: r["why"] for r in rows}

    assert why([a, ADMIN_ROLE]) == {own: None, theirs: f"owned by {b}",
                                    mixed: f"changed by {b}",
                                    borrowed: f"its app theirs was changed by {b}"}
    assert set(why([a, b]).values()) == {None}
    assert set(why([]).values()) == {f"owned by {a}", f"owned by {b}"}
    assert set(why(None).values()) == {"nobody is trusted"}  # type: ignore[arg-type]


def test_claims_take_only_what_the_launcher_trusts(db, login):
    """For a run, for post-processing and when counting work left: a launcher of alice's
    takes bob's tasks only once alice trusts bob (or names him with --trust)."""
    alice, bob = login("member"), login("member")
    a, b = alice.info.user, bob.info.user
    mine = app_and_task(alice, "mine")[1]
    _, theirs = app_and_task(bob, "theirs")
    ran = api.add_task("theirs", name="ran", conn=bob).id
    helper = launcher_row(bob)
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING", "RUN_DONE"):
        bob.execute("UPDATE tasks SET state = %s, launcher_id = %s WHERE id = %s",
                    [state, helper, ran])
    bob.execute("UPDATE tasks SET launcher_id = NULL WHERE id = %s", [ran])
    me = claim.register_launcher(alice, job_mode="mpi", num_nodes=4)["id"]
    free = Resources.on_hosts(["n"] * 4)

    def claims(trusted: list[str] | None = None) -> tuple[set[int], set[int], bool]:
        with alice.transaction(force_rollback=True):
            runs = claim.claim_for_run(alice, me, free, policy.largest_first, trusted=trusted)
            posts = claim.claim_for_post(alice, me, limit=8, trusted=trusted)
            alice.execute("UPDATE tasks SET state = 'USER_KILLED' WHERE id = %s", [mine])
            left = claim.work_remaining(alice, me, free, trusted=trusted)
        return {c.task.id for c in runs}, {c.task.id for c in posts}, left

    assert claims() == ({mine}, set(), False)
    assert claims([a, b]) == ({mine, theirs}, {ran}, True)  # as --trust bob
    api.add_trust([b], conn=alice)
    assert claims() == ({mine, theirs}, {ran}, True)
    api.remove_trust([b], conn=alice)
    assert claims() == ({mine}, set(), False)
    assert claims([]) == (set(), set(), False)  # a launcher trusting nobody takes nothing


def test_a_forged_stop_time_changes_no_claim(db, login):
    """launchers.stops_at only informs 'balsam ls'. bob's role may write launcher rows: his
    backdating alice's stop time starves none of her claims (a launcher goes by its own clock),
    and the hint he makes ls show names what the row says, nothing more."""
    alice, bob = login("member"), login("member")
    _, task = app_and_task(alice)
    alice.execute("UPDATE tasks SET wall_time_minutes = 30 WHERE id = %s", [task])
    me = claim.register_launcher(alice, job_mode="mpi", num_nodes=4,
                                 stops_at=time.time() + 3600)["id"]
    bob.execute("UPDATE launchers SET stops_at = now() - interval '1 hour' WHERE id = %s", [me])
    [lc] = monitor.launchers(alice, alive_only=True)
    assert lc.minutes_left == 0.0  # what bob wrote, as ls will say it
    claimed = claim.claim_for_run(alice, me, Resources.on_hosts(["n"] * 4), policy.largest_first,
                                  max_wall_minutes=60)
    assert [c.task.id for c in claimed] == [task]


# --- the DAG's lock ----------------------------------------------------------------------------


def test_a_viewer_cannot_hang_dependency_changes(db, login):
    viewer, bob = login("viewer"), login("member")
    _, parent = app_and_task(bob)
    child = api.add_task("sim", name="c", conn=bob).id
    with viewer.transaction():
        viewer.execute("SELECT pg_advisory_xact_lock(hashtext('balsam_task_parents'))")
        for statement in ("SELECT balsam_lock_dag()",
                          "SELECT * FROM balsam_dag_lock FOR UPDATE",
                          "SELECT * FROM balsam_dag_lock FOR KEY SHARE"):
            with pytest.raises(PermissionDenied), wrap_db_errors(), viewer.transaction():
                viewer.execute(statement)
        with pytest.raises(PermissionDenied), wrap_db_errors(), viewer.transaction():
            viewer.execute("LOCK TABLE balsam_dag_lock IN EXCLUSIVE MODE")
        viewer.execute("SELECT * FROM balsam_dag_lock")  # reading it takes no lock that matters
        bob.execute("SET balsam.dag_lock_timeout = '1s'")  # were bob kept waiting: Busy
        assert api.add_dependency(parent, child, conn=bob).state.value == "AWAITING_PARENTS"


def test_a_member_holding_the_lock_is_named_after_the_timeout(db, db_dsn, login):
    holder, bob = login("member"), login("member")
    _, parent = app_and_task(bob)
    child = api.add_task("sim", name="c", conn=bob).id
    bob.execute("SET balsam.dag_lock_timeout = '1s'")
    with holder.transaction():
        holder.execute("SELECT balsam_lock_dag()")
        pid = holder.info.backend_pid
        started = time.monotonic()
        with pytest.raises(Busy) as busy:
            api.add_dependency(parent, child, conn=bob)
        assert 0.9 < time.monotonic() - started < 10
    message = str(busy.value)
    assert f"being changed by {holder.info.user} (pid {pid})" in message
    assert "\n" not in message and "for over 1s" in message
    assert api.parents(child, conn=bob) == []
    assert api.add_dependency(parent, child, conn=bob).state.value == "AWAITING_PARENTS"


def test_concurrent_edits_still_cannot_close_a_cycle(db, db_dsn, login):
    """The lock's purpose: two transactions adding a -> b and b -> a at once; one must fail."""
    bob, carol = login("member"), login("member")
    _, a = app_and_task(bob)
    b = api.add_task("sim", name="b", conn=bob).id
    outcome: list[BaseException | None] = []
    with bob.transaction():
        api.add_dependency(a, b, conn=bob)

        def other() -> None:
            try:
                api.add_dependency(b, a, conn=carol)
                outcome.append(None)
            except BalsamError as exc:
                outcome.append(exc)

        thread = start_blocked(other, waiter=carol, holder=bob, observer=db)
    finished(thread)
    assert len(outcome) == 1 and "would create a cycle" in str(outcome[0])
    assert api.edges([a, b], conn=db) == [(a, b)]


# --- claims ------------------------------------------------------------------------------------


def launcher_row(conn: Connection, ended: bool = False) -> int:
    return conn.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes, ended_at) "
                        "VALUES ('h', 1, 'mpi', 1, CASE WHEN %s THEN now() END) RETURNING id",
                        [ended]).fetchone()["id"]


def test_no_running_task_without_a_claim(db, login):
    bob = login("member")
    app_id, task = app_and_task(bob)
    launcher = launcher_row(bob)
    created = refused(bob, "INSERT INTO tasks (app_id, state) VALUES (%s, 'RUNNING')", app_id)
    assert any(text in str(created) for text in  # whichever check PostgreSQL runs first
               ("tasks_running_claimed", "a task cannot be created in state RUNNING")), created
    bob.execute("UPDATE tasks SET launcher_id = %s, state = 'STAGED_IN' WHERE id = %s",
                [launcher, task])
    bob.execute("UPDATE tasks SET state = 'PREPROCESSED' WHERE id = %s", [task])
    with pytest.raises(InvalidInput, match="tasks_running_claimed"), wrap_db_errors():
        bob.execute("UPDATE tasks SET state = 'RUNNING', launcher_id = NULL WHERE id = %s",
                    [task])
    bob.execute("UPDATE tasks SET state = 'RUNNING' WHERE id = %s", [task])
    for statement in ("UPDATE tasks SET launcher_id = NULL WHERE id = %s",
                      "DELETE FROM launchers WHERE id = (SELECT launcher_id FROM tasks "
                      "WHERE id = %s)"):
        with pytest.raises(InvalidInput, match="tasks_running_claimed"), wrap_db_errors():
            bob.execute(statement, [task])
    assert db.execute("SELECT state, launcher_id FROM tasks").fetchall() == [
        {"state": "RUNNING", "launcher_id": launcher}]


def test_the_reaper_recovers_claims_an_ended_launcher_still_holds(db):
    app = api.add_app("sim", "/bin/true", conn=db)
    retry, handled, waiting = api.add_tasks(
        [{"app": app}, {"app": app, "post_timeout_handler": True}, {"app": app}], conn=db)
    launcher, alive = launcher_row(db), launcher_row(db)
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = ANY(%s)",
               [launcher, [retry, handled, waiting]])
    for state in ("STAGED_IN", "PREPROCESSED", "RUNNING"):
        db.execute("UPDATE tasks SET state = %s WHERE id = ANY(%s)", [state, [retry, handled]])
    db.execute("UPDATE launchers SET ended_at = now() WHERE id = %s", [launcher])  # by hand
    kept = api.add_task(app, conn=db).id
    db.execute("UPDATE tasks SET launcher_id = %s WHERE id = %s", [alive, kept])
    reaped = claim.reap_dead(db)
    assert reaped["launchers"] == []
    assert sorted((r["id"], r["state"]) for r in reaped["tasks"]) == [
        (retry, "RESTART_READY"), (handled, "RUN_TIMEOUT"), (waiting, "READY")]
    rows = db.execute("SELECT id, launcher_id, state_message FROM tasks ORDER BY id").fetchall()
    assert [r["launcher_id"] for r in rows] == [None, None, None, alive]
    assert rows[0]["state_message"] == f"launcher {launcher} had ended"
    assert claim.reap_dead(db)["tasks"] == []


def test_the_database_refuses_what_the_api_would(db, login):
    """Raw SQL meets the same bounds as the API (balsam.models' limits, migration 0012)."""
    bob = login("member")
    app_id, task = app_and_task(bob)
    deep = "[" * 40 + "]" * 40
    for statement in (
        "UPDATE tasks SET num_nodes = 100001 WHERE id = %s",
        "UPDATE tasks SET name = repeat('x', 257) WHERE id = %s",
        "UPDATE tasks SET args = repeat('x', 65537) WHERE id = %s",
        f"UPDATE tasks SET data = '{{\"d\": {deep}}}' WHERE id = %s",
        "UPDATE tasks SET environ_vars = '[1]' WHERE id = %s",
        "UPDATE tasks SET data = jsonb_build_object('big', repeat('x', 1048576)) WHERE id = %s",
    ):
        error = refused(bob, statement, task)
        assert isinstance(error, InvalidInput) and "\n" not in str(error), statement
    error = refused(bob, f"INSERT INTO tasks (app_id, data) VALUES (%s, '{{\"d\": {deep}}}')",
                    app_id)
    assert str(error) == "data is nested more than 32 levels deep"
    assert count(db, "tasks") == 1
    assert db.execute("SELECT data FROM tasks").fetchone() == {"data": {}}


def test_trust_as_a_state_machine(db, login):
    """Any sequence of grants and withdrawals by three members: the table, each member's
    trusted users, the recorded changes and what each member's launcher may claim (tasks owned
    or changed by each, or using an app another changed) follow a plain model."""
    users = [login("member") for _ in range(3)]
    names = [u.info.user for u in users]
    # Each member's task; one of member 0's changed by member 1; one using member 2's app.
    needs = {app_and_task(u, f"app{i}")[1]: {names[i]} for i, u in enumerate(users)}
    changed = api.add_task("app0", name="changed", conn=users[0]).id
    users[1].execute("UPDATE tasks SET args = 'by 1' WHERE id = %s", [changed])
    borrowed = api.add_task("app2", name="borrowed", conn=users[0]).id
    needs |= {changed: {names[0], names[1]}, borrowed: {names[0], names[2]}}
    launchers = [claim.register_launcher(u, job_mode="mpi", num_nodes=8)["id"] for u in users]

    class Trusts(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            db.execute("DELETE FROM trust")
            self.model: set[tuple[str, str]] = set()
            self.recorded = count(db, "changes")

        @rule(truster=st.integers(0, 2), trustee=st.integers(0, 2))
        def grant(self, truster: int, trustee: int) -> None:
            pair = (names[truster], names[trustee])
            if truster == trustee:
                with pytest.raises(InvalidInput, match="always trusted"):
                    api.add_trust([pair[1]], conn=users[truster])
                return
            added = api.add_trust([pair[1]], conn=users[truster])
            assert added == ([] if pair in self.model else [pair[1]])
            self.recorded += len(added)
            self.model.add(pair)

        @rule(truster=st.integers(0, 2), trustee=st.integers(0, 2))
        def withdraw(self, truster: int, trustee: int) -> None:
            pair = (names[truster], names[trustee])
            if pair not in self.model:
                with pytest.raises(NotFound):
                    api.remove_trust([pair[1]], conn=users[truster])
                return
            assert api.remove_trust([pair[1]], conn=users[truster]) == [pair[1]]
            self.recorded += 1
            self.model.discard(pair)

        @invariant()
        def follows_the_model(self) -> None:
            rows = api.list_trust(conn=users[0])
            assert {(t.truster, t.trustee) for t in rows} == self.model
            for user, name in zip(users, names, strict=True):
                assert claim.trusted_users(user) == sorted(
                    {name, ADMIN_ROLE} | {b for a, b in self.model if a == name})
            assert count(db, "changes") == self.recorded

        @invariant()
        def claims_follow_the_model(self) -> None:
            for user, name, launcher in zip(users, names, launchers, strict=True):
                trusted = {name} | {b for a, b in self.model if a == name}
                with user.transaction(force_rollback=True):
                    runs = claim.claim_for_run(user, launcher, Resources.on_hosts(["n"] * 8),
                                               policy.largest_first)
                assert {c.task.id for c in runs} == {t for t, who in needs.items()
                                                     if who <= trusted}

    run_state_machine_as_test(Trusts, settings=settings(
        max_examples=20, stateful_step_count=12, deadline=None, database=None,
        suppress_health_check=list(HealthCheck)))
