"""Multi-user collaboration with real UNIX users: alice owns the project, bob is a member, carol
a viewer or nobody, dave is outside the group. Group modes, roles, authentication, the audit.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import tempfile
import time
from pathlib import Path

import pytest

from balsam.project import Project
from balsam_testing.pg import ACTIVATE, balsam_as, sh, sql_as, write_as

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]


def init(run_as, where: Path, name: str = "my-balsam-project", *args: str) -> Path:
    run_as("alice", ["balsam", "init", name, *args], cwd=where)
    return where / name


balsam = balsam_as


def denied(table: str) -> str:
    """What a role without the grant is told, as ``sql_as`` reports it."""
    return (f"PermissionDenied: permission denied for table {table} (your role in this project "
            "may not do this: a viewer only reads; the project's owner grants more with 'balsam "
            "server --add-user NAME')")


def modes(root: Path) -> dict[str, tuple[int, str]]:
    """``relative path -> (mode, group)`` of every path outside balsamdb/."""
    found = {}
    for path in [root, *root.rglob("*")]:
        rel = path.relative_to(root).as_posix()
        if rel.startswith("balsamdb/") or path.is_symlink() or path.is_socket():
            continue
        st = path.lstat()
        found[rel] = (stat.S_IMODE(st.st_mode), grp.getgrgid(st.st_gid).gr_name)
    return found


# --- files -------------------------------------------------------------------------------------


#: The layout of a new project (docs/security.md): the control zone is the owner's, readable
#: by the group; the work zone is group-writable, sticky at the top.
LAYOUT = {
    ".": 0o2750, "server-info": 0o640, "server-ca.pem": 0o640, "job-templates": 0o2750,
    ".pgsocket": 0o2750, "data": 0o3770, "log": 0o3770, "qsubmit": 0o3770,
}


def test_init_in_a_group_directory_shares_everything(run_as, shared_dir):
    root = init(run_as, shared_dir)
    found = modes(root)
    assert found.pop("balsamdb")[0] == 0o700
    assert found == {rel: (mode, "balsamtest") for rel, mode in LAYOUT.items()}
    assert all(p.lstat().st_uid == pwd.getpwnam("alice").pw_uid for p in root.iterdir())
    assert not (root / "log/postgresql.log").exists()  # the server's log is in balsamdb/
    info = Project.load(root).info
    assert info.group == "balsamtest" and info.umask == 0o007
    for user in ("alice", "bob"):
        check = balsam(run_as, user, root, "perms", "check")
        assert "shared with group balsamtest" in check.stdout


def test_init_with_group_option(run_as, unix_users):
    private = Path(tempfile.mkdtemp(prefix="balsam-alice-"))
    try:
        os.chown(private, *_ids("alice"))
        root = init(run_as, private, "grouped", "--group", unix_users.group)
        assert grp.getgrgid(private.stat().st_gid).gr_name == "alice"
        found = modes(root)
        assert found["."] == (0o2750, "balsamtest") and found["data"] == (0o3770, "balsamtest")
        assert found["server-info"] == (0o640, "balsamtest")
        assert Project.load(root).info.group == "balsamtest"
        for bad, message in (("nosuchgroup", "no such group 'nosuchgroup'"),
                             (unix_users.outsider, "you (alice) are not in group dave")):
            proc = run_as("alice", ["balsam", "init", "other", "--group", bad], cwd=private,
                          check=False)
            assert proc.returncode == 1 and message in proc.stderr, proc.stderr
            assert not (private / "other").exists()
    finally:
        shutil.rmtree(private)


def _ids(user: str) -> tuple[int, int]:
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def test_perms_fix_repairs_what_each_owner_may(run_as, shared_dir):
    root = init(run_as, shared_dir)
    sh(run_as, "bob", root, 'umask 077 && mkdir "$P/data/bobs" && touch "$P/data/bobs/out"')
    sh(run_as, "alice", root, 'umask 022 && echo note > "$P/log/alice-notes.txt"')
    check = balsam(run_as, "alice", root, "perms", "check", check=False)
    assert check.returncode == 1
    assert "data/bobs: mode 2700, needs 2770 (group rwx, setgid) (owner bob)" in check.stdout
    assert "log/alice-notes.txt: mode 0644, needs 0660 (group rw) (owner alice)" in check.stdout
    fix = balsam(run_as, "alice", root, "perms", "fix", check=False)
    assert fix.returncode == 1 and "only bob can fix it" in fix.stdout
    fix = balsam(run_as, "bob", root, "perms", "fix")
    assert "fixed data/bobs/out" in fix.stdout
    assert balsam(run_as, "alice", root, "perms", "check").returncode == 0


# --- users and roles ---------------------------------------------------------------------------


def test_owner_adds_a_member_who_works_and_an_outsider_is_refused(run_as, shared_dir):
    root = init(run_as, shared_dir)
    out = sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob").stdout
    assert "bob may now use the project as member" in out
    assert ("A launcher runs a task only if its user trusts the task's owner and whoever last "
            "changed the task or its app: for yours to run what bob owns or changes, run "
            "'balsam trust add bob' (or start them with --trust bob); for bob's to run yours, "
            "or their tasks of your apps, bob runs 'balsam trust add alice'. Undo with "
            "'balsam trust rm'.") in out
    # carol is in the group but was not added.
    carol = sh(run_as, "carol", root, ACTIVATE, check=False)
    assert carol.returncode == 1
    assert carol.stderr.strip().splitlines()[-1] == (
        "Error: you (carol) are not authorised on this project; ask its owner alice to run: "
        "balsam server --add-user carol")
    # dave is not even in the group.
    dave = run_as("dave", ["bash", "-c", ACTIVATE], env={"P": str(root)}, check=False)
    assert dave.returncode == 1
    assert dave.stderr.strip() == (f"Error: cannot reach {root}: permission denied (are you in "
                                   f"the project's group?)")
    # bob's first activation gave him a password only he can read.
    sh(run_as, "bob", root, ACTIVATE)
    uuid = Project.load(root).info.uuid
    credentials = Path("/home/bob/.balsam/credentials")
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o700
    assert stat.S_IMODE((credentials / uuid).stat().st_mode) == 0o600
    results = sql_as(
        run_as, "bob", root,
        "INSERT INTO apps (name, executable) VALUES ('hello', '/bin/echo') RETURNING owner",
        "INSERT INTO tasks (name, workflow, app_id, state) SELECT 't1', 'X', id, 'READY' "
        "FROM apps RETURNING owner",
        "UPDATE tasks SET args = 'world' WHERE name = 't1'",
        "UPDATE tasks SET state = 'USER_KILLED' WHERE name = 't1'",
        "CREATE TABLE mine (i int)",
        "DROP TABLE tasks",
        "CREATE ROLE carol LOGIN",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'balsam_admin'",
    )
    assert results[:4] == [[{"owner": "bob"}], [{"owner": "bob"}], "ok", "ok"]
    assert all(r.startswith("PermissionDenied: permission denied") for r in results[4:]), results
    # bob may not run the server or manage users.
    for args, what in ((["server", "stop"], "stop the server"),
                       (["server", "start"], "start the server"),
                       (["server", "--add-user", "carol"], "manage users"),
                       (["server", "--list-users"], "manage users"),
                       (["server", "migrate"], "migrate the schema")):
        proc = balsam(run_as, "bob", root, *args, check=False)
        assert proc.returncode == 1, args
        assert f"only the project owner (alice) can {what}; you are bob" in proc.stderr
    pg_ctl = run_as("bob", ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", str(root / "balsamdb"),
                            "stop"], check=False)
    assert pg_ctl.returncode != 0
    # The audit trail names who did what; alice's change is recorded as hers.
    sql_as(run_as, "alice", root, "UPDATE tasks SET state = 'READY' WHERE name = 't1'")
    events = sql_as(run_as, "alice", root, "SELECT to_state, db_user FROM task_events ORDER BY id")
    assert events == [[{"to_state": "READY", "db_user": "bob"},
                       {"to_state": "USER_KILLED", "db_user": "bob"},
                       {"to_state": "READY", "db_user": "alice"}]]


def test_viewer_reads_and_dropped_users_are_cut_off(run_as, shared_dir):
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam server --add-user carol --role viewer")
    sql_as(run_as, "bob", root,
           "INSERT INTO apps (name, executable) VALUES ('hello', '/bin/echo')")
    assert sql_as(run_as, "carol", root, "SELECT name, owner FROM apps",
                  "INSERT INTO apps (name, executable) VALUES ('mine', '/bin/true')",
                  "UPDATE apps SET description = 'x'") == [
        [{"name": "hello", "owner": "bob"}],
        denied("apps"),
        denied("apps")]
    listed = balsam(run_as, "alice", root, "server", "--list-users").stdout
    rows = [ln.split()[:2] for ln in listed.splitlines()[1:]]
    assert rows == [["balsam_admin", "admin"], ["alice", "owner"], ["bob", "member"],
                    ["carol", "viewer"]]
    # Promote carol, then drop her: she is refused again, bob is untouched.
    balsam(run_as, "alice", root, "server", "--add-user", "carol", "--role", "member")
    assert sql_as(run_as, "carol", root, "UPDATE apps SET description = 'x'") == ["ok"]
    dropped = balsam(run_as, "alice", root, "server", "--drop-user", "carol")
    assert "carol may no longer use the project" in dropped.stdout
    carol = sh(run_as, "carol", root, ACTIVATE, check=False)
    assert carol.returncode == 1 and "not authorised" in carol.stderr
    assert sql_as(run_as, "bob", root, "SELECT count(*) AS n FROM apps") == [[{"n": 1}]]
    again = balsam(run_as, "alice", root, "server", "--drop-user", "carol", check=False)
    assert again.returncode == 1 and "carol is not a user of this project" in again.stderr


def test_invalid_user_names_are_refused_before_any_sql(run_as, shared_dir):
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, ACTIVATE)
    count = "SELECT count(*) AS n FROM pg_roles"
    before = sql_as(run_as, "alice", root, count)
    for name in ("Bob", "bob; DROP TABLE tasks", 'x" SUPERUSER --', "1bob", "pg_read_all_data"):
        proc = balsam(run_as, "alice", root, "server", "--add-user", name, check=False)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"Error: invalid user name {name!r}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert sql_as(run_as, "alice", root, count) == before
    usage = balsam(run_as, "alice", root, "server", "--role", "viewer", check=False)
    assert usage.returncode == 2 and "--role goes with --add-user" in usage.stderr


def test_adding_a_user_outside_the_group_warns(run_as, shared_dir, unix_users):
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, ACTIVATE)
    proc = balsam(run_as, "alice", root, "server", "--add-user", unix_users.outsider)
    assert "warning: dave is not in the project's group balsamtest" in proc.stderr
    assert "usermod -a -G balsamtest dave" in proc.stderr


# --- authentication ----------------------------------------------------------------------------


def test_tcp_with_the_generated_password(run_as, shared_dir):
    root = init(run_as, shared_dir)
    hba = [ln.split() for ln in (root / "balsamdb/pg_hba.conf").read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    assert "trust" not in {word for line in hba for word in line}
    assert {line[0] for line in hba} == {"local", "hostssl", "hostnossl"}
    assert [line[-1] for line in hba if line[0] == "hostnossl"] == ["reject"]
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    tcp = {"BALSAM_DB_TRANSPORT": "tcp", "BALSAM_DB_HOST": "127.0.0.1"}
    whoami = "SELECT current_user AS me, inet_client_addr()::text AS addr"
    # bob's very first activation is over TCP: it sets his password through the socket first.
    assert sql_as(run_as, "bob", root, whoami, **tcp) == [[{"me": "bob", "addr": "127.0.0.1/32"}]]
    stored = Path(f"/home/bob/.balsam/credentials/{Project.load(root).info.uuid}")
    password = stored.read_text()
    assert sql_as(run_as, "alice", root, whoami, **tcp)[0][0]["me"] == "alice"
    verifier = sql_as(run_as, "alice", root,
                      "SELECT rolpassword FROM pg_authid WHERE rolname = 'bob'", ADMIN="1")[0][0]
    assert verifier["rolpassword"].startswith("SCRAM-SHA-256$")
    # A second activation keeps the password; a wrong one is noticed and replaced.
    sql_as(run_as, "bob", root, whoami, **tcp)
    assert stored.read_text() == password
    sh(run_as, "bob", root, 'echo wrong > "$F"', F=str(stored))
    assert sql_as(run_as, "bob", root, whoami, **tcp)[0][0]["me"] == "bob"
    assert stored.read_text() not in (password, "wrong\n")
    # Without the socket (a compute node) a wrong password is a clear error, not a hang.
    sh(run_as, "bob", root, 'echo wrong > "$F"', F=str(stored))
    check = ("from balsam.project import Project; from balsam_pgserver import auth; "
             "auth._check_tcp(Project.from_env(), 'bob')")
    proc = sh(run_as, "bob", root, 'python -c "$CODE"', check=False, CODE=check,
              BALSAM_DB_PATH=str(root), **tcp)
    assert "NotAuthorised: your (bob) stored database password was refused" in proc.stderr
    stored.unlink()
    proc = sh(run_as, "bob", root, 'python -c "$CODE"', check=False, CODE=check,
              BALSAM_DB_PATH=str(root), **tcp)
    assert "have no database password for this project on this host yet" in proc.stderr
    # Three shells activating at once for the first time agree with the server in the end.
    sh(run_as, "bob", root, f"({ACTIVATE}) & ({ACTIVATE}) & ({ACTIVATE}) & wait")
    sh(run_as, "bob", root, 'python -c "$CODE"', CODE=check, BALSAM_DB_PATH=str(root), **tcp)


# --- umask -------------------------------------------------------------------------------------

ADD_TASKS = """
from balsam import api
api.add_app("hello", "/bin/echo")
api.add_task("hello", name="x1", workflow="X", args="from X")
api.add_task("hello", name="y1", workflow="Y", args="from Y")
"""
STATES = "SELECT name, state, owner FROM tasks ORDER BY name"
TEMPLATE = """#!/bin/bash
# bob's own template, found in $BALSAM_HOME/job-templates (~/.balsam/job-templates by default)
echo "bob's template ran"
umask {{ umask }}
export PATH={{ bin_dir | quote }}:"$PATH"
cd {{ project_dir | quote }} || exit 1
source {{ activate | quote }} {{ project_dir | quote }} || exit 1
exec {{ launcher }} --nodes {{ job.num_nodes }}
"""


def test_bobs_launcher_leaves_files_alice_can_write(run_as, shared_dir):
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob")
    home = shared_dir / "bob-balsam-home"  # bob's ~/.balsam for this test only
    run_as("bob", ["mkdir", "-m", "700", "-p", str(home / "job-templates")])
    # His alone: a template runs as whoever renders it.
    write_as(run_as, "bob", home / "job-templates/local.sh", TEMPLATE, 0o600)
    bob = {"BALSAM_HOME": str(home)}
    # bob's shell umask would lock everyone else out; balsam applies the project's instead.
    sh(run_as, "bob", root, f'umask 077 && {ACTIVATE} && python -c "$CODE" && '
                            "balsam launcher --consume-all --wf-filter X --job-mode serial",
       CODE=ADD_TASKS, **bob)
    assert sql_as(run_as, "alice", root, STATES) == [[
        {"name": "x1", "state": "JOB_FINISHED", "owner": "bob"},
        {"name": "y1", "state": "READY", "owner": "bob"}]]
    made = {rel: m for rel, m in modes(root).items() if rel.startswith(("data/X", "log/launch"))}
    assert made and all(m == (0o2770 if (root / rel).is_dir() else 0o660, "balsamtest")
                        for rel, m in made.items()), made
    [workdir] = (root / "data/X").iterdir()
    sh(run_as, "alice", root, 'umask g=rwx && echo "alice was here" >> "$W/x1.out" && '
                              'touch "$W/alice.txt" && '
                              'echo note >> "$P/log/launcher_1.log"', W=str(workdir))
    assert "from X" in (workdir / "x1.out").read_text()
    # The batch job: bob's template is used and the script sets the project's umask.
    submit = sh(run_as, "bob", root, f"umask 077 && {ACTIVATE} && "
                                     "balsam submit-launch -A P -q Q -t 15 -n 5 --job-mode=mpi "
                                     "--wf-filter Y", **bob)
    assert "Submitted batch job 1" in submit.stdout
    script = (root / "qsubmit/qlaunch1.sh").read_text()
    assert "bob's own template" in script and "\numask 0007\n" in script
    deadline = time.monotonic() + 90
    while sql_as(run_as, "alice", root, STATES)[0][1]["state"] != "JOB_FINISHED":
        assert time.monotonic() < deadline, (root / "qsubmit/qlaunch1.out").read_text()
        time.sleep(1)
    assert "bob's template ran" in (root / "qsubmit/qlaunch1.out").read_text()
    owners = sql_as(run_as, "alice", root, "SELECT DISTINCT owner FROM launchers",
                    "SELECT DISTINCT owner FROM batch_jobs",
                    "SELECT DISTINCT db_user FROM task_events")
    assert owners == [[{"owner": "bob"}], [{"owner": "bob"}], [{"db_user": "bob"}]]
    assert balsam(run_as, "alice", root, "perms", "check").returncode == 0


def test_trust_and_the_audit_between_real_users(run_as, shared_dir):
    """bob trusts alice through the CLI; what he and carol try around it, with their own
    database roles and raw SQL, is refused or recorded as theirs."""
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam server --add-user carol --role viewer")
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam app --name sim --executable /bin/echo "
                              "&& balsam job --name t --workflow w --app sim --args hi")
    added = balsam(run_as, "bob", root, "trust", "add", "alice")
    assert "Your launchers now run what alice owns or changes" in added.stdout
    viewer = balsam(run_as, "carol", root, "trust", "add", "alice", check=False)
    assert viewer.returncode == 1 and viewer.stderr.startswith("Error: permission denied")
    assert sql_as(
        run_as, "bob", root,
        "INSERT INTO trust (truster, trustee) VALUES ('alice', 'bob')",
        "INSERT INTO task_events (task_id, to_state) VALUES (1, 'JOB_FINISHED')",
        "DELETE FROM changes",
        "UPDATE tasks SET changed_by = 'balsam_admin' WHERE id = 1",
        "UPDATE apps SET executable = '/bin/sh' WHERE name = 'sim' RETURNING changed_by",
    ) == ["PermissionDenied: permission denied: new row violates row-level security policy "
          "for table \"trust\"",
          denied("task_events"),
          denied("changes"),
          "PermissionDenied: permission denied: tasks.changed_by and changed_at are set by the "
          "database, not by the writer",
          [{"changed_by": "bob"}]]
    listed = json.loads(balsam(run_as, "alice", root, "trust", "ls", "--json").stdout)
    assert [(t["truster"], t["trustee"]) for t in listed] == [("bob", "alice")]
    mine = balsam(run_as, "alice", root, "trust", "ls", "-o", "plain").stderr
    assert mine.strip() == "your launchers run the tasks of: alice, balsam_admin"
    balsam(run_as, "alice", root, "rm", "1")
    events = json.loads(balsam(run_as, "carol", root, "ls", "--history", "1", "--json").stdout)
    changes = json.loads(balsam(run_as, "carol", root, "ls", "--changes", "1", "--json").stdout)
    assert [(e["to_state"], e["db_user"]) for e in events] == [("READY", "alice")]
    assert [(c["field"], c["changed_by"]) for c in changes] == [("deleted", "alice")]
    changes = sql_as(run_as, "carol", root, "SELECT entity, field, changed_by FROM changes "
                                            "ORDER BY id")
    assert changes == [[{"entity": "trust", "field": "bob", "changed_by": "bob"},
                        {"entity": "app", "field": "executable", "changed_by": "bob"},
                        {"entity": "task", "field": "deleted", "changed_by": "alice"}]]


#: What bob writes for alice's terminal: a new window title, a cleared screen, a line hidden
#: from her (conceal), a C1 control sequence and reordered text (SQL escape-string syntax).
PLANTED = r"E'ok\x1b]0;pwned\x07\x1b[2J\x1b[8mhidden\x1b[0m' || chr(155) || '31m' || chr(8238)"


def test_a_members_text_never_acts_on_the_owners_terminal(run_as, shared_dir):
    """bob, a member, writes terminal control sequences into a task and an app with his own
    role (no CLI check in the way); every listing alice reads shows them as escapes."""
    root = init(run_as, shared_dir)
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam app --name sim --executable /bin/echo "
                              "&& balsam job --name t --workflow w --app sim --args hi")
    assert sql_as(run_as, "bob", root,
                  f"UPDATE tasks SET args = {PLANTED}, description = {PLANTED} WHERE id = 1",
                  f"UPDATE apps SET description = {PLANTED} WHERE name = 'sim'") == ["ok", "ok"]
    raw = sql_as(run_as, "alice", root, "SELECT args FROM tasks")[0][0]["args"]
    assert raw.startswith("ok\x1b]0;pwned\x07") and raw.endswith("\x9b31m\u202e")
    shown = {" ".join(args): balsam(run_as, "alice", root, *args).stdout for args in (
        ("ls", "--wide"), ("ls", "--wide", "-o", "table"), ("ls", "--fields", "+description"),
        ("ls", "--changes", "1"), ("ls", "--tree"), ("ls", "--json"), ("ls", "--tree", "--json"),
        ("app", "ls", "--fields", "+description"), ("ls", "-o", "tsv", "--fields", "id,args"))}
    for listing, out in shown.items():
        assert "pwned" in out or "hidden" in out or listing.startswith("ls --tree"), listing
        c1 = "" if "tsv" in listing else "\x9b\u202e"  # COPY's format has no escape for them
        assert not any(c in out for c in "\x1b\x07" + c1), (listing, out)
    assert "ok\\x1b]0;pwned\\x07\\x1b[2J\\x1b[8mhidden" in shown["ls --wide"]
