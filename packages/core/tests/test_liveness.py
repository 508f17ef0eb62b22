"""balsam.liveness: when a launcher is dead, suspect, or worth waiting for (pure rules)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from balsam.liveness import (
    Facts,
    batch_ended,
    dead,
    heartbeat_interval,
    late_after,
    out_of_work,
    suspect,
)

TIMEOUT = 60.0


def facts(age: float, **batch: object) -> Facts:
    return Facts(heartbeat_age=age, heartbeat_timeout=TIMEOUT, **batch)  # type: ignore[arg-type]


def test_a_healthy_launcher_is_neither_dead_nor_suspect():
    f = facts(3, batch_state="running")
    assert (dead(f), suspect(f)) == ("", "")


def test_a_launcher_that_missed_a_heartbeat_is_suspect_then_dead_at_its_timeout():
    assert late_after(TIMEOUT) == 20  # two intervals of 10 s
    assert suspect(facts(19)) == ""
    late = facts(25)
    assert dead(late) == ""
    assert suspect(late) == "heartbeat late: 25s ago (timeout 60s)"
    gone = facts(61)
    assert dead(gone) == "no heartbeat for 61s (timeout 60s)"
    assert suspect(gone) == "no heartbeat for 61s (timeout 60s): presumed dead"


def test_silence_while_the_server_was_down_is_not_death():
    f = Facts(heartbeat_age=300, heartbeat_timeout=TIMEOUT, server_uptime=30)
    assert dead(f) == ""
    assert suspect(f).startswith("heartbeat late")


def test_a_launcher_whose_batch_job_ended_is_dead_at_once():
    for state in ("finished", "failed", "cancelled"):
        f = facts(1, batch_state=state, batch_over=True, batch_message="TIMEOUT")
        assert batch_ended(f)
        assert dead(f) == f"its batch job is {state}"
        assert suspect(f) == f"its batch job is {state}: presumed dead"


def test_a_cancel_the_scheduler_has_not_confirmed_kills_nothing_yet():
    """``balsam queue --kill`` marks the job cancelled at once; its launcher is still stopping
    its tasks (graceful cancel) until the scheduler confirms the end (an end time)."""
    f = facts(1, batch_state="cancelled", batch_over=False, batch_message="cancelled by alice")
    assert not batch_ended(f)
    assert (dead(f), suspect(f)) == ("", "")


def test_after_a_node_failure_the_heartbeat_timeout_decides():
    """A lost node may be cut off, not dead: its processes stop when their lease lapses."""
    f = facts(12, batch_state="failed", batch_over=True, batch_message="NODE_FAIL")
    assert not batch_ended(f)
    assert dead(f) == ""
    assert suspect(f) == ("its batch job is failed (NODE_FAIL): presumed dead 48s from now, at "
                          "its heartbeat timeout")
    assert dead(facts(61, batch_state="failed", batch_over=True, batch_message="NODE_FAIL"))


def test_a_consume_all_launcher_waits_for_holders_not_proved_alive():
    healthy, late = facts(2), facts(30)
    assert out_of_work(False, [])
    assert out_of_work(False, [healthy], idle_for=3)  # its tasks are its own to finish
    assert not out_of_work(False, [healthy], idle_for=1)  # no heartbeat seen since: lost?
    assert not out_of_work(False, [healthy, late], idle_for=40)  # may come back: wait and see
    assert not out_of_work(False, [facts(90)], idle_for=100)  # dead, about to be reaped
    assert not out_of_work(True, [])


@given(timeout=st.floats(0.8, 86_400), age=st.floats(0, 200_000),
       state=st.sampled_from([None, "running", "finished", "failed", "cancelled"]),
       over=st.booleans(), message=st.sampled_from(["", "TIMEOUT", "NODE_FAIL"]))
def test_the_rules_agree(timeout, age, state, over, message):
    f = Facts(age, timeout, state, over, message)
    if dead(f):  # the dead are suspect, and a consume-all launcher waits for their tasks
        assert suspect(f) and not out_of_work(False, [f])
    if not suspect(f):  # a healthy holder keeps it waiting only until its next heartbeat
        assert out_of_work(False, [f], idle_for=age + 0.001)
    if age <= heartbeat_interval(timeout) and not (state and over):
        assert suspect(f) == ""  # a launcher on time is never suspect
    if age > timeout:
        assert dead(f)  # the fence has killed its tasks by then
    assert heartbeat_interval(timeout) < late_after(timeout) <= timeout
