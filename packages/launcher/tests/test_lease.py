"""The lease arithmetic: when a launcher's fence kills its tasks, given its heartbeats. The
database presumes a launcher dead ``timeout`` after its last heartbeat was recorded, which is no
earlier than when it was sent: the fence must act before that, and never while it is healthy."""

from __future__ import annotations

import os
import signal
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balsam_launcher import lease
from balsam_launcher.launcher import Options

TIMEOUTS = st.floats(min_value=1, max_value=7 * 86400)


@pytest.mark.parametrize(("timeout", "sent", "deadline"), [
    (60, [], None),                      # never renewed: nothing to fence yet
    (60, [100.0], 155.0),                # the margin is at most 5 s
    (60, [100.0, 110.0, 105.0], 165.0),  # renewals out of order: the latest counts
    (20, [0.0], 15.0),                   # a quarter of the timeout, 5 s
    (8, [0.0], 6.0),
    (2, [10.0], 11.5),
    (1, [0.0, 0.25], 1.0),
    (3600, [0.0], 3595.0),
])
def test_deadline_table(timeout, sent, deadline):
    assert lease.deadline(sent, timeout) == deadline


@given(timeout=TIMEOUTS, sent=st.lists(st.floats(min_value=0, max_value=1e7), max_size=30))
def test_the_fence_acts_a_margin_before_the_database_may(timeout, sent):
    deadline = lease.deadline(sent, timeout)
    if not sent:
        assert deadline is None
        return
    margin = lease.margin(timeout)
    assert 0 < margin <= min(timeout / 4, lease.MAX_MARGIN)
    assert deadline == pytest.approx(max(sent) + timeout - margin, abs=1e-6)
    assert deadline < max(sent) + timeout


@given(timeout=TIMEOUTS)
def test_a_healthy_launcher_renews_with_half_its_timeout_to_spare(timeout):
    """The engine heartbeats every ``heartbeat_interval``: the next renewal comes long before
    the lease of the last one runs out."""
    interval = Options(heartbeat_timeout=timeout).heartbeat_interval
    assert lease.expiry(0.0, timeout) - interval >= timeout / 2 - 1e-9


def test_renewals_reach_the_fence_and_never_block():
    read, write = os.pipe2(os.O_NONBLOCK)
    try:
        lease.attach(write, 60)
        lease.renewed(100.0)
        assert lease.RECORD.unpack(os.read(read, 64)) == (lease.expiry(100.0, 60),)
        assert not lease.expired(now=154.9) and lease.expired(now=155.0)
        for i in range(100_000):  # nobody reads: the pipe fills, renewals are dropped
            lease.renewed(float(i))
        lease.extend(30.0)
    finally:
        lease.attach(None)
        os.close(read)
        os.close(write)


def test_only_the_fences_notice_counts_as_a_lapse():
    """A stray FENCED signal (anyone may send one) wakes the launcher but fences nothing."""
    read, write = os.pipe2(os.O_NONBLOCK)
    before = signal.getsignal(lease.FENCED)
    try:
        lease.attach(None, notice=read)
        lease.watch()
        os.kill(os.getpid(), lease.FENCED)
        time.sleep(0.01)
        assert not lease.lapsed()
        os.write(write, b"!")
        assert not lease.lapsed()  # not told yet
        os.kill(os.getpid(), lease.FENCED)
        assert lease.confirmed(within=1.0)
    finally:
        signal.signal(lease.FENCED, before)
        lease.attach(None)
        os.close(read)
        os.close(write)
