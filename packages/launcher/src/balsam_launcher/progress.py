"""What a launcher shows while it works: a live line on a terminal (running tasks, finished and
failed runs, busy nodes), and a line in its log every minute. Pure: the loop gives the counts
and the time, and writes what :meth:`Ticker.tick` says to write."""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds between two log lines, and at least between two updates of the terminal's line.
LOG_EVERY, SHOW_EVERY = 60.0, 0.5


@dataclass(frozen=True)
class Progress:
    """A launcher's counts at one moment."""

    running: int
    finished: int
    failed: int
    busy_nodes: int
    nodes: int


def line(p: Progress) -> str:
    """``running 3, finished 10, failed 1, busy nodes 3/4``."""
    return (f"running {p.running}, finished {p.finished}, failed {p.failed}, "
            f"busy nodes {p.busy_nodes}/{p.nodes}")


@dataclass(frozen=True)
class Output:
    """What to write now: ``show`` the terminal's line (None: leave it), ``log`` a log line."""

    show: str | None = None
    log: str | None = None


class Ticker:
    """Decides when progress is written: on a terminal (``terminal``), the line is redrawn when
    it changes, at most every SHOW_EVERY seconds; the log gets a line every LOG_EVERY seconds
    (the first one LOG_EVERY seconds after the start)."""

    def __init__(self, *, terminal: bool, start: float) -> None:
        self.terminal = terminal
        self.shown = ""
        self.shown_at = float("-inf")
        self.pending = False  # the terminal's line is out of date
        self.next_log = start + LOG_EVERY

    def tick(self, now: float, p: Progress) -> Output:
        text = line(p)
        show = log = None
        if self.terminal and text != self.shown and now >= self.shown_at + SHOW_EVERY:
            show, self.shown, self.shown_at = text, text, now
        self.pending = self.terminal and text != self.shown
        if now >= self.next_log:
            log = text
            self.next_log = now + LOG_EVERY
        return Output(show, log)

    def last(self, p: Progress) -> str | None:
        """The terminal's line as the launcher ends, if it is out of date (at once)."""
        text = line(p)
        if not self.terminal or text == self.shown:
            return None
        self.shown, self.pending = text, False
        return text

    def next_time(self) -> float:
        """When :meth:`tick` has something to write even if nothing happens meanwhile."""
        if self.pending:
            return min(self.next_log, self.shown_at + SHOW_EVERY)
        return self.next_log


def terminal_line(text: str) -> str:
    """``text`` drawn over the terminal's current line."""
    return f"\r{text}\x1b[K"
