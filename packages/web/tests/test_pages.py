"""Every page of a real ``balsam web`` on a seeded project, in a real headless Chromium: what each
shows, the task list's filters and pagination, the token, bad input, and hostile task names."""

from __future__ import annotations

import html
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.pg, pytest.mark.slow]


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) of a GET, without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def rows(page, selector: str = "table.tasks tbody tr") -> list[list[str]]:
    return [[c.strip() for c in r.locator("td").all_inner_texts()]
            for r in page.locator(selector).all()]


def settled(page):
    """The page, once its event stream is open (screenshots show the badge "live")."""
    expect(page.locator("#status")).to_have_text("live")
    return page


def test_each_page_on_a_seeded_project(seeded, web, page, shoot):
    page.goto(web.url("/"))
    expect(page).to_have_url(web.base)  # the token left the URL for a cookie
    expect(page.locator("#status")).to_have_text("live")
    cards = page.locator(".card").all_inner_texts()
    for card in ("130\ntasks", "4\nrunning", "6\nfailures in the last hour"):
        assert card in cards
    workflows = {r[0]: r for r in rows(page, "table.workflows tbody tr")}
    assert workflows["campaign"][2:5] == ["120", "60", "54"]
    assert workflows["analysis"][2:5] == ["10", "0", "10"]
    assert workflows["analysis"][6] == "unknown" and re.fullmatch(r"\d+(h \d+)?min",
                                                                  workflows["campaign"][6])
    assert page.locator("table.workflows svg rect title").first.text_content().endswith("%)")
    assert "exit 3: ValueError: bad seed" in page.locator("td.cause").inner_text()
    assert "nid0001" in page.locator("tr.alive").inner_text()
    shoot(page, "overview")

    page.click("nav >> text=Tasks")
    expect(page.locator("p.count")).to_have_text("130 matching tasks, newest first.")
    assert rows(page)[0][:5] == ["130", "post-9", "analysis", "post", "AWAITING_PARENTS"]
    shoot(settled(page), "tasks")

    page.fill("input[name=name]", "sim-000")
    page.click("text=Filter")
    page.click(f"a[href='/tasks/{seeded.output_task}']")
    expect(page.locator("h1")).to_have_text(f"Task {seeded.output_task} sim-000")
    assert page.locator("#output").inner_text().splitlines()[-1] == "step 999: energy 499.500"
    assert "The last lines of" in page.locator("main").inner_text()
    history = page.locator("table").nth(1).inner_text()
    assert history.count("\n") >= 7 and "JOB_FINISHED" in history
    page.locator("svg a", has_text=f"{seeded.waiting[0]} post-0").click()  # the DAG's child
    expect(page.locator("h1")).to_have_text(f"Task {seeded.waiting[0]} post-0")
    dag = page.locator(".dag svg")
    expect(dag.locator("a")).to_have_count(3)  # two parents and the task itself
    assert "no output yet" in page.locator("#output-error").inner_text()
    shoot(settled(page), "task")

    page.click("nav >> text=Failures")
    expect(page.locator("td.cause")).to_have_text("exit 3: ValueError: bad seed")
    assert rows(page, "tbody tr")[0][1] == "6"
    shoot(settled(page), "failures")

    page.click("nav >> text=Launchers")
    live = page.locator("tr.alive")
    expect(live).to_have_count(1)
    assert "4242" in live.inner_text() and "alive" in live.inner_text()
    expect(page.locator("tr.dead")).to_have_count(0)
    page.click("text=All launchers, also ended ones")
    expect(page.locator("tr.dead")).to_have_count(1)
    assert "running" in page.locator("td.jobstate").inner_text()
    shoot(settled(page), "launchers")

    page.click("nav >> text=Utilisation")
    text = page.locator("p.count").inner_text()
    assert "60 tasks finished" in text and "Utilisation" in text
    busy = float(re.search(r"Utilisation ([\d.]+)%", text).group(1))
    assert 30 < busy < 70  # 8-minute runs every 4 minutes on 4 nodes
    page.select_option("select[name=by]", "workflow")
    page.click("text=Show")
    expect(page.locator("h2").first).to_have_text("Busy nodes by workflow, against available nodes")
    assert page.locator(".chart svg").count() == 2
    shoot(settled(page), "utilisation")
    assert page.dialogs == []


def test_filters_and_keyset_pagination(seeded, web, page):
    page.goto(web.url("/tasks?limit=25"))
    seen: list[int] = []
    while True:
        seen += [int(r[0]) for r in rows(page)]
        older = page.locator("a[rel=next]")
        if not older.count():
            break
        older.click()
        expect(page.locator("a[rel=prev]")).to_be_visible()
    assert seen == list(range(130, 0, -1))  # every task once, newest first
    page.click("a[rel=prev]")  # the 25 tasks above the oldest page's 5..1
    assert [int(r[0]) for r in rows(page)] == list(range(30, 5, -1))
    page.click("a[rel=first]")
    assert int(rows(page)[0][0]) == 130 and not page.locator("a[rel=prev]").count()
    page.click("a[rel=last]")
    assert [int(r[0]) for r in rows(page)] == list(range(25, 0, -1))

    page.goto(web.base + "tasks")
    page.select_option("select[name=workflow]", "campaign")
    page.select_option("select[name=state]", "FAILED")
    page.click("text=Filter")
    assert [int(r[0]) for r in rows(page)] == sorted(seeded.failed, reverse=True)
    assert "workflow=campaign" in page.url and "state=FAILED" in page.url
    page.goto(web.base + "tasks?owner=alice&name=sim-06")
    assert [r[1] for r in rows(page)] == ["sim-068", "sim-066", "sim-064", "sim-062", "sim-060"]
    page.goto(web.base + "tasks?app=post&state=awaiting_parents")
    expect(page.locator("p.count")).to_have_text("10 matching tasks, newest first.")
    page.goto(web.base + "tasks?app=nosuchapp")
    expect(page.locator("main")).to_contain_text("No task matches.")


