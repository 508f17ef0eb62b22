"""Durations and times as users type them, bounded, parsed in one place for every command.

Wall times as HPC users write them: ``90`` (minutes), Slurm's ``MM:SS``, ``HH:MM:SS``,
``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``, or units (``2h``, ``1h30m``, ``45s``, ``1d``), for every
command that takes one (``job``, ``submit-launch``, ``service``); :func:`wall_time_type` is its
click parameter type. Report windows (``--since``, ``--until``, ``--bin``): a duration
(:func:`parse_duration`) or a time (:func:`parse_time`), within :data:`MAX_SPAN` of now, so that
no date arithmetic on them can overflow.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from balsam.errors import InvalidInput

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_UNIT = re.compile(r"(\d+(?:\.\d+)?)(s|sec|min|m|hr|h|d)")
_SLURM = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
HINT = "use minutes (90), H:MM:SS (1:30:00), D-HH:MM:SS or units (2h, 1h30m)"


def parse_seconds(text: str | int | float) -> int:
    """A wall time in whole seconds (0 or more; callers needing a positive one say so)."""
    if isinstance(text, bool):
        message = f"invalid wall time {text!r}: {HINT}"
        raise InvalidInput(message)
    if isinstance(text, int | float):
        seconds = float(text) * 60
    else:
        seconds = _parse(text.strip().lower())
    if not math.isfinite(seconds) or seconds < 0 or seconds > 366 * 86400:
        message = f"invalid wall time {text!r}: it must be at most a year"
        raise InvalidInput(message)
    return int(math.ceil(seconds))


def _parse(spec: str) -> float:
    match = _SLURM.fullmatch(spec)
    if match and (match.group(1) or ":" in spec or spec.isdigit()):
        days, first, second, third = match.groups()
        d = int(days or 0)
        if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            return d * 86400 + int(first) * 3600 + int(second or 0) * 60 + int(third or 0)
        if third is not None:  # HH:MM:SS
            return int(first) * 3600 + int(second) * 60 + int(third)
        if second is not None:  # MM:SS
            return int(first) * 60 + int(second)
        return int(first) * 60  # minutes
    pos, total = 0, 0.0
    for unit in _UNIT.finditer(spec):
        if unit.start() != pos:
            break
        total += float(unit.group(1)) * _UNITS[unit.group(2)]
        pos = unit.end()
    if not spec or pos != len(spec):
        message = f"invalid wall time {spec!r}: {HINT}"
        raise InvalidInput(message)
    return total


def parse_minutes(text: str | int | float) -> int:
    """A wall time in whole minutes, rounded up (a job is never given less than asked)."""
    return -(-parse_seconds(text) // 60)


@cache
def wall_time_type() -> Any:
    """The click parameter type of a wall time option (value: whole minutes)."""
    import click

    class WallTime(click.ParamType):
        name = "DURATION"

        def convert(self, value: Any, param: click.Parameter | None,
                    ctx: click.Context | None) -> int:
            if isinstance(value, int):
                return value
            try:
                return parse_minutes(value)
            except InvalidInput as exc:
                self.fail(str(exc), param, ctx)

    return WallTime()


# --- report windows ---------------------------------------------------------------------------

#: The longest duration, and the farthest a time may be from now: a century is beyond any
#: history, and dates a century either side of now are far from Python's limits.
MAX_SPAN = timedelta(days=36525)
_SPAN_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_SPAN = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|min|m|h|d|w)?", re.IGNORECASE)
_YEARS = MAX_SPAN.days // 365


def _span_seconds(spec: str) -> float | None:
    """The seconds a duration spells (maybe 0 or inf), None if it spells none."""
    spec = spec.strip().lower()
    pos, seconds = 0, 0.0
    for match in _SPAN.finditer(spec):
        bare = match.group(2) is None and (pos > 0 or match.end() != len(spec))
        if match.start() != pos or bare:  # a bare number is only allowed alone: "90"
            break
        seconds += float(match.group(1)) * _SPAN_UNITS[match.group(2) or "s"]
        pos = match.end()
    return seconds if spec and pos == len(spec) else None


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``5m``, ``1.5h``, ``2d``, ``1w`` or ``1h30m`` as a positive timedelta of
    at most MAX_SPAN."""
    seconds = _span_seconds(text)
    if seconds is None or seconds <= 0:
        message = f"invalid duration {text!r}: use a positive number with a unit, e.g. 30s, 5m, 2h"
        raise InvalidInput(message)
    if seconds > MAX_SPAN.total_seconds():  # inf too (hundreds of digits)
        message = f"invalid duration {text!r}: it must be at most {_YEARS} years"
        raise InvalidInput(message)
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """``now``, a duration ago (``2h``, ``-2h``, ``7d``) or an ISO 8601 date or time (local time
    unless it names its zone), within MAX_SPAN of ``now``."""
    spec = text.strip()
    now = now or datetime.now(UTC)
    if spec.lower() == "now":
        return now
    too_far = f"invalid time {text!r}: it must be within {_YEARS} years of now"
    try:
        moment = datetime.fromisoformat(spec)
    except ValueError:
        seconds = _span_seconds(spec.removeprefix("-").removesuffix(" ago"))
        if seconds is None or seconds <= 0:
            message = (f"invalid time {text!r}: use an ISO date or time (2024-05-01, "
                       f"2024-05-01T12:30), 'now', or a duration ago such as 2h or 7d")
            raise InvalidInput(message) from None
        if seconds > MAX_SPAN.total_seconds():
            raise InvalidInput(too_far) from None
        return now - timedelta(seconds=seconds)
    try:
        moment = moment.astimezone()
    except (ValueError, OverflowError):  # year 1 has no local time west of UTC
        raise InvalidInput(too_far) from None
    if not now - MAX_SPAN <= moment <= now + MAX_SPAN:
        raise InvalidInput(too_far)
    return moment
