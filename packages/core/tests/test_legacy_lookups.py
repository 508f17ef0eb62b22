"""The legacy query subset as SQL (balsam.core.lookups) and the legacy report series
(balsam.core.reports): pure functions, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from balsam.core import lookups, reports
from balsam.core.models import ApplicationDefinition, BalsamJob
from balsam.errors import InvalidInput

JOBS = BalsamJob._columns


def where(*groups: tuple[bool, dict]) -> tuple[str, dict]:
    params = lookups.Params()
    text = lookups.where(groups, JOBS, params, "BalsamJob").as_string(None)
    return text, params.values


@pytest.mark.parametrize(("key", "value", "sql", "param"), [
    ("name", "a", '"t"."name" = %(p0)s::text', "a"),
    ("name__iexact", "A", 'lower("t"."name") = lower(%(p0)s::text)', "A"),
    ("name__contains", "a", 'strpos("t"."name", %(p0)s::text) > 0', "a"),
    ("name__icontains", "a", 'strpos(lower("t"."name"), lower(%(p0)s::text)) > 0', "a"),
    ("name__startswith", "a", 'starts_with("t"."name", %(p0)s::text)', "a"),
    ("name__endswith", "a", 'right("t"."name", length(%(p0)s::text)) = %(p0)s::text', "a"),
    ("job_id__startswith", 12, 'starts_with("t"."id"::text, %(p0)s::text)', "12"),
    ("num_nodes__gt", 2, '"t"."num_nodes" > %(p0)s::bigint', 2),
    ("num_nodes__lte", "2", '"t"."num_nodes" <= %(p0)s::bigint', 2),
    ("state__in", ("READY", "FAILED"), '"t"."state" = ANY(%(p0)s::text[])', ["READY", "FAILED"]),
    ("application", "sim", '"a"."name" = %(p0)s::text', "sim"),
    ("post_error_handler", True, '"t"."post_error_handler" = %(p0)s::boolean', True),
])
def test_each_lookup_is_a_condition_with_a_parameter(key, value, sql, param):
    assert where((True, {key: value})) == (f"({sql})", {"p0": param})


def test_nulls_groups_and_exclusions():
    assert where((True, {"user_workdir__isnull": True}))[0] == '("t"."user_workdir" IS NULL)'
    assert where((True, {"launcher_id": None}))[0] == '("t"."launcher_id" IS NULL)'
    text, params = where((True, {"name__contains": "sim", "workflow": "w"}),
                         (False, {"state": "JOB_FINISHED"}))
    assert text == ('(strpos("t"."name", %(p0)s::text) > 0 AND "t"."workflow" = %(p1)s::text) '
                    'AND NOT coalesce(("t"."state" = %(p2)s::text), false)')
    assert params == {"p0": "sim", "p1": "w", "p2": "JOB_FINISHED"}
    assert where() == ("true", {})


@pytest.mark.parametrize(("key", "value", "error"), [
    ("nmae", "x", "BalsamJob has no field 'nmae' to query; expected one of: "),
    ("name__regex", "x", "lookup 'regex' (in 'name__regex') is not supported"),
    ("num_nodes", "two", "num_nodes is compared with an integer, not 'two'"),
    ("name", 3, "name is compared with a string, not 3"),
    ("state__in", "READY", "state__in takes a list of values, not 'READY'"),
    ("name__isnull", "yes", "name__isnull takes True or False"),
    ("data", {}, "BalsamJob.data cannot be queried (filter in Python instead)"),
    ("lock", "", "BalsamJob has no field 'lock'"),
])
def test_bad_lookups_are_one_line_errors(key, value, error):
    with pytest.raises(InvalidInput) as refused:
        where((True, {key: value}))
    assert error in str(refused.value) and "\n" not in str(refused.value)


def test_ordering_is_total_and_whitelisted():
    key = JOBS["pk"]
    text = lookups.order(["-wall_time_minutes", "name"], JOBS, key, "BalsamJob").as_string(None)
    assert text == '"t"."wall_time_minutes" DESC, "t"."name" ASC, "t"."id"'
    with pytest.raises(InvalidInput, match="cannot be ordered by '-data'"):
        lookups.order(["-data"], JOBS, key, "BalsamJob")
    with pytest.raises(InvalidInput, match="cannot be ordered by '\\?'"):
        lookups.order(["?"], ApplicationDefinition._columns, key, "ApplicationDefinition")


def test_legacy_environment_text():
    assert lookups.parse_environ("A=1:B=x=y") == {"A": "1", "B": "x=y"}
    assert lookups.parse_environ("PATH=/a:/b:C=3") == {"PATH": "/a:/b", "C": "3"}
    assert lookups.parse_environ("") == {}
    assert lookups.format_environ({"A": "1", "B": "2"}) == "A=1:B=2"
    with pytest.raises(InvalidInput, match="must look like NAME=VALUE"):
        lookups.parse_environ("oops:A=1")


T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_running_and_cumulative_series():
    times, running = reports.running_series([at(0), at(0), at(10)], [at(5), at(20), at(20)])
    assert times == [at(0), at(5), at(10), at(20)] and running == [2, 1, 2, 0]
    assert reports.cumulative_series([at(3), at(1), at(3)]) == ([at(1), at(3)], [1, 3])
    assert reports.running_series([], []) == ([], [])


def test_minute_histogram_as_legacy_binned_errors():
    assert reports.minute_histogram([]) is None
    edges, counts = reports.minute_histogram([at(0), at(30), at(61), at(185)])
    assert edges == [at(0), at(60), at(120), at(180), at(240)] and counts == [2, 1, 0, 1]
    assert reports.minute_histogram([at(7)]) == ([at(7), at(67)], [1])
    edges, counts = reports.minute_histogram([at(0), at(120)])  # the last bin is closed
    assert len(edges) == len(counts) + 1 and counts == [1, 1]
