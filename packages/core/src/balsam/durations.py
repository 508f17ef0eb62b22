"""Wall times as HPC users write them: ``90`` (minutes), Slurm's ``MM:SS``, ``HH:MM:SS``,
``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``, or units (``2h``, ``1h30m``, ``45s``, ``1d``).

One parser for every command that takes a wall time (``job``, ``submit-launch``,
``service``); :func:`wall_time_type` is its click parameter type.
"""

from __future__ import annotations

import math
import re
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
