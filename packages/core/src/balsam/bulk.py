"""Creating many tasks at once: validated task specifications streamed through COPY, all or
none. :func:`balsam.api.add_tasks` and ``balsam job --from/--sweep`` both come here.

A row is built as COPY text from the precomputed text of the defaults, so a task costs only
the fields it sets. Rows go in blocks, each copied straight into ``tasks`` with ids drawn from
its sequence just before (so the ids are known in input order; the statement triggers fire once
a block). A worker thread builds the next block meanwhile: Python's work overlaps the server's.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from typing import Any

from balsam.db import Connection, wrap_db_errors
from balsam.errors import BalsamError, InvalidInput, NotFound
from balsam.models import TASK_FIELDS, App, Task, coerce_task_field, task_field
from balsam.queries import q
from balsam.states import State

#: Columns written for each new task, in COPY order (after its id).
COLUMNS = ("name", "workflow", "app_id", "args", "data", "user_workdir", "description",
           "wall_time_minutes", "num_nodes", "ranks_per_node", "threads_per_rank",
           "threads_per_core", "cpu_affinity", "node_packing_count", "gpus_per_rank", "mpi_flags",
           "coschedule_num_nodes", "environ_vars",
           "input_files", "post_error_handler", "post_timeout_handler", "auto_timeout_retry",
           "allow_failed_parents", "stage_in_url", "stage_out_url", "stage_out_files", "state")
_POSITION = {c: i for i, c in enumerate(COLUMNS)}
_JSON = frozenset({"data", "environ_vars"})
_APP_KEYS = ("app", "application", "app_id")
#: Rows per block: one COPY each, while the next block is built.
BLOCK = 10_000
#: Most characters of COPY text per block: rows with large data end a block sooner, so that
#: memory holds a few blocks of bounded size, whatever the rows hold.
BLOCK_CHARS = 32 << 20
#: Most distinct (field, value) pairs whose COPY text a builder remembers.
MEMO = 10_000
_SCALARS = frozenset({str, int, bool})
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPED = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
_UNESCAPE = re.compile(r"\\[\\tnr]")

Progress = Callable[[int], None]


def copy_text(column: str, value: Any) -> str:
    """A validated value in COPY text format."""
    if value is None:
        return "\\N"
    if column in _JSON:
        return json.dumps(value, separators=(",", ":")).translate(_ESCAPE)
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value).translate(_ESCAPE)


def _defaults() -> list[str]:
    values = {f.name: f.default_factory() if callable(f.default_factory) else f.default
              for f in fields(Task) if f.name in TASK_FIELDS}
    values["state"] = State.READY.value
    return [copy_text(c, values.get(c)) for c in COLUMNS]


_DEFAULT_TEXT = _defaults()
_COLUMN_OF: dict[str, str] = {}


def _column(name: str) -> str:
    column = _COLUMN_OF.get(name)
    if column is None:
        column = _COLUMN_OF[name] = task_field(name)
    return column


class Builder:
    """Turns task specifications into COPY rows and parent edges, resolving app names once."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.app_ids: dict[Any, int] = {}
        self.edges: list[tuple[int, int]] = []  # (parent id, row index)
        self.count = 0
        #: (field, value) -> (position, COPY text) of values seen before (workflow, app, sizes).
        self.memo: dict[tuple[str, type, Any], tuple[int, str]] = {}

    def row(self, spec: Mapping[str, Any]) -> str:
        """The COPY line of one task without its id (validated; InvalidInput names the bad field
        and row)."""
        index = self.count
        cells = _DEFAULT_TEXT.copy()
        app: Any = None
        parents: Any = ()
        for name, value in spec.items():
            if name in _APP_KEYS:
                app = value
            elif name == "parents":
                parents = value or ()
            elif type(value) in _SCALARS and (name, type(value), value) in self.memo:
                position, cell = self.memo[name, type(value), value]
                cells[position] = cell
            else:
                column = _column(name)
                cell = copy_text(column, coerce_task_field(column, value))
                cells[_POSITION[column]] = cell
                if type(value) in _SCALARS and len(self.memo) < MEMO:
                    self.memo[name, type(value), value] = (_POSITION[column], cell)
        cells[_POSITION["app_id"]] = str(self.app_id(app))
        parent_ids = _parent_ids(parents)
        if parent_ids:
            self.edges += [(p, index) for p in parent_ids]
            cells[_POSITION["state"]] = State.AWAITING_PARENTS.value
        self.count += 1
        return "\t".join(cells) + "\n"

    def load_apps(self) -> None:
        rows = self.conn.execute(q("app_ids")).fetchall()
        self.app_ids = {r["name"]: r["id"] for r in rows} | {r["id"]: r["id"] for r in rows}

    def app_id(self, app: Any) -> int:
        """The id of an app given by name, id or record (from :meth:`load_apps`)."""
        if app is None or app == "":
            message = "a task needs an app (app='name')"
            raise InvalidInput(message)
        key = app.id if isinstance(app, App) and app.id is not None else \
            app.name if isinstance(app, App) else app
        found = self.app_ids.get(key)
        if found is None or isinstance(key, bool):
            message = f"unknown app {app.name if isinstance(app, App) else app!r}"
            raise NotFound(message)
        return found


