"""Parsing the status output of Slurm, PBS and Cobalt (formats as the real commands print)."""

from __future__ import annotations

from balsam_launcher.schedulers import cobalt, pbs, slurm

SQUEUE = """\
17|PENDING|N/A|N/A|Resources
18|RUNNING|2026-11-25T11:37:16|2026-11-25T11:52:16|None
19|COMPLETED|2026-11-25T11:37:16|2026-11-25T11:37:19|None
20|CANCELLED|2026-11-25T11:37:16|2026-11-25T11:37:20|None
21|TIMEOUT|2026-11-25T11:37:16|2026-11-25T11:38:16|None
22|SOMETHING_NEW|N/A|N/A|None
"""


def test_squeue_states_and_times():
    found = slurm.parse_squeue(SQUEUE)
    assert {k: v.state for k, v in found.items()} == {
        "17": "queued", "18": "running", "19": "finished", "20": "cancelled", "21": "failed"}
    assert found["17"].message == "Resources" and found["17"].started_at is None
    assert found["18"].started_at.isoformat().startswith("2026-11-25T11:37:16")
    assert found["18"].ended_at is None  # a running job's %e is its expected end
    assert found["19"].ended_at.isoformat().startswith("2026-11-25T11:37:19")
    assert found["21"].message == "TIMEOUT"


def test_sacct_lines_with_exit_codes_and_cancelled_by():
    text = ("7|COMPLETED|0:0|2026-11-24T23:13:27|2026-11-24T23:13:35\n"
            "8|FAILED|1:0|2026-11-24T23:13:27|2026-11-24T23:13:35\n"
            "9|CANCELLED by 1001|0:15|2026-11-24T23:13:27|2026-11-24T23:13:30\n"
            "10|PENDING|0:0|Unknown|Unknown\n")
    found = slurm.parse_sacct(text)
    assert found["7"].state == "finished" and found["7"].ended_at is not None
    assert found["8"].state == "failed" and "exit code 1:0" in found["8"].message
    assert found["9"].state == "cancelled"
    assert found["10"].state == "queued" and found["10"].started_at is None


QSTAT_F = """\
Job Id: 12.pbs01
    Job_Name = balsam-3
    job_state = F
    stime = Tue Nov 25 11:37:16 2025
    obittime = Tue Nov 25 11:40:00 2025
    Exit_status = 0
    Variable_List = PBS_O_HOME=/home/alice,PBS_O_PATH=/usr/bin:/bin,
\tPBS_O_WORKDIR=/home/alice

Job Id: 13.pbs01
    job_state = F
    stime = Tue Nov 25 11:37:16 2025
    obittime = Tue Nov 25 11:40:00 2025
    Exit_status = 271

Job Id: 14.pbs01
    job_state = R
    stime = Wed Nov  5 09:01:02 2025

Job Id: 15.pbs01
    job_state = Q
"""


def test_pbs_full_status_blocks():
    found = pbs.parse_qstat_full(QSTAT_F)
    assert found["12.pbs01"].state == "finished" and found["12"].state == "finished"
    assert found["12.pbs01"].ended_at.minute == 40
    assert found["13.pbs01"].state == "failed" and found["13"].message == "exit status 271"
    assert found["14.pbs01"].state == "running"
    assert found["14.pbs01"].started_at.day == 5  # ctime pads the day with a space
    assert found["15.pbs01"].state == "queued" and found["15.pbs01"].started_at is None


def test_cobalt_qstat_table():
    text = ("JobID  State    \n================\n"
            "101    queued   \n102    running  \n103    dep_fail \n104    weird\n")
    found = cobalt.parse_qstat(text)
    assert {k: v.state for k, v in found.items()} == {
        "101": "queued", "102": "running", "103": "failed"}
