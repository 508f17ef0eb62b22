"""The status page at scale: page loads and live-update latency over a million tasks.

A throwaway cluster (run as an unprivileged user when root) holds a project in external-DSN mode
with 1,000,000 tasks and about 5,000,000 events (the quick run: a tenth), generated in SQL: a
campaign in full swing over the last day, 5 live launchers in batch jobs. A real ``balsam web``
serves it. Each page is fetched over HTTP (token as a bearer header) once cold, then the median
of the next ones; the live update is timed in headless Chromium, from the commit of a change (a
task killed) to the open overview showing it. Targets: overview under 300 ms, task list under
150 ms, an update visible within 1 s.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any
from unittest.mock import patch

from balsam.contracts import InitOptions
from balsam.db import Connection, connect
from balsam.lifecycle import init_project
from balsam.plugins import get_plugin_manager
from balsam.queries import parse_queries
from balsam_testing.pg import throwaway_cluster

HERE = Path(__file__).resolve().parent
BALSAM = str(Path(sys.executable).parent / "balsam")
BENCH = "web"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCHERS, NODES = 5, 800


@cache
def queries() -> dict[str, str]:
    return parse_queries((HERE / "bench_web.sql").read_text())


def _row(metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"benchmark": BENCH, "metric": metric, "value": round(value, 3), "unit": unit}


def generate(conn: Connection, tasks: int) -> dict[str, int]:
    sql = queries()
    params = {"tasks": tasks, "launchers": LAUNCHERS, "nodes": NODES}
    conn.execute(sql["durable_commits"])
    app = conn.execute(sql["insert_app"]).fetchone()["id"]
    conn.execute(sql["insert_batch_jobs"], params)
    conn.execute(sql["insert_launchers"])
    conn.execute(sql["triggers_off"])
    conn.execute(sql["insert_tasks"], {**params, "app": app})
    conn.execute(sql["insert_events"], params)
    conn.execute(sql["triggers_on"])
    conn.execute(sql["analyze"])
    return conn.execute(sql["counts"]).fetchone()


def start_web(env: dict[str, str]) -> tuple[subprocess.Popen[str], str, str]:
    """``balsam web --port 0``; returns the process, its base URL and its token."""
    proc = subprocess.Popen([BALSAM, "web", "--port", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.match(r"^Open: (http://\S+?/)\?token=(\S+)$", line.strip())
        if match:
            return proc, match.group(1), match.group(2)
    message = "balsam web did not start"
    raise RuntimeError(message)


def timed_get(url: str, token: str) -> float:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()
        assert response.status == 200
    return time.perf_counter() - start


def page_loads(base: str, token: str, pages: dict[str, str], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for label, path in pages.items():
        times = [timed_get(base.rstrip("/") + path, token) for _ in range(repeat + 1)]
        rows.append(_row(f"{label} (cold)", times[0] * 1000, "ms"))
        rows.append(_row(f"{label} (median)", statistics.median(times[1:]) * 1000, "ms"))
    return rows


SHOWS_KILLED = """n => [...document.querySelectorAll(".legend li")].some(
    li => li.textContent.includes("USER_KILLED") && Number(li.querySelector("b").textContent
                                                               .replace(/,/g, "")) >= n)"""


def live_latency(conn: Connection, base: str, token: str, samples: int) -> list[dict[str, Any]]:
    """Commit a change, then wait until the open overview shows it; seconds, per sample."""
    if not Path(CHROMIUM).exists():
        return []
    from playwright.sync_api import sync_playwright

    sql = queries()
    latencies = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page()
        page.goto(f"{base}?token={token}")
        page.wait_for_selector("#status.live", timeout=60000)
        for _ in range(samples):
            task = conn.execute(sql["a_ready_task"]).fetchone()["id"]
            killed = conn.execute(sql["killed"]).fetchone()["n"] + 1
            time.sleep(2.5)  # an isolated change: the last one's refreshes are over
            start = time.perf_counter()
            conn.execute(sql["kill_task"], {"id": task})
            page.wait_for_function(SHOWS_KILLED, arg=killed, timeout=30000, polling=10)
            latencies.append(time.perf_counter() - start)
        page.close()
        browser.close()
    return [_row("live update: change to page (median)", statistics.median(latencies) * 1000,
                 "ms"),
            _row("live update: change to page (max)", max(latencies) * 1000, "ms")]


def run(quick: bool) -> list[dict[str, Any]]:
    tasks, repeat, samples = (100_000, 5, 5) if quick else (1_000_000, 9, 9)
    rows: list[dict[str, Any]] = []
    with (throwaway_cluster(prefix="balsam-bench-web-", dbname="bench") as pg,
          tempfile.TemporaryDirectory() as tmp):
        dsn = pg.dsn("bench")
        env = {**os.environ, "BALSAM_HOME": str(Path(tmp) / "home")}
        with patch.dict(os.environ, env):
            project = init_project(Path(tmp) / "project", InitOptions(dsn=dsn),
                                   get_plugin_manager())
        env["BALSAM_DB_PATH"] = str(project.root)
        with connect(dsn) as conn:
            start = time.perf_counter()
            counts = generate(conn, tasks)
            rows.append(_row("tasks", float(counts["tasks"]), "tasks"))
            rows.append(_row("events", float(counts["events"]), "events"))
            rows.append(_row("generation time", time.perf_counter() - start, "s"))
            proc, base, token = start_web(env)
            try:
                last = tasks  # the newest task
                pages = {
                    "overview /": "/",
                    "task list /tasks": "/tasks",
                    "task list, a workflow and state": "/tasks?workflow=wf3&state=READY",
                    "task list, 20 pages back": f"/tasks?before={last - 20 * 50}",
                    "task page": f"/tasks/{last - 7}",
                    "failures, last 24h": "/failures",
                    "launchers": "/launchers",
                    "utilisation, last 6h by user": "/charts",
                    "utilisation, last 24h by workflow": "/charts?window=24h&by=workflow",
                }
                rows += page_loads(base, token, pages, repeat)
                rows += live_latency(conn, base, token, samples)
            finally:
                proc.terminate()
                proc.wait(30)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(f"{r['metric']:<45} {r['value']:>12,.3f} {r['unit']}")