def check_field(name: str) -> None:
    """Refuse a key no task specification may have (InvalidInput): a CSV header is checked
    before its rows, even when it has none."""
    if name not in _APP_KEYS and name != "parents":
        _column(name)


def _parent_ids(refs: Any) -> list[int]:
    if isinstance(refs, int | Task):
        refs = [refs]
    ids = set()
    for ref in refs:
        task_id = ref.id if isinstance(ref, Task) else ref
        if isinstance(task_id, str) and task_id.strip().isdigit():
            task_id = int(task_id)
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            message = f"a parent is given by its task id (an integer), got {ref!r}"
            raise InvalidInput(message)
        ids.add(task_id)
    return sorted(ids)


def insert_tasks(conn: Connection, specs: Iterable[Mapping[str, Any]], *,
                 progress: Progress | None = None,
                 where: Callable[[int], str] | None = None) -> list[int]:
    """Create the tasks of ``specs`` in one transaction (all or none); return their ids in
    order. ``progress(n)`` is called after each block with the number of tasks inserted so far.
    A bad specification fails the whole call, its error prefixed with ``where(index)`` (by
    default ``task N``, except for the first task). One task is a plain INSERT; more go
    through COPY."""
    builder = Builder(conn)
    stream = iter(specs)
    first = list(itertools.islice(stream, 2))
    with wrap_db_errors(), conn.transaction():
        builder.load_apps()  # now: the COPY below holds the connection
        if len(first) < 2:
            ids = [_insert_one(conn, builder, first[0])] if first else []
        else:
            ids = _copy(conn, builder, itertools.chain(first, stream), progress, where)
        _check_parents(conn, {p for p, _ in builder.edges})
        if builder.edges:
            conn.execute(q("insert_edges"), {"parents": [p for p, _ in builder.edges],
                                             "children": [ids[i] for _, i in builder.edges]})
    if progress:
        progress(builder.count)
    return ids


def check_tasks(conn: Connection, specs: Iterable[Mapping[str, Any]], *,
                where: Callable[[int], str] | None = None) -> int:
    """What :func:`insert_tasks` does, rolled back: a dry run that passes means the real one
    would, with the same errors. Returns how many tasks it checked. (The ids it drew from the
    sequence are not given back: the tasks added next skip them.)"""
    with wrap_db_errors(), conn.transaction(force_rollback=True):
        return len(insert_tasks(conn, specs, where=where))


def _insert_one(conn: Connection, builder: Builder, spec: Mapping[str, Any]) -> int:
    cells = builder.row(spec).rstrip("\n").split("\t")
    params = {c: None if v == "\\N" else _UNESCAPE.sub(lambda m: _UNESCAPED[m.group()], v)
              for c, v in zip(COLUMNS, cells, strict=True)}
    row = conn.execute(q("insert_task"), params).fetchone()
    assert row is not None
    return int(row["id"])


def _copy(conn: Connection, builder: Builder, specs: Iterable[Mapping[str, Any]],
          progress: Progress | None, where: Callable[[int], str] | None) -> list[int]:
    ids: list[int] = []
    blocks = _blocks(builder, specs, where)
    with ThreadPoolExecutor(1, thread_name_prefix="balsam-bulk") as worker:
        pending = worker.submit(_next_block, blocks)
        while rows := pending.result():
            pending = worker.submit(_next_block, blocks)  # built while the server copies this one
            block_ids = _new_ids(conn, len(rows))
            with conn.cursor().copy(q("copy_tasks")) as copy:
                copy.write("".join([f"{i}\t{row}" for i, row in zip(block_ids, rows, strict=True)]))
            ids += block_ids
            if progress:
                progress(len(ids))
    return ids


def _next_block(blocks: Iterator[list[str]]) -> list[str]:
    return next(blocks, [])


def _new_ids(conn: Connection, count: int) -> list[int]:
    """``count`` ids from the tasks' sequence, increasing (one array: no row per id)."""
    row = conn.execute(q("new_task_ids"), {"count": count}).fetchone()
    assert row is not None
    return sorted(row["ids"])


def _blocks(builder: Builder, specs: Iterable[Mapping[str, Any]],
            where: Callable[[int], str] | None) -> Iterator[list[str]]:
    """COPY lines (without ids) of ``BLOCK`` tasks at a time (fewer if they reach
    ``BLOCK_CHARS``), the last block shorter."""
    block: list[str] = []
    size = 0
    for spec in specs:
        try:
            row = builder.row(spec)
        except BalsamError as exc:
            raise _located(exc, builder.count, where) from None
        block.append(row)
        size += len(row)
        if len(block) >= BLOCK or size >= BLOCK_CHARS:
            yield block
            block = []
            size = 0
    if block:
        yield block


def _located(exc: BalsamError, index: int, where: Callable[[int], str] | None) -> BalsamError:
    if where is None and index == 0:
        return exc
    prefix = where(index) if where else f"task {index + 1}"
    return type(exc)(f"{prefix}: {exc}")


def _check_parents(conn: Connection, ids: set[int]) -> None:
    if not ids:
        return
    rows = conn.execute(q("existing_ids"), {"ids": sorted(ids)}).fetchall()
    missing = sorted(ids - {r["id"] for r in rows})
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        message = f"no parent task {shown}" if len(missing) == 1 else f"no parent tasks {shown}"
        raise NotFound(message)
