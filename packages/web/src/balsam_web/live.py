"""Live updates: the database's change notifications (LISTEN balsam_events) fanned out to every
open page as server-sent events.

One listener thread holds one connection. The hub keeps only a version number per table, no
queue per page: a page that falls behind is simply told that something changed and reads the
newest state, so a burst of changes costs each page one refresh. The triggers announce at most
one change per session every 200 ms (migration 0035); the hub announces every change once more
a little after the last one, so a change held back by that quiet period is still seen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import suppress
from typing import Any

from psycopg import sql

from balsam.db import Connection

CHANNEL = "balsam_events"
#: The triggers' quiet period (0035_live_status.sql) plus a margin for the commit.
TRAILING = 0.35
#: Seconds between keep-alive pings on an idle event stream.
PING = 15.0
log = logging.getLogger("balsam_web")


class Hub:
    """The latest change per table, and a way to wait for the next one (event loop side)."""

    def __init__(self) -> None:
        self.version = 0
        self.tables: dict[str, int] = {}
        self.live = False
        self._event = asyncio.Event()
        self._trailing: asyncio.TimerHandle | None = None
        self._held: set[str] = set()

    def publish(self, tables: Iterable[str], *, trailing: bool = True) -> None:
        """Record a change to ``tables`` and wake every waiting page."""
        self.version += 1
        for table in tables:
            self.tables[table] = self.version
        self._event.set()
        self._event = asyncio.Event()
        if trailing:
            self._held |= set(tables)
            if self._trailing is not None:
                self._trailing.cancel()
            self._trailing = asyncio.get_running_loop().call_later(TRAILING, self._again)

    def _again(self) -> None:
        """Announce once more every table announced since the last time (a change the triggers'
        quiet period held back is seen now)."""
        held, self._held, self._trailing = self._held, set(), None
        self.publish(held, trailing=False)

    def set_live(self, live: bool) -> None:
        """Whether notifications arrive (pages poll while they do not)."""
        if live != self.live:
            self.live = live
            self.publish(["status"], trailing=False)

    def changed_since(self, version: int) -> list[str]:
        return sorted(t for t, v in self.tables.items() if v > version)

    async def wait(self, version: int, timeout: float) -> None:
        """Until something changes after ``version`` (or ``timeout`` seconds pass)."""
        if self.version > version:
            return
        event = self._event
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def stream(self, stop: Callable[[], bool]) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events for one page: ``change`` (which tables) and ``status`` (live)."""
        seen = self.version
        yield {"event": "status", "data": json.dumps({"live": self.live})}
        while not stop():
            await self.wait(seen, timeout=1.0)
            if self.version <= seen:
                continue
            changed = self.changed_since(seen)
            seen = self.version
            if "status" in changed:
                yield {"event": "status", "data": json.dumps({"live": self.live})}
            tables = [t for t in changed if t != "status"]
            if tables:
                yield {"event": "change", "data": json.dumps({"tables": tables,
                                                              "version": seen})}


class Listener(threading.Thread):
    """Listens on the database and publishes what it hears to the hub; reconnects with backoff
    (and says so: pages poll meanwhile) when the connection is lost."""

    def __init__(self, opener: Callable[[], Connection], hub: Hub,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="balsam-web-listener", daemon=True)
        self._opener, self._hub, self._loop = opener, hub, loop
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        with suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(fn, *args)

    def run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with self._opener() as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._call(self._hub.set_live, True)
                    # Things may have changed while nobody listened.
                    self._call(self._hub.publish, ["tasks", "launchers", "batch_jobs"])
                    backoff = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5, stop_after=1):
                            self._call(self._hub.publish, [note.payload])
            except Exception as exc:  # noqa: BLE001 - whatever broke, listen again
                log.warning("balsam web: change notifications lost (%s); retrying", exc)
            self._call(self._hub.set_live, False)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
