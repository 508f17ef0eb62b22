"""One output contract for every command that shows data.

A listing is a tuple of :class:`Column` and an iterable of rows (sequences parallel to the
columns). :func:`write` prints it in one of four modes:

- ``table`` (a terminal): aligned columns under a dashed rule, as ``sacct`` prints them; a long
  text cell wraps inside its column so the table fits the terminal. Ids, states, numbers and
  times are never wrapped or shortened.
- ``plain`` (a pipe or file): aligned columns, one row per line, nothing shortened, ``-`` for an
  empty cell (what ``grep``, ``awk``, ``sort`` and ``column`` expect).
- ``tsv``: tab-separated, escaped as PostgreSQL's COPY text format (``\\t``, ``\\n``, ``\\\\``).
- ``json``: an array of objects, one object per line.

Rows are written as they come: widths are taken from the first :data:`CHUNK` rows, so a
listing of a million rows starts at once and holds one chunk in memory. One time format
everywhere: ISO 8601 in local time with its offset, to the second (:func:`iso_time`).

This module imports nothing heavy, so any plugin's command can use it; :func:`options` adds
the ``--output``, ``--no-header`` and ``--fields`` options to a click command.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import Enum
from itertools import islice
from pathlib import PurePath
from typing import IO, Any

from balsam.errors import InvalidInput

MODES = ("table", "plain", "tsv", "json")
#: Kinds of column: ``text`` wraps in a table; the others are never broken. A ``json`` cell
#: holds JSON text (shown as it is, parsed in JSON output).
KINDS = ("id", "state", "number", "time", "duration", "text", "json")
#: Rows read before the widths of a streamed listing are fixed.
CHUNK = 1000
GAP = "  "
#: Narrowest a wrapped text column is made.
MIN_TEXT = 10


#: Shorter headers for long keys, in tables and plain text (TSV and JSON show the keys).
HEADERS = {"num_nodes": "nodes", "ranks_per_node": "ranks/node", "threads_per_rank": "thr/rank",
           "threads_per_core": "thr/core", "node_packing_count": "packing",
           "wall_time_minutes": "wall_min", "launcher_id": "launcher",
           "state_changed_at": "changed_at", "finished_last_hour": "last_hour",
           "heartbeat_age": "heartbeat"}


@dataclass(frozen=True)
class Column:
    """A column of a listing: ``key`` is its JSON key and its ``--fields`` name."""

    key: str
    kind: str = "text"
    #: Header of tables and plain text (default: :data:`HEADERS` or the key). TSV and JSON
    #: always use the key.
    header: str = ""

    @property
    def title(self) -> str:
        return self.header or HEADERS.get(self.key, self.key)

    @property
    def right(self) -> bool:
        return self.kind in ("id", "number", "duration")


@dataclass(frozen=True)
class Listing:
    """The columns a command can show, and those shown by default (all of them in JSON)."""

    columns: tuple[Column, ...]
    default: tuple[str, ...] = ()
    #: Legacy environment variable whose fields are added to the default ones (colon or comma
    #: separated), e.g. ``BALSAM_LS_FIELDS=num_nodes:args``.
    extra_env: str = ""

    def keys(self) -> list[str]:
        return [c.key for c in self.columns]

    def select(self, fields: str | None, mode: str) -> list[int]:
        """Indexes of the columns to show: ``--fields a,b`` replaces the defaults, ``+a,b``
        adds to them; without it JSON shows every column, the other modes the defaults."""
        keys = self.keys()
        default = list(self.default or keys)
        extra = os.environ.get(self.extra_env, "") if self.extra_env else ""
        if extra:
            default += _names(extra.replace(":", ","), keys, self.extra_env)
        if fields is None or not fields.strip():
            chosen = keys if mode == "json" else default
        elif fields.strip().startswith("+"):
            chosen = default + _names(fields.strip()[1:], keys, "--fields")
        else:
            chosen = _names(fields, keys, "--fields")
        return [keys.index(k) for k in dict.fromkeys(chosen)]


def _names(text: str, known: list[str], what: str) -> list[str]:
    names = [n.strip().lower().replace("-", "_") for n in text.split(",") if n.strip()]
    if not names:
        message = f"{what} names no field; choose from: {', '.join(known)}"
        raise InvalidInput(message)
    unknown = [n for n in names if n not in known]
    if unknown:
        message = f"{what}: unknown field {unknown[0]!r}; choose from: {', '.join(known)}"
        raise InvalidInput(message)
    return names


# --- values ------------------------------------------------------------------------------------


def iso_time(moment: datetime | None) -> str:
    """The one time format: ISO 8601, local time with its offset, to the second."""
    if moment is None:
        return ""
    return moment.astimezone().isoformat(timespec="seconds")


def duration_text(seconds: float | None) -> str:
    """A duration for people: ``45s``, ``12m05s``, ``3h02m``, ``2d04h``."""
    if seconds is None:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def text(value: Any, kind: str = "text") -> str:
    """A value as shown in a cell (before escaping)."""
    if value is None:
        return ""
    if kind == "duration" and isinstance(value, int | float):
        return duration_text(value)
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    if isinstance(value, dict | list | tuple):
        return json.dumps(plain(value), separators=(",", ":"), ensure_ascii=False)
    return str(value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """A value as JSON sees it: times in the one format, enums by value, paths as strings."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return value


