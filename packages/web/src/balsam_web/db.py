"""Read-only connections as the user who runs ``balsam web``, and a small pool of them.

The page connects with the user's own role (a viewer sees what ``balsam ls`` shows them) and
every transaction is read-only (``default_transaction_read_only``), so no page can write even
through a bug; a statement timeout keeps a runaway query from loading the server.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from psycopg import pq

from balsam.db import Connection, connect
from balsam.errors import ServerDown
from balsam.project import Project

OPTIONS = "-c default_transaction_read_only=on -c statement_timeout=30000"
APPLICATION = "balsam-web"


def connect_readonly(project: Project) -> Connection:
    """A read-only connection to the project's database as the current user."""
    return connect(project, options=OPTIONS, application_name=APPLICATION)


class Pool:
    """Up to ``size`` connections shared by request threads; a broken one is dropped, and a new
    one opened on demand (so the page recovers by itself after a database restart)."""

    def __init__(self, opener: Callable[[], Connection], size: int = 4,
                 wait: float = 30.0) -> None:
        self._opener = opener
        self._idle: queue.LifoQueue[Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)
        self._wait = wait

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=self._wait):
            message = "the page's database connections are all busy; try again"
            raise ServerDown(message)
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._opener()
            try:
                yield conn
            finally:
                if conn.broken or conn.closed or \
                        conn.info.transaction_status != pq.TransactionStatus.IDLE:
                    conn.close()
                else:
                    self._idle.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return
