"""A viewer's page, with real UNIX users: carol (a viewer) runs ``balsam web`` on alice's project
where bob (a member) ran tasks. Her page reads as her: the tasks ``balsam ls`` shows her, output
files with her own rights, never through a symlink bob planted."""

from __future__ import annotations

import json
import pwd
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.pg, pytest.mark.multiuser, pytest.mark.slow]

ACTIVATE = '. balsamactivate "$P" >/dev/null'
BOB_WORK = f"""{ACTIVATE}
balsam app --name hello --executable "echo hello from"
for name in shared private trap; do
    balsam job --name $name --workflow W --application hello --args $name >/dev/null
done
balsam launcher --consume-all --job-mode serial --nodes 2 >/dev/null 2>&1
chmod 600 "$P"/data/W/private_2/private.out
rm "$P"/data/W/trap_3/trap.out && ln -s /home/carol/secret.txt "$P"/data/W/trap_3/trap.out
"""


def sh(run_as, user: str, root: Path, script: str):
    return run_as(user, ["bash", "-c", script], cwd=root.parent, env={"P": str(root)},
                  timeout=300)


SESSIONS = """from balsam.db import connect
from balsam.project import Project
with connect(Project.from_env()) as db:
    rows = db.execute("SELECT DISTINCT usename FROM pg_stat_activity "
                      "WHERE application_name = 'balsam-web'").fetchall()
print(" ".join(r["usename"] for r in rows))
"""


def test_a_viewer_sees_what_the_cli_shows_her_with_her_own_rights(run_as, shared_dir, serve_as,
                                                                   page, shoot):
    run_as("alice", ["balsam", "init", "proj"], cwd=shared_dir)
    root = shared_dir / "proj"
    sh(run_as, "alice", root, f"{ACTIVATE} && balsam server --add-user bob "
                              "&& balsam server --add-user carol --role viewer")
    secret = Path(pwd.getpwnam("carol").pw_dir) / "secret.txt"
    run_as("carol", ["bash", "-c", f"umask 077 && echo carols-secret > {secret}"])
    sh(run_as, "bob", root, BOB_WORK)
    listed = json.loads(sh(run_as, "carol", root,
                           f"{ACTIVATE} && balsam ls --json --limit 1000").stdout)
    try:
        with serve_as("carol", root) as web:
            page.goto(web.url("/tasks"))
            expect(page.locator("#status")).to_have_text("live")
            assert page.locator("header .who").inner_text() == "read-only · carol"
            shown = [int(t) for t in page.locator("table.tasks tbody tr td:first-child")
                     .all_inner_texts()]
            assert sorted(shown) == sorted(t["id"] for t in listed) and len(shown) == 3
            shoot(page, "viewer-tasks")
            by_name = {t["name"]: t["id"] for t in listed}
            page.goto(web.base + f"tasks/{by_name['shared']}")
            expect(page.locator("#output")).to_have_text("hello from shared")
            page.goto(web.base + f"tasks/{by_name['private']}")
            expect(page.locator("#output-error")).to_contain_text("(permission denied)")
            page.goto(web.base + f"tasks/{by_name['trap']}")
            expect(page.locator("#output-error")).to_contain_text("is a symbolic link")
            assert "carols-secret" not in page.content()
            shoot(page, "viewer-symlink-refused")
            for path in ("/", "/failures", "/launchers", "/charts"):
                page.goto(web.base.rstrip("/") + path)
                expect(page.locator("#status")).to_have_text("live")
            sessions = run_as("alice", ["python", "-c", SESSIONS],
                              env={"BALSAM_DB_PATH": str(root)}).stdout.split()
            assert sessions == ["carol"]
    finally:
        secret.unlink(missing_ok=True)
