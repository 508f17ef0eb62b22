"""The page's decisions as pure functions: who may pass, what the parameters mean, how numbers
become pictures and text; and the hub that fans changes out to pages."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from balsam.errors import InvalidInput
from balsam_web import charts, live
from balsam_web.app import Access, access, host_name
from balsam_web.render import ago, duration
from balsam_web.views import TaskFilter, parse_task_filter, parse_window


def test_access_needs_the_token_and_a_url_token_must_be_right():
    def decide(url=None, cookie=None, bearer=None):
        return access("s3cret", in_url=url, cookie=cookie, bearer=bearer)

    assert decide() is Access.DENY
    assert decide(cookie="s3cret") is Access.ALLOW
    assert decide(bearer="s3cret") is Access.ALLOW
    assert decide(cookie="S3cret", bearer="") is Access.DENY
    assert decide(url="s3cret") is Access.EXCHANGE
    assert decide(url="wrong", cookie="s3cret") is Access.DENY
    assert decide(url="") is Access.DENY


def test_host_names():
    assert host_name("127.0.0.1:8250") == "127.0.0.1"
    assert host_name("LOCALHOST:1") == "localhost"
    assert host_name("[::1]:8250") == "::1"
    assert host_name("evil.example") == "evil.example"
    assert host_name("") == ""


def test_task_filter_parameters():
    flt = parse_task_filter({"workflow": " sim ", "state": "running", "before": "120",
                             "limit": "100", "owner": "", "unknown": "x"})
    assert flt == TaskFilter(workflow="sim", state="RUNNING", before=120, limit=100)
    assert flt.filtered
    assert flt.query_params(before=None, after=7) == {"workflow": "sim", "state": "RUNNING",
                                                      "after": "7", "limit": "100"}
    assert parse_task_filter({}).query_params() == {}
    for bad, message in ((({"state": "nope"}), "invalid state 'nope'"),
                         ({"limit": "10"}, "limit must be one of"),
                         ({"after": "-1"}, "after must be a task id"),
                         ({"before": "9" * 30}, "before must be a task id"),
                         ({"after": "1", "before": "2"}, "not both"),
                         ({"name": "a\0"}, "NUL")):
        with pytest.raises(InvalidInput, match=message):
            parse_task_filter(bad)


def test_windows():
    label, since = parse_window({}, "24h")
    assert label == "24h" and since is not None
    assert abs((datetime.now(UTC) - since) - timedelta(hours=24)) < timedelta(seconds=5)
    assert parse_window({"window": "all"}, "1h") == ("all", None)
    with pytest.raises(InvalidInput, match="window must be one of"):
        parse_window({"window": "1y"}, "1h")


def test_text_of_times():
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert ago(now - timedelta(seconds=5), now) == "5s ago"
    assert ago(now - timedelta(minutes=90), now) == "1h 30min ago"
    assert ago(now + timedelta(seconds=3), now) == "0s ago"  # a clock a little ahead
    assert duration(None) == "-" and duration(59.6) == "1min" and duration(3 * 86400) == "3d 0h"


def test_ticks_are_round_and_cover_the_top():
    assert charts.nice_ticks(97) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(0) == [0.0, 1.0]
    assert charts.nice_ticks(2.3)[-1] >= 2.3 and len(charts.nice_ticks(123456)) <= 7


def test_pictures_escape_what_users_wrote():
    bar = charts.state_bar({"READY": 3, "FAILED": 1}, width=100)
    assert 'width="75.00"' in bar and "<title>FAILED: 1 (25.0%)</title>" in bar
    evil = charts.Node(7, '<script>alert(1)</script>"&', "READY")
    dag = charts.dag_view(evil, [charts.Node(1, "p", "JOB_FINISHED")], [], more_parents=3,
                          href="/tasks/{id}")
    assert "<script>" not in dag and "&lt;script&gt;" in dag and "+3 more" in dag
    assert dag.count("<a href=") == 2 and 'href="/tasks/1"' in dag
    start = datetime(2024, 5, 1, tzinfo=UTC)
    series = charts.Series([start, start + timedelta(hours=1)], start + timedelta(hours=2),
                           {'<b>"x"</b>': [1.0, 2.0]}, ("available", [4.0, 4.0]))
    chart = charts.time_chart(series, bars=True, y_label="per hour")
    assert "<b>" not in chart and "&lt;b&gt;" in chart and "<polyline" in chart
    empty = charts.time_chart(charts.Series([], start, {}), bars=False, y_label="nodes")
    assert "no data in this window" in empty


def test_hub_tells_each_page_what_changed_and_once_more_after_the_quiet_period():
    async def scenario() -> list[dict[str, str]]:
        hub = live.Hub()
        stream = hub.stream(lambda: False)
        got = [await anext(stream)]  # the status on connection
        hub.set_live(True)
        got.append(await anext(stream))
        hub.publish(["tasks"])
        hub.publish(["launchers"])  # before the page reads: one event for both
        got.append(await anext(stream))
        got.append(await asyncio.wait_for(anext(stream), live.TRAILING + 1))  # the trailing one
        await stream.aclose()
        return got

    with ThreadPoolExecutor(1) as thread:  # a loop of its own, whatever else runs here
        got = thread.submit(lambda: asyncio.run(scenario())).result()
    assert [e["event"] for e in got] == ["status", "status", "change", "change"]
    assert got[0]["data"] == '{"live": false}' and got[1]["data"] == '{"live": true}'
    assert '"tables": ["launchers", "tasks"]' in got[2]["data"]
    assert '"tables": ["launchers", "tasks"]' in got[3]["data"]
