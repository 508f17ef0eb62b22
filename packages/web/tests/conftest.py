"""Fixtures of balsam-web's tests: a seeded project, a real ``balsam web`` process, and a real
headless Chromium (Debian's, driven by Playwright; one browser per session, a new context per
test). Screenshots go to ``$BALSAM_WEB_SCREENSHOTS`` when it is set."""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BALSAM = str(Path(sys.executable).parent / "balsam")
URL = re.compile(r"^Open: (http://(\S+?)/)\?token=(\S+)$")


@dataclass
class WebServer:
    """A running ``balsam web``: its base URL (ends with /) and token."""

    base: str
    token: str
    proc: subprocess.Popen[str]

    def url(self, path: str = "/", token: str | None = None) -> str:
        """The URL of ``path``, with the token (or another one) in it."""
        sep = "&" if "?" in path else "?"
        return f"{self.base.rstrip('/')}{path}{sep}token={token or self.token}"


@contextmanager
def serve(env: dict[str, str], prefix: Sequence[str] = (), *,
          args: Sequence[str] = ()) -> Iterator[WebServer]:
    """Start ``balsam web --port 0`` (as another user with a ``runuser`` prefix), wait for the URL
    it prints, and stop it afterwards (SIGTERM, then SIGKILL). Its log is shown on failure."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([*prefix, BALSAM, "web", "--port", "0", *args], env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        try:
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout],  # type: ignore[union-attr]
                                      daemon=True)
            reader.start()
            deadline, seen, match = time.monotonic() + 30, [], None
            while match is None and time.monotonic() < deadline and proc.poll() is None:
                with contextlib.suppress(queue.Empty):
                    seen.append(lines.get(timeout=0.5))
                    match = URL.match(seen[-1].strip())
            if match is None:
                log.seek(0)
                pytest.fail(f"balsam web did not start: {''.join(seen)}{log.read()}")
            yield WebServer(match.group(1), match.group(3), proc)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            reader.join(5)
            proc.stdout.close()
            log.seek(0)
            errors = log.read()
        assert "Traceback" not in errors, errors


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module (Playwright's event loop must not outlive these tests)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page; closed before the test's servers stop."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    tab = context.new_page()
    tab.dialogs = []  # type: ignore[attr-defined] - any alert() a hostile page would raise
    tab.on("dialog", lambda d: (tab.dialogs.append(d.message), d.dismiss()))
    yield tab
    context.close()


@pytest.fixture
def shoot():
    """``shoot(page, name)``: save the whole page to $BALSAM_WEB_SCREENSHOTS/<name>.png (when
    that is set) for people to look at."""

    def save(page, name: str) -> None:
        folder = os.environ.get("BALSAM_WEB_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return save


@pytest.fixture
def web(project) -> Iterator[WebServer]:
    """``balsam web`` serving the test's project (as root, with the database's superuser)."""
    with serve(dict(os.environ)) as server:
        yield server


@pytest.fixture
def serve_as(unix_users):
    """``serve_as(user, project_root)``: ``balsam web`` run by another UNIX user, as it would be
    from their login shell (a clean environment, the test venv on PATH)."""

    def start(user: str, root: Path):
        pw = pwd.getpwnam(user)
        env = {"PATH": f"{Path(BALSAM).parent}:/usr/local/bin:/usr/bin:/bin", "HOME": pw.pw_dir,
               "USER": user, "LOGNAME": user, "LANG": "C.UTF-8", "BALSAM_DB_PATH": str(root)}
        prefix = ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items())]
        return serve({"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, prefix)

    return start


@dataclass
class Seed:
    """What the seeded project holds (task ids by what happened to them)."""

    finished: list[int]
    failed: list[int]
    running: list[int]
    ready: list[int]
    waiting: list[int]
    launcher: int
    output_task: int


RUN = ("STAGED_IN", "PREPROCESSED", "RUNNING")
FINISH = ("RUN_DONE", "POSTPROCESSED", "JOB_FINISHED")


def _move(db, ids: list[int], states: Sequence[str], message: str = "",
          launcher: int | None = None) -> None:
    for state in states:
        db.execute("UPDATE tasks SET state = %s, state_message = %s, launcher_id = %s "
                   "WHERE id = ANY(%s)", (state, message, launcher, ids))


#: Spread the seeded history over the last five hours: a run of 8 minutes every 4 minutes on the
#: 4-node launcher (about half of it busy), the failures in the last hour, the runs still going
#: started 3 minutes ago.
REDATE = """
UPDATE task_events e
SET at = s.start + CASE e.to_state WHEN 'READY' THEN interval '-3 min'
                                   WHEN 'STAGED_IN' THEN interval '-2 min'
                                   WHEN 'PREPROCESSED' THEN interval '-1 min'
                                   WHEN 'RUNNING' THEN interval '0'
                                   WHEN 'RUN_ERROR' THEN interval '6 min'
                                   WHEN 'FAILED' THEN interval '6 min 5 s'
                                   ELSE interval '8 min' END