#: Characters a terminal acts on rather than shows: C0 controls and DEL (ESC starts the
#: sequences that recolour, hide text, retitle windows or clear the screen), C1 controls, and
#: the bidirectional overrides that reorder what is shown. A listing shows other users' text;
#: each comes out escaped (``\\x1b``, ``\\u202e``), never acting on the reader's terminal.
_ACTIVE = [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_SHOWN = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _ACTIVE}
_ONE_LINE = str.maketrans({**_SHOWN, "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: JSON escapes the C0 controls itself; the others as ``\\u`` escapes JSON readers decode.
_JSON = str.maketrans({c: f"\\u{c:04x}" for c in _ACTIVE if c >= 0x7F})
#: COPY text format: its own escapes for the C0 controls and DEL (``\\xNN``); other text as is
#: (COPY has no escape for a character).
_TSV = str.maketrans({**{c: e for c, e in _SHOWN.items() if c < 0x80},
                      "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def json_text(value: Any) -> str:
    """``value`` as indented JSON (a document rather than a listing), escaped as listings are."""
    return json.dumps(plain(value), indent=2, ensure_ascii=False).translate(_JSON)


def visible(value: str) -> str:
    """``value`` on one line, with nothing a terminal would act on (see :data:`_ACTIVE`)."""
    return value.translate(_ONE_LINE)


# --- options -----------------------------------------------------------------------------------


@dataclass
class Output:
    """How a command prints: mode, header, chosen fields, terminal width, stream."""

    mode: str = "plain"
    header: bool = True
    fields: str | None = None
    width: int = 80
    stream: IO[str] = field(default_factory=lambda: sys.stdout)

    @classmethod
    def resolve(cls, mode: str | None = None, *, header: bool = True,
                fields: str | None = None, stream: IO[str] | None = None) -> Output:
        """The output of a command: ``mode``, else the site configuration's ``output``
        (``$BALSAM_OUTPUT``, see :mod:`balsam.config`), else a table on a terminal and plain
        text otherwise."""
        stream = stream or sys.stdout
        chosen = (mode or _configured_mode()).lower()
        tty = _isatty(stream)
        if not chosen or chosen == "auto":
            chosen = "table" if tty else "plain"
        if chosen not in MODES:
            message = f"unknown output {chosen!r}; choose one of: {', '.join(MODES)}"
            raise InvalidInput(message)
        width = shutil.get_terminal_size((80, 24)).columns if tty or "COLUMNS" in os.environ \
            else 80
        return cls(chosen, header, fields, max(width, 20), stream)

    @property
    def interactive(self) -> bool:
        """True when a person reads it (a table on a terminal): progress and hints are shown."""
        return self.mode == "table" and _isatty(self.stream)

    def note(self, line: str) -> None:
        """A remark that is not data (``more rows match...``): on stderr, never in a pipe's data."""
        print(line, file=sys.stderr)

    def selected(self, listing: Listing) -> list[Column]:
        """The columns this output shows of ``listing`` (``--fields``, mode)."""
        return [listing.columns[i] for i in listing.select(self.fields, self.mode)]

    def write(self, listing: Listing, rows: Iterable[Sequence[Any]],
              title: str | None = None) -> int:
        """Print ``rows`` (each parallel to ``listing.columns``); return how many were written."""
        picked = listing.select(self.fields, self.mode)
        columns = [listing.columns[i] for i in picked]
        return self.write_rows(columns, (tuple(r[i] for i in picked) for r in rows), title)

    def write_rows(self, columns: Sequence[Column], rows: Iterable[Sequence[Any]],
                   title: str | None = None) -> int:
        """Print rows already holding the values of ``columns`` (see :meth:`selected`)."""
        return _WRITERS[self.mode](self, list(columns), iter(rows), title)

    def records(self, listing: Listing, records: Iterable[Mapping[str, Any]],
                title: str | None = None) -> int:
        """Print mappings keyed by the listing's keys (a missing key is an empty cell)."""
        keys = listing.keys()
        return self.write(listing, ([r.get(k) for k in keys] for r in records), title)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _configured_mode() -> str:
    """``output`` of the site configuration (``$BALSAM_OUTPUT``, balsam.toml, ~/.balsam)."""
    from balsam.config import load_settings

    return str(load_settings().get("output"))


# --- writers -----------------------------------------------------------------------------------


def _write_json(out: Output, columns: list[Column], rows: Iterator[Sequence[Any]],
                title: str | None) -> int:
    keys = [c.key for c in columns]
    times = [i for i, c in enumerate(columns) if c.kind == "time"]
    parsed = [i for i, c in enumerate(columns) if c.kind == "json"]
    # One C-encoder call a row; what it does not know (enums, paths, other times) goes through
    # plain(). Times and JSON text are converted first: they are most of the Python work.
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=plain).encode
    write = out.stream.write
    count = 0
    for row in rows:
        values = list(row)
        for i in times:
            if values[i] is not None:
                values[i] = iso_time(values[i])
        for i in parsed:
            if type(values[i]) is str:
                values[i] = json.loads(values[i])
        record = encode(dict(zip(keys, values, strict=True))).translate(_JSON)
        write(("[\n" if count == 0 else ",\n") + record)
        count += 1
    write("[]\n" if count == 0 else "\n]\n")
    return count


def _write_tsv(out: Output, columns: list[Column], rows: Iterator[Sequence[Any]],
               title: str | None) -> int:
    write = out.stream.write
    if out.header:
        write("\t".join(c.key for c in columns) + "\n")  # the keys: what scripts select by
    formats = [formatter(c.kind) for c in columns]
    count = 0
    for row in rows:
        write("\t".join([f(v) if type(v) is not str else v.translate(_TSV)
                         for f, v in zip(formats, row, strict=True)]) + "\n")
        count += 1
    return count


def formatter(kind: str, empty: str = "") -> Callable[[Any], str]:
    """The cell text of a column's values (fast paths for the common types)."""

    def cell(value: Any) -> str:
        kind_of = type(value)
        if kind_of is str:
            shown = value.translate(_ONE_LINE)
        elif value is None:
            return empty
        elif kind_of is int and kind != "duration":
            return str(value)
        else:
            shown = text(value, kind).translate(_ONE_LINE)
        return shown or empty

    return cell


def _cells(formats: list[Callable[[Any], str]], row: Sequence[Any]) -> list[str]:
    return [f(v) for f, v in zip(formats, row, strict=True)]


def _write_plain(out: Output, columns: list[Column], rows: Iterator[Sequence[Any]],
                 title: str | None) -> int:
    formats = [formatter(c.kind, "-") for c in columns]
    first = [_cells(formats, r) for r in islice(rows, CHUNK)]
    widths = _natural(columns, first, out.header)
    line = _liner(columns, widths)
    write = out.stream.write
    if title and out.header:
        write(f"# {title}\n")
    if out.header:
        write(line([c.title for c in columns]))
    for cells in first:
        write(line(cells))
    count = len(first)
    for row in rows:
        write(line(_cells(formats, row)))
        count += 1
    return count


def _natural(columns: list[Column], rows: list[list[str]], header: bool) -> list[int]:
    widths = [len(c.title) if header else 1 for c in columns]
    for cells in rows:
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    return widths


def _unpadded(cell: str, _width: int) -> str:
    return cell


def _liner(columns: list[Column], widths: list[int]) -> Callable[[list[str]], str]:
    """A function joining one row's cells, padded (the last column is not padded)."""
    pads: list[tuple[Callable[[str, int], str], int]] = [
        (str.rjust if c.right else str.ljust, w) for c, w in zip(columns, widths, strict=True)]
    if not columns[-1].right:
        pads[-1] = (_unpadded, 0)

    def line(cells: list[str]) -> str:
        return GAP.join([pad(cell, w) for (pad, w), cell in zip(pads, cells, strict=True)]) \
            + "\n"

    return line


def _write_table(out: Output, columns: list[Column], rows: Iterator[Sequence[Any]],
                 title: str | None) -> int:
    formats = [formatter(c.kind) for c in columns]
    first = [_cells(formats, r) for r in islice(rows, CHUNK)]
    natural = _natural(columns, first, True)
    widths = fit(columns, natural, out.width)
    write = out.stream.write
    if title and out.header:
        write(f"{title}\n")
    if out.header:
        write(_table_lines(columns, widths, [c.title for c in columns]))
        write(GAP.join("-" * w for w in widths) + "\n")
    for cells in first:
        write(_table_lines(columns, widths, cells))
    count = len(first)
    for row in rows:
        write(_table_lines(columns, widths, _cells(formats, row)))
        count += 1
    return count


def fit(columns: Sequence[Column], natural: Sequence[int], width: int) -> list[int]:
    """Column widths that fit ``width``: only text columns shrink (their cells wrap), the widest
    first, never below :data:`MIN_TEXT` or their header; the rest keep their natural width (a
    listing whose ids, states, numbers and times alone are wider stays wider)."""
    widths = list(natural)
    budget = width - len(GAP) * (len(widths) - 1)
    text_cols = [i for i, c in enumerate(columns) if c.kind == "text"]
    over = sum(widths) - budget
    while over > 0:
        candidates = [i for i in text_cols
                      if widths[i] > max(MIN_TEXT, len(columns[i].title))]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        floor = max(MIN_TEXT, len(columns[widest].title))
        others = sorted((widths[i] for i in candidates if i != widest), reverse=True)
        target = max(floor, others[0] if others else floor, widths[widest] - over)
        if target >= widths[widest]:
            target = widths[widest] - 1
        over -= widths[widest] - target
        widths[widest] = target
    return widths


def _table_lines(columns: list[Column], widths: list[int], cells: list[str]) -> str:
    """One row, as many lines as its tallest wrapped cell."""
    parts: list[list[str]] = []
    for column, w, cell in zip(columns, widths, cells, strict=True):
        if column.kind == "text" and len(cell) > w:
            parts.append(textwrap.wrap(cell, w, break_on_hyphens=False) or [""])
        else:
            parts.append([cell])
    height = max(len(p) for p in parts)
    last = len(columns) - 1
    lines = []
    for n in range(height):
        pieces = []
        for i, (column, w, part) in enumerate(zip(columns, widths, parts, strict=True)):
            cell = part[n] if n < len(part) else ""
            pieces.append(cell.rjust(w) if column.right else cell if i == last else cell.ljust(w))
        lines.append(GAP.join(pieces).rstrip() + "\n")
    return "".join(lines)


_WRITERS: dict[str, Callable[[Output, list[Column], Iterator[Sequence[Any]], str | None],
                             int]] = {
    "json": _write_json, "tsv": _write_tsv, "plain": _write_plain, "table": _write_table,
}


# --- click --------------------------------------------------------------------------------------


def options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-o/--output``, ``--json`` (legacy: ``--output json``), ``--no-header`` and
    ``--fields`` to a click command; the command receives ``out: Output`` instead."""
    import functools

    import click

    @functools.wraps(f)
    def wrapper(*args: Any, output: str | None, as_json: bool, no_header: bool,
                fields: str | None, **kwargs: Any) -> Any:
        if as_json and output and output.lower() != "json":
            message = f"--json and --output {output} ask for two formats: give one"
            raise click.UsageError(message)
        out = Output.resolve("json" if as_json else output, header=not no_header, fields=fields)
        return f(*args, out=out, **kwargs)

    for decorate in (
        click.option("--fields", metavar="A,B,...",
                     help="Columns to show (+A,B adds to the default ones)."),
        click.option("--no-header", is_flag=True, help="Leave out the header line."),
        click.option("--json", "as_json", is_flag=True, help="Same as --output json."),
        click.option("-o", "--output", type=click.Choice(MODES, case_sensitive=False),
                     help="table (terminal), plain (pipe), tsv or json; default "
                          "$BALSAM_OUTPUT, else by where the output goes."),
    ):
        wrapper = decorate(wrapper)
    return wrapper
