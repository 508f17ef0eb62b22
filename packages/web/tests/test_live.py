"""Live updates in a real browser: a real ``balsam launcher`` process finishes tasks and the open
page follows without reloading; when the page's notifications are cut, it polls and recovers."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from balsam import api
from balsam.db import connect
from balsam_testing import launchers as lt

pytestmark = [pytest.mark.pg, pytest.mark.slow]
#: Pages refresh by themselves every 15 s at most; a change must show long before that.
SHOWN_WITHIN_MS = 5000


def finished(db, workflow: str) -> int:
    return db.execute("SELECT count(*) AS n FROM tasks WHERE workflow = %s "
                      "AND state = 'JOB_FINISHED'", (workflow,)).fetchone()["n"]


#: Whether the overview shows at least n finished tasks in the workflow "live".
SHOWS_FINISHED = """n => [...document.querySelectorAll("table.workflows tbody tr")].some(
    r => r.cells[0].textContent.trim() === "live" && Number(r.cells[3].textContent) >= n)"""


def test_page_follows_a_launcher_finishing_tasks(project, web, page, shoot):
    with connect(project) as db:
        api.add_app("nap", "/bin/sleep", conn=db)
        api.add_tasks([{"app": "nap", "workflow": "live", "name": f"nap{i}", "args": "1.5"}
                       for i in range(6)], conn=db)
        page.goto(web.url("/"))
        expect(page.locator("#status")).to_have_text("live")
        page.wait_for_function(SHOWS_FINISHED, arg=0)
        page.evaluate("window.notReloaded = true")
        launcher = lt.start_launcher(project.root, "--consume-all", "--job-mode", "serial",
                                     "--nodes", "2", "--poll-interval", "0.5")
        try:
            seen, deadline = 0, time.monotonic() + 120
            while seen < 6:
                assert time.monotonic() < deadline, "the launcher did not finish its tasks"
                now = finished(db, "live")
                if now > seen:  # the page shows it well before its periodic refresh
                    page.wait_for_function(SHOWS_FINISHED, arg=now, timeout=SHOWN_WITHIN_MS)
                    seen = now
                time.sleep(0.05)
            assert launcher.wait(60) == 0
        finally:
            if launcher.poll() is None:
                lt.kill_session(launcher)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("table.workflows tr:has(a:text-is('live')) td").nth(6)).to_have_text(
        "done")
    assert "updated" in page.locator("#updated").inner_text()
    shoot(page, "overview-after-launcher")


def test_lost_notifications_fall_back_to_polling_and_recover(project, web, page):
    with connect(project) as db:
        api.add_app("nap", "/bin/sleep", conn=db)
        [task] = api.add_tasks([{"app": "nap", "workflow": "w", "name": "t"}], conn=db)
        page.goto(web.url(f"/tasks/{task}"))
        expect(page.locator("#status")).to_have_text("live")
        # Cut the page's listening connection, and change the task while nobody listens.
        cut = db.execute("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
                         "WHERE application_name = 'balsam-web' AND query LIKE 'LISTEN%'")
        assert cut.fetchone()["n"] == 1
        expect(page.locator("#status")).to_have_text("polling")
        api.kill([task], conn=db)
        expect(page.locator("table.fields")).to_contain_text("USER_KILLED", timeout=10000)
        expect(page.locator("#status")).to_have_text("live", timeout=15000)
        api.set_state([task], "READY", conn=db)
        expect(page.locator("table.fields")).to_contain_text("READY", timeout=SHOWN_WITHIN_MS)