FROM (SELECT id, now() - interval '4 hours 40 min' + row_number() OVER (ORDER BY id)
                 * interval '4 min' AS start FROM tasks WHERE id = ANY(%s)
      UNION ALL
      SELECT id, now() - interval '3 min' FROM tasks WHERE id = ANY(%s)) s
WHERE e.task_id = s.id
"""


@pytest.fixture
def seeded(project) -> Seed:
    """A campaign of 120 tasks (60 finished, 6 failed, 4 running, the rest ready), an analysis
    workflow waiting for some of them, two owners, a live launcher in a batch job, an ended
    one, and an output file."""
    from balsam import api
    from balsam.db import connect
    from balsam_launcher.steps import output_path

    with connect(project) as db:
        api.add_app("sim", "/bin/echo", conn=db)
        api.add_app("post", "/bin/true", conn=db)
        ids = api.add_tasks([{"app": "sim", "workflow": "campaign", "name": f"sim-{i:03d}",
                              "args": f"--seed {i}"} for i in range(120)], conn=db)
        waiting = api.add_tasks([{"app": "post", "workflow": "analysis", "name": f"post-{i}",
                                  "parents": [ids[i], ids[70 + i]]} for i in range(10)],
                                conn=db)
        db.execute("UPDATE tasks SET owner = 'alice' WHERE id = ANY(%s)", (ids[::2],))
        job = db.execute("INSERT INTO batch_jobs (scheduler, scheduler_id, num_nodes, "
                         "wall_time_minutes, state, started_at) VALUES ('slurm', '4242', 4, 60, "
                         "'running', now() - interval '20 minutes') RETURNING id").fetchone()["id"]
        launcher = db.execute(
            "INSERT INTO launchers (hostname, pid, job_mode, num_nodes, batch_job_id, "
            "started_at) VALUES ('nid0001', 4321, 'serial', 4, %s, now() - interval "
            "'19 minutes') RETURNING id", (job,)).fetchone()["id"]
        db.execute("INSERT INTO launchers (hostname, pid, job_mode, num_nodes, started_at, "
                   "heartbeat_at, ended_at, end_reason) VALUES ('login1', 99, 'mpi', 1, "
                   "now() - interval '3 hours', now() - interval '2 hours', "
                   "now() - interval '2 hours', 'no work left')")
        finished, failed, running = ids[:60], ids[60:66], ids[66:70]
        _move(db, finished, RUN, launcher=launcher)
        _move(db, finished, FINISH, launcher=launcher)
        _move(db, failed, RUN, launcher=launcher)
        _move(db, failed, ["RUN_ERROR"], "exit 3: reading input | ValueError: bad seed",
              launcher=launcher)
        _move(db, failed, ["FAILED"], "the run failed and the task has no error handler")
        _move(db, running, RUN, launcher=launcher)
        db.execute(REDATE, (finished + failed, running))
        db.execute("UPDATE launchers SET started_at = now() - interval '4 hours 50 min' "
                   "WHERE ended_at IS NULL")
        db.execute("UPDATE batch_jobs SET started_at = now() - interval '4 hours 51 min'")
        task = api.get_task(finished[0], conn=db)
    out = output_path(project.workdir(task.workdir), task)
    out.parent.mkdir(parents=True)
    out.write_text("".join(f"step {i}: energy {i * 0.5:.3f}\n" for i in range(1000)))
    return Seed(finished, failed, running, ids[70:], waiting, launcher, finished[0])
