"""The seed, replayed literally: legacy Balsam's "Multi-user collaboration" page as alice (the
owner) and bob (a collaborator), then the work the page promises (tasks, launchers, batch jobs)
and what the page warns about (carol, not added; files every member can write)."""

from __future__ import annotations

import json
import stat

import pytest

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

# "Multi-user setup": the owner, in a directory of the UNIX group.
ALICE_SETUP = r"""
set -e
cd "$SHARED"
balsam init my-balsam-project
find my-balsam-project/ -type d -exec chmod g+rwx {} \;
find my-balsam-project/ -type f -exec chmod  g+rw {}   \;
find my-balsam-project/ -executable -type f -exec chmod g+x {} \;
chmod 700 my-balsam-project/balsamdb  # otherwise, postgres will REFUSE to start !!
. balsamactivate my-balsam-project
balsam server --add-user bob
"""

# "Activate Balsam DB and set umask", then work: tasks, a launcher, a batch job.
BOB_WORK = r"""
set -e
cd "$SHARED"
source balsamactivate my-balsam-project
umask g=rwx
wait_finished() {  # wait_finished WORKFLOW COUNT
    for i in $(seq 120); do
        n=$(balsam ls --wf "$1" --state JOB_FINISHED --json | grep -c '"id"' || true)
        [ "$n" = "$2" ] && return 0
        sleep 0.5
    done
    echo "workflow $1 did not finish" >&2; return 1
}
balsam app --name hello --executable "echo hello,"
balsam job --name hi --workflow X --application hello --args "World!"
balsam job --name later --workflow Y --application hello --args "batch job"
balsam ls
balsam launcher --wf-filter X &
launcher=$!
wait_finished X 1
kill -TERM $launcher
wait $launcher
balsam submit-launch -A P -q Q -t 15 -n 5 --job-mode=mpi
wait_finished Y 1
"""

ALICE_WORK = r"""
set -e
cd "$SHARED"
source balsamactivate my-balsam-project
umask g=rwx
balsam ls
echo "checked by alice" >> my-balsam-project/data/X/hi_1/hi.out
touch my-balsam-project/data/Y/later_2/alice-was-here
balsam job --name mine --workflow Z --application hello --json
"""

BOB_MODIFY_AND_KILL = r"""
set -e
cd "$SHARED"
source balsamactivate my-balsam-project
umask g=rwx
balsam modify "$TASK" args "changed by bob"
balsam kill -y "$TASK"
balsam ls --history "$TASK" --json
balsam ls --changes "$TASK" --json
"""


def test_seed_replayed_literally_as_alice_and_bob(run_as, shared_dir):
    env = {"SHARED": str(shared_dir)}
    root = shared_dir / "my-balsam-project"

    out = run_as("alice", ["bash", "-c", ALICE_SETUP], env=env).stdout
    assert "Created Balsam project" in out and "bob may now use the project as member" in out

    out = run_as("bob", ["bash", "-c", BOB_WORK], env=env, timeout=300).stdout
    assert "Added task 1 (READY) in data/X/hi_1" in out
    assert "Submitted batch job 1" in out
    assert "hello, World!" in (root / "data/X/hi_1/hi.out").read_text()
    assert "hello, batch job" in (root / "data/Y/later_2/later.out").read_text()
    script = (root / "qsubmit/qlaunch1.sh").read_text()
    assert "\numask 0007\n" in script and "--job-mode mpi" in script

    # bob's umask and launcher left everything writable by the group.
    for path in [root / "data/X", *(root / "data").rglob("*"), *(root / "log").glob("launcher*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o060 == 0o060, f"{path} {mode:o}"
    out = run_as("alice", ["bash", "-c", ALICE_WORK], env=env).stdout
    assert "JOB_FINISHED" in out and "hi" in out and "later" in out
    mine = json.loads(out[out.index("{"):])
    assert mine["owner"] == "alice" and mine["state"] == "READY"

    # bob modifies and kills alice's task; the history says who did what.
    out = run_as("bob", ["bash", "-c", BOB_MODIFY_AND_KILL],
                 env={**env, "TASK": str(mine["id"])}).stdout
    history, changes = json.loads(out[out.index("["):out.rindex("[")]), json.loads(
        out[out.rindex("["):])
    assert [(e["to_state"], e["db_user"]) for e in history] == [("READY", "alice"),
                                                               ("USER_KILLED", "bob")]
    assert [(c["field"], c["new_value"], c["changed_by"]) for c in changes] == [
        ("args", "changed by bob", "bob")]

    # carol is in the group but was never added.
    carol = run_as("carol", ["bash", "-c", 'cd "$SHARED" && source balsamactivate '
                                           "my-balsam-project"], env=env, check=False)
    assert carol.returncode != 0
    assert ("you (carol) are not authorised on this project; ask its owner alice to run: "
            "balsam server --add-user carol") in carol.stderr

    # The page's chmod recipe is no longer needed, and everything is still shared.
    check = run_as("bob", ["balsam", "perms", "check"], env={"BALSAM_DB_PATH": str(root)})
    assert "shared with group balsamtest" in check.stdout
