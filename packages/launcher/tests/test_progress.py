"""The launcher's progress, without I/O: the line, and when it is drawn and logged."""

from __future__ import annotations

from balsam_launcher.progress import LOG_EVERY, SHOW_EVERY, Output, Progress, Ticker, line


def counts(running: int = 0, finished: int = 0, failed: int = 0, busy: int = 0) -> Progress:
    return Progress(running=running, finished=finished, failed=failed, busy_nodes=busy, nodes=4)


def test_the_line_says_running_finished_failed_and_busy_nodes():
    assert line(Progress(running=3, finished=10, failed=1, busy_nodes=3, nodes=4)) == \
        "running 3, finished 10, failed 1, busy nodes 3/4"


def test_a_terminal_sees_each_change_at_most_twice_a_second():
    t = Ticker(terminal=True, start=0.0)
    assert t.tick(0.0, counts()) == Output(show="running 0, finished 0, failed 0, busy nodes 0/4")
    assert t.tick(0.1, counts()) == Output()  # unchanged: nothing to draw
    assert t.next_time() == LOG_EVERY
    assert t.tick(0.2, counts(running=1, busy=1)) == Output()  # too soon after the last
    assert t.next_time() == SHOW_EVERY  # ... so the loop wakes to draw it
    shown = t.tick(SHOW_EVERY, counts(running=1, busy=1)).show
    assert shown == "running 1, finished 0, failed 0, busy nodes 1/4"
    assert t.next_time() == LOG_EVERY
    # a change that is undone before it was drawn is not drawn
    t.tick(0.6, counts(running=2, busy=2))
    assert t.tick(0.7, counts(running=1, busy=1)) == Output() and t.next_time() == LOG_EVERY


def test_the_log_gets_a_line_a_minute_with_or_without_a_terminal():
    for terminal in (True, False):
        t = Ticker(terminal=terminal, start=100.0)
        assert t.tick(100.0, counts()).log is None
        assert t.tick(100.0 + LOG_EVERY - 1, counts(finished=5)).log is None
        assert t.tick(100.0 + LOG_EVERY, counts(finished=5)).log == \
            "running 0, finished 5, failed 0, busy nodes 0/4"
        assert t.next_time() == 100.0 + 2 * LOG_EVERY
        assert t.tick(100.0 + LOG_EVERY + 1, counts(finished=6)).log is None


def test_without_a_terminal_nothing_is_drawn():
    t = Ticker(terminal=False, start=0.0)
    assert all(t.tick(now, counts(running=now)).show is None for now in range(10))
    assert t.next_time() == LOG_EVERY


def test_the_last_line_is_drawn_at_once_when_the_launcher_ends():
    t = Ticker(terminal=True, start=0.0)
    t.tick(0.0, counts(running=1, busy=1))
    assert t.tick(0.1, counts(finished=1)) == Output()  # too soon
    assert t.last(counts(finished=1)) == "running 0, finished 1, failed 0, busy nodes 0/4"
    assert t.last(counts(finished=1)) is None  # drawn already
    assert Ticker(terminal=False, start=0.0).last(counts()) is None