def test_token_is_required_on_every_request(seeded, web, page, shoot):
    for path in ("/", "/tasks", f"/tasks/{seeded.output_task}", "/events", "/static/live.js"):
        status, _, body = fetch(web.base.rstrip("/") + path)
        body = html.unescape(body)
        assert status == 403 and "needs the token that 'balsam web' printed" in body, path
        status, _, body = fetch(web.url(path, token="wrong-token"))
        assert status == 403 and "The token in this link is wrong" in body, path
        assert "sim-000" not in body and "Traceback" not in body
    status, headers, _ = fetch(web.url("/tasks?state=READY"))
    assert status == 303 and headers["location"] == "/tasks?state=READY"
    cookie = headers["set-cookie"]
    assert web.token in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    status, headers, body = fetch(web.base + "tasks", {"Cookie": cookie.split(";")[0]})
    assert status == 200 and "sim-119" in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer" and headers["cache-control"] == "no-store"
    status, _, body = fetch(web.base, {"Authorization": f"Bearer {web.token}"})
    assert status == 200
    # A page of another site rebinding its name to 127.0.0.1 is refused even with the token.
    status, _, body = fetch(web.base, {"Authorization": f"Bearer {web.token}",
                                       "Host": "evil.example:8250"})
    assert status == 403 and "answers only to requests for 127.0.0.1" in body
    page.goto(web.base + "tasks")
    expect(page.locator("#error-message")).to_contain_text("needs the token")
    shoot(page, "token-missing")
    page.goto(web.url("/", token="nope"))
    expect(page.locator("#error-message")).to_contain_text("The token in this link is wrong")


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/tasks/999999", 404, "no task 999999"),
    ("/tasks/99999999999999999999999", 404, "no task 99999999999999999999999"),
    ("/tasks/abc", 404, "There is no page /tasks/abc."),
    ("/tasks?state=BOGUS", 400, "invalid state 'BOGUS'"),
    ("/tasks?limit=7", 400, "limit must be one of 25, 50, 100, 250"),
    ("/tasks?before=x", 400, "before must be a task id"),
    ("/tasks?after=1&before=5", 400, "give after or before, not both"),
    ("/tasks?name=a%00b", 400, "name may not contain a NUL character"),
    ("/failures?window=2y", 400, "window must be one of 1h, 6h, 24h, 7d, 30d, all"),
    ("/charts?by=nope", 400, "invalid grouping 'nope'"),
    ("/nowhere", 404, "There is no page /nowhere."),
])
def test_bad_input_gets_a_clear_page(seeded, web, path, status, message):
    got, _, body = fetch(web.url(path))
    if got == 303:  # the token is exchanged for the cookie first
        got, _, body = fetch(web.url(path), {"Authorization": f"Bearer {web.token}"})
    got, _, body = fetch(web.base.rstrip("/") + path, {"Authorization": f"Bearer {web.token}"})
    assert got == status, body
    shown = re.search(r'id="error-message">(.*?)</p>', body, re.S).group(1)
    assert message in html.unescape(shown)
    assert "Traceback" not in body


def test_hostile_names_are_shown_as_text(project, web, page, shoot):
    from balsam import api
    from balsam.db import connect

    name = '<img src=x onerror=alert(1)><b onmouseover=alert(2)>x'
    script = '<script>alert("message")</script>'
    with connect(project) as db:
        api.add_app("sim", "/bin/true", conn=db)
        parent = api.add_task("sim", name=name, workflow='"><svg onload=alert(3)>', conn=db,
                              description=script)
        child = api.add_task("sim", name="child", parents=[parent.id], conn=db)
        db.execute("UPDATE tasks SET state_message = %s WHERE id = %s", (script, child.id))
    for path in ("/", "/tasks", f"/tasks/{parent.id}", f"/tasks/{child.id}"):
        page.goto(web.url(path))
        expect(page.locator("#status")).to_have_text("live")
    expect(page.locator("td.message").first).to_have_text(script)
    page.goto(web.url(f"/tasks/{parent.id}"))
    expect(page.locator("h1 .name")).to_have_text(name)
    tip = page.locator(".dag svg title").first.text_content()
    assert tip.startswith(f"task {parent.id} {name}")
    page.goto(web.url("/tasks"))
    expect(page.locator("td.name").last).to_have_text(name)
    shoot(page, "hostile-names")
    assert page.dialogs == []
