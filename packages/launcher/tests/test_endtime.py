"""The scheduler's end of the current job (Slurm, PBS, Cobalt) and when the launcher stops."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from balsam_launcher import endtime

QSTAT = """Job Id: 12.pbs
    Job_Name = balsam-3
    Resource_List.walltime = 01:30:00
    stime = Mon Nov 30 15:00:00 2026
    session_id = 4242
"""


def test_slurm_end_from_its_variable_or_squeue():
    asked = []

    def squeue(argv):
        asked.append(list(argv))
        return "2026-11-30T16:00:00\n"

    assert endtime.job_end("slurm", {"SLURM_JOB_END_TIME": "1800000000",
                                     "SLURM_JOB_ID": "9"}, squeue) == 1_800_000_000
    assert asked == []
    end = endtime.job_end("slurm", {"SLURM_JOB_ID": "9"}, squeue)
    assert asked == [["squeue", "-h", "-j", "9", "-o", "%e"]]
    assert end == datetime(2026, 11, 30, 16, 0, 0).timestamp()
    for text in ("N/A", "Unknown", "", "garbage"):
        assert endtime.job_end("slurm", {"SLURM_JOB_ID": "9"}, lambda _, t=text: t) is None
    assert endtime.job_end("slurm", {}, squeue) is None and len(asked) == 1


def test_pbs_end_is_its_start_plus_its_walltime():
    asked = []

    def qstat(argv):
        asked.append(list(argv))
        return QSTAT

    end = endtime.job_end("pbs", {"PBS_JOBID": "12.pbs"}, qstat)
    assert asked == [["qstat", "-f", "12.pbs"]]
    assert end == time.mktime(time.strptime("Mon Nov 30 16:30:00 2026", "%a %b %d %H:%M:%S %Y"))
    assert endtime.parse_qstat_end("Job Id: 1\n    stime = Mon Nov 30 15:00:00 2026\n") is None
    assert endtime.parse_qstat_end(QSTAT.replace("01:30:00", "1:xx")) is None


def test_cobalt_end_and_no_scheduler():
    assert endtime.job_end("cobalt", {"COBALT_ENDTIME": "1800000000"}) == 1_800_000_000
    assert endtime.job_end("cobalt", {"COBALT_ENDTIME": "soon"}) is None
    assert endtime.job_end("local", {"SLURM_JOB_ID": "1"}) is None


@pytest.mark.parametrize(("left", "grace", "after"), [
    (3600, 3, 3600 - 120 - 3),  # an hour: two minutes back, as legacy's templates did
    (60, 3, 60 - 15 - 3),       # a minute: a quarter of it
    (2, 3, 0),                  # already too late: stop now
    (-10, 3, 0),
])
def test_the_launcher_stops_before_the_end(left, grace, after):
    assert endtime.stop_after(1000 + left, 1000, grace) == pytest.approx(after)
