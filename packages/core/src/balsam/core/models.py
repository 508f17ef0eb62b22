"""Legacy Balsam 0.5's ``balsam.core.models``: ``BalsamJob`` and ``ApplicationDefinition`` with
their legacy field names, ``save()``, ``update_state()`` and the query subset of the legacy docs
(``objects.all/filter/exclude/get/count/values_list/order_by/first``, ``bulk_create``,
``get_or_create``), as a thin layer over :mod:`balsam.api`, which does the work.

Differences a legacy user should know, kept on purpose:

* ``job_id`` (and ``pk``) is the task's integer id, given when the job is saved; legacy used a
  UUID made at construction.
* Creating a job makes it READY, or AWAITING_PARENTS when it has parents (legacy: CREATED, until
  a launcher looked at it). ``update_state("CREATED")`` resets a task, as legacy's did.
* ``environ_vars`` reads and writes legacy's ``A=1:B=2`` text (a mapping is accepted too).
* ``mpi_flags``, ``coschedule_num_nodes`` and ``wait_for_parents`` read as their legacy
  defaults; setting them to anything else is refused (not supported yet).
* Queries run SQL composed from a whitelist of fields (no ORM): unknown fields and lookups are a
  one-line error; ``data`` and ``environ_vars`` can be read but not filtered on.

The legacy analytics (``utilization_report``, ``throughput_report``, ``error_report``,
``process_job_times``) are here too, as in legacy (:mod:`balsam.core.reports`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

from psycopg import sql

from balsam import api
from balsam.core import lookups
from balsam.core.lookups import Column
from balsam.core.reports import (
    error_report,
    process_job_times,
    throughput_report,
    utilization_report,
)
from balsam.db import wrap_db_errors
from balsam.errors import InvalidInput, NotFound
from balsam.models import App, Event, Task, coerce_task_field
from balsam.queries import q
from balsam.states import FINAL, INITIAL, State, parse_state

__all__ = [
    "END_STATES", "STATES", "TIME_FMT", "ApplicationDefinition", "BalsamJob",
    "MultipleObjectsReturned", "error_report", "process_job_times", "throughput_report",
    "utilization_report",
]

#: Legacy's list of states, and of those a job ends in.
STATES = [s.value for s in State]
END_STATES = [s.value for s in State if s in FINAL]
#: How legacy wrote times in ``state_history``.
TIME_FMT = "%m-%d-%Y %H:%M:%S.%f"

R = TypeVar("R", bound="_Record")


class MultipleObjectsReturned(InvalidInput):
    """More than one object matched a query that expects one."""


# --- records ------------------------------------------------------------------------------------


class _Record:
    """A row as a legacy model object: field values, what was last saved, and the table's
    description for queries."""

    _what: ClassVar[str]
    _key: ClassVar[str]  # the legacy name of the id
    _queries: ClassVar[str]  # prefix of the named queries: legacy_job or legacy_app
    _columns: ClassVar[dict[str, Column]]
    _writable: ClassVar[dict[str, Any]]  # field -> default
    _unsupported: ClassVar[dict[str, Any]] = {}
    _row_type: ClassVar[type[App] | type[Task]]  # the record of balsam.models behind it
    objects: ClassVar[Manager[Any]]
    DoesNotExist: ClassVar[type[NotFound]] = NotFound
    MultipleObjectsReturned: ClassVar[type[InvalidInput]] = MultipleObjectsReturned

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_row", None)
        object.__setattr__(self, "_values", copy.deepcopy(self._writable))
        object.__setattr__(self, "_saved", {})
        for name, value in fields.items():
            setattr(self, name, value)

    # Attributes: writable fields are kept in _values (validated on the way in); read-only
    # columns come from the loaded row.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        values = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        if name in self._unsupported:
            return self._unsupported[name]
        row = object.__getattribute__(self, "_row")
        if name in self._columns and row is not None:
            return getattr(row, self._columns_attr(name))
        if name in self._columns:
            return None
        message = f"{type(self).__name__} has no field {name!r}"
        raise AttributeError(message)

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        attribute = getattr(cls, name, None)
        if isinstance(attribute, property) and attribute.fset is not None:
            object.__setattr__(self, name, value)
        elif name in self._writable:
            self._values[name] = self._coerce(name, value)
        elif name in self._unsupported:
            if value != self._unsupported[name]:
                message = (f"{cls.__name__}.{name} is not supported yet (legacy parity, issue "
                           f"15): leave it at {self._unsupported[name]!r}")
                raise InvalidInput(message)
        else:
            known = name in self._columns or isinstance(attribute, property)
            message = f"{cls.__name__}.{name} {'is read-only' if known else 'is not a field'}"
            raise InvalidInput(message)

    @classmethod
    def _columns_attr(cls, name: str) -> str:
        return {"job_id": "id", "pk": "id"}.get(name, name)

    def _coerce(self, name: str, value: Any) -> Any:
        return value

    @property
    def pk(self) -> int | None:
        """The id (None until saved)."""
        return None if self._row is None else self._row.id

    @classmethod
    def _record(cls, row: dict[str, Any]) -> Self:
        """An object from a dict row of its named query."""
        return cls()._load(cls._row_type.from_row(row))

    def _load(self, row: Any) -> Self:
        object.__setattr__(self, "_row", row)
        for name in self._writable:
            self._values[name] = self._from_row(name, row)
        object.__setattr__(self, "_saved", copy.deepcopy(self._values))
        return self

    def _from_row(self, name: str, row: Any) -> Any:
        return getattr(row, name)

    def _complete(self) -> bool:
        """Whether the object can be inserted as it is."""
        return True

    def save(self) -> None:
        raise NotImplementedError

    def _changes(self) -> dict[str, Any]:
        return {k: v for k, v in self._values.items() if v != self._saved.get(k)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and self.pk is not None and self.pk == other.pk

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.pk if self.pk is not None else id(self)))


class ApplicationDefinition(_Record):
    """An app: ``name``, ``executable``, ``description``, ``preprocess``, ``postprocess``,
    ``envscript`` (and read-only ``id``/``pk``, ``owner``, ``created_at``)."""

    objects: ClassVar[Manager[ApplicationDefinition]]
    _what = "ApplicationDefinition"
    _row_type = App
    _key = "id"
    _queries = "legacy_app"
    _writable: ClassVar[dict[str, Any]] = {
        "name": "", "executable": "", "description": "", "preprocess": "", "postprocess": "",
        "envscript": ""}
    _columns: ClassVar[dict[str, Column]] = {
        **{n: Column(sql.Identifier("a", n), "text") for n in
           ("name", "executable", "description", "preprocess", "postprocess", "envscript",
            "owner")},
        "id": Column(sql.Identifier("a", "id"), "int"),
        "pk": Column(sql.Identifier("a", "id"), "int"),
        "created_at": Column(sql.Identifier("a", "created_at"), "time"),
    }

    def _coerce(self, name: str, value: Any) -> Any:
        if not isinstance(value, str):
            message = f"ApplicationDefinition.{name} must be a string, got {value!r}"
            raise InvalidInput(message)
        return value

    def _complete(self) -> bool:
        return bool(self.name and self.executable)

    def save(self) -> None:
        """Insert the app, or write the fields changed since it was loaded."""
        if self._row is None:
            self._load(api.add_app(**self._values))
            return
        app_id = self._row.id
        conn = api.connection()
        with conn.transaction():
            for name, value in self._changes().items():
                api.modify_app(app_id, name, value, conn=conn)
        self._load(api.get_app(app_id))

    def delete(self) -> None:
        """Remove the app (refused while tasks use it)."""
        if self.pk is not None:
            api.remove_app(self.pk)
        object.__setattr__(self, "_row", None)

    @property
    def cute_id(self) -> str:
        return f"[{self.name} | {self.pk}]"

    def __repr__(self) -> str:
        return f"ApplicationDefinition {self.pk}: {self.name} ({self.executable})"


class BalsamJob(_Record):
    """A task, with legacy Balsam's field names (see the module docstring for the differences)."""

    objects: ClassVar[Manager[BalsamJob]]
    _what = "BalsamJob"
    _row_type = Task
    _key = "job_id"
    _queries = "legacy_job"
    _writable: ClassVar[dict[str, Any]] = {
        "name": "", "workflow": "", "description": "", "application": "", "args": "",
        "data": {}, "user_workdir": "", "input_files": "", "wall_time_minutes": 1,
        "num_nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1, "threads_per_core": 1,
        "cpu_affinity": "none", "node_packing_count": 1, "gpus_per_rank": 0, "mpi_flags": "",
        "coschedule_num_nodes": 0, "environ_vars": "", "post_error_handler": False,
        "post_timeout_handler": False, "auto_timeout_retry": True, "allow_failed_parents": False,
        "state": "CREATED", "stage_in_url": "", "stage_out_url": "", "stage_out_files": ""}
    _unsupported: ClassVar[dict[str, Any]] = {
        "wait_for_parents": True,
        "queued_launch": None, "lock": ""}
    _columns: ClassVar[dict[str, Column]] = {
        **{n: Column(sql.Identifier("t", n), "text") for n in
           ("name", "workflow", "description", "args", "user_workdir", "input_files",
            "cpu_affinity", "mpi_flags", "state", "state_message", "owner")},
        **{n: Column(sql.Identifier("t", n), "text") for n in
           ("stage_in_url", "stage_out_url", "stage_out_files")},
        **{n: Column(sql.Identifier("t", n), "int") for n in
           ("wall_time_minutes", "num_nodes", "ranks_per_node", "threads_per_rank",
            "threads_per_core", "node_packing_count", "gpus_per_rank", "coschedule_num_nodes",
            "launcher_id", "attempts")},
        **{n: Column(sql.Identifier("t", n), "bool") for n in
           ("post_error_handler", "post_timeout_handler", "auto_timeout_retry",
            "allow_failed_parents")},
        **{n: Column(sql.Identifier("t", n), "time") for n in ("created_at", "state_changed_at")},
        **{n: Column(sql.Identifier("t", "id"), "int") for n in ("job_id", "pk", "id")},
        "application": Column(sql.Identifier("a", "name"), "text"),
        "data": Column(sql.Identifier("t", "data"), "json"),
        "environ_vars": Column(sql.Identifier("t", "environ_vars"), "json"),
    }

    def __init__(self, **fields: Any) -> None:
        object.__setattr__(self, "_parents", [])
        super().__init__(**fields)

    def _coerce(self, name: str, value: Any) -> Any:
        if name == "application":
            if isinstance(value, ApplicationDefinition):
                value = value.name
            if not isinstance(value, str):
                message = f"BalsamJob.application is an app's name, got {value!r}"
                raise InvalidInput(message)
            return value
        if name == "state":
            return parse_state(str(value)).value
        if name == "environ_vars":
            env = lookups.parse_environ(value) if isinstance(value, str) else value
            return lookups.format_environ(coerce_task_field("environ_vars", env))
        if name == "user_workdir":
            return coerce_task_field(name, value) or ""
        return coerce_task_field(name, value)

    def _from_row(self, name: str, row: Any) -> Any:
        if name == "application":
            return row.app_name
        if name == "environ_vars":
            return lookups.format_environ(row.environ_vars)
        if name == "state":
            return str(row.state)
        if name == "user_workdir":
            return row.user_workdir or ""
        return copy.deepcopy(getattr(row, name))

    # --- saving -------------------------------------------------------------------------------

    def _spec(self) -> dict[str, Any]:
        """What :func:`balsam.api.add_tasks` needs to insert this job."""
        if not self.application:
            message = f"BalsamJob {self.name!r} needs an application (the name of an app)"
            raise InvalidInput(message)
        if State(self.state) not in INITIAL:
            message = f"a new BalsamJob cannot start in state {self.state}"
            raise InvalidInput(message)
        spec = {k: v for k, v in self._values.items() if k not in ("application", "state")}
        spec["environ_vars"] = lookups.parse_environ(spec["environ_vars"])
        spec["user_workdir"] = spec["user_workdir"] or None
        return {**spec, "app": self.application, "parents": list(self._parents)}

    def save(self) -> None:
        """Insert the job (READY, or waiting for its parents), or write the fields changed since
        it was loaded, the state last (through the state machine)."""
        if self._row is None:
            self._load(api.get_task(api.add_tasks([self._spec()])[0]))
            object.__setattr__(self, "_parents", [])
            return
        changes = self._changes()
        state = changes.pop("state", None)
        conn = api.connection()
        with conn.transaction():
            for name, value in changes.items():
                if name == "application":
                    name = "app"
                elif name == "environ_vars":
                    value = lookups.parse_environ(value)
                api.modify_task(self.pk, name, value, conn=conn)  # type: ignore[arg-type]
            if state is not None:
                api.set_state([self.pk], state, conn=conn)  # type: ignore[list-item]
        self.refresh_from_db()

    def update_state(self, new_state: str, message: str = "", release: bool = False) -> None:
        """Move the job to ``new_state`` through the state machine, with ``message`` in its
        history; other unsaved changes stay unsaved, as in legacy."""
        if release:
            message = "update_state(release=True) is not supported: launchers hold tasks here"
            raise InvalidInput(message)
        target = parse_state(new_state)
        if self.pk is None:
            self.state = target.value
            return
        api.set_state([self.pk], target, message=message)
        now = api.get_task(self.pk)
        self._values["state"] = self._saved["state"] = str(now.state)
        object.__setattr__(self, "_row", now)

    @classmethod
    def batch_update_state(cls, pk_list: Iterable[Any], new_state: str,
                           message: str = "") -> None:
        """Move many jobs at once (legacy skipped killed ones; so does this)."""
        ids = [_job_id(j) for j in pk_list]
        live = [t.id for t in api.get_tasks(ids=ids) if t.state != State.USER_KILLED]
        api.set_state(live, new_state, message=message)  # type: ignore[arg-type]

    def refresh_from_db(self) -> None:
        """Read the job again from the database (unsaved changes are lost)."""
        if self.pk is not None:
            self._load(api.get_task(self.pk))

    def delete(self) -> None:
        """Remove the job and its history (refused while other jobs wait for it)."""
        if self.pk is not None:
            api.remove_tasks(ids=[self.pk])
        object.__setattr__(self, "_row", None)

    # --- the DAG ------------------------------------------------------------------------------

    def get_parents_by_id(self) -> list[int]:
        return list(self._parents) if self.pk is None else api.parents(self.pk)

    def get_children_by_id(self) -> list[int]:
        return [] if self.pk is None else api.children(self.pk)

    def get_parents(self) -> QuerySet[BalsamJob]:
        return BalsamJob.objects.filter(job_id__in=self.get_parents_by_id())

    def get_children(self) -> QuerySet[BalsamJob]:
        return BalsamJob.objects.filter(job_id__in=self.get_children_by_id())

    def get_child_by_name(self, name: str) -> BalsamJob:
        return self.get_children().get(name=name)

    @property
    def parents(self) -> str:
        """The parents' ids as JSON text, as legacy stored them."""
        return json.dumps(self.get_parents_by_id())

    @parents.setter
    def parents(self, value: str | Iterable[Any]) -> None:
        self.set_parents(json.loads(value) if isinstance(value, str) else value)

    def set_parents(self, parents: Iterable[Any]) -> None:
        """Make exactly ``parents`` (jobs or ids) the parents of this job."""
        wanted = sorted({_job_id(p) for p in parents})
        if self.pk is None:
            object.__setattr__(self, "_parents", wanted)
            return
        conn = api.connection()
        with conn.transaction():
            have = set(api.parents(self.pk, conn=conn))
            for parent in sorted(have - set(wanted)):
                api.remove_dependency(parent, self.pk, conn=conn)
            for parent in wanted:
                if parent not in have:
                    api.add_dependency(parent, self.pk, conn=conn)
        self.refresh_from_db()

    # --- derived ------------------------------------------------------------------------------

    def get_application(self) -> ApplicationDefinition:
        return ApplicationDefinition.objects.get(name=self.application)

    @property
    def working_directory(self) -> str:
        if self._row is None:
            message = "a BalsamJob has a working directory once it is saved"
            raise InvalidInput(message)
        return str(api.workdir(self._row))

    def read_file_in_workdir(self, fname: str) -> str:
        path = Path(self.working_directory) / fname
        if not path.is_file():
            message = f"{fname} not found in the working directory of {self.cute_id}"
            raise NotFound(message)
        return path.read_text()

    @property
    def cute_id(self) -> str:
        return f"[{self.name} | {self.pk}]" if self.name else f"[{self.pk}]"

    @property
    def num_ranks(self) -> int:
        return int(self.num_nodes) * int(self.ranks_per_node)

    @property
    def state_history(self) -> str:
        """Every state change as legacy wrote them: ``[time STATE] message`` lines."""
        if self.pk is None:
            return ""
        lines = [f"[{e.at.astimezone().strftime(TIME_FMT) if e.at else ''} {e.to_state}] "
                 f"{e.message}" for e in _events(self.pk)]
        return "".join("\n" + line for line in lines)

    def get_state_times(self) -> dict[str, datetime]:
        """When the job last entered each state."""
        if self.pk is None:
            return {}
        return {e.to_state: e.at for e in _events(self.pk) if e.at is not None}

    @property
    def runtime_seconds(self) -> float | None:
        times = self.get_state_times()
        start, end = times.get("RUNNING"), times.get("RUN_DONE")
        return (end - start).total_seconds() if start and end else None

    def __repr__(self) -> str:
        return f"BalsamJob {self.pk} {self.cute_id} {self.workflow!r} {self.state}"


def _events(task_id: int) -> list[Event]:
    """A task's state changes (its history may hold other entries too)."""
    return [e for e in api.history(task_id) if isinstance(e, Event)]


# --- queries ------------------------------------------------------------------------------------


def _job_id(ref: Any) -> int:
    """A task id from a job, a one-job query, an id or its text."""
    if isinstance(ref, QuerySet):
        ref = ref.get()
    if isinstance(ref, BalsamJob):
        if ref.pk is None:
            message = f"{ref.cute_id} is not saved yet"
            raise InvalidInput(message)
        return ref.pk
    if isinstance(ref, str) and ref.strip().isdigit():
        return int(ref)
    if isinstance(ref, int) and not isinstance(ref, bool):
        return ref
    message = (f"a job is given by a BalsamJob or its id (an integer), not {ref!r} (ids are "
               f"integers here, not legacy UUIDs)")
    raise InvalidInput(message)


def _plain(value: Any) -> Any:
    """A filter value with records (and queries of them) replaced by their ids."""
    if isinstance(value, _Record):
        return value.pk
    if isinstance(value, QuerySet | list | tuple | set | frozenset):
        return [v.pk if isinstance(v, _Record) else v for v in value]
    return value


class QuerySet(Generic[R]):
    """A lazy, chainable query: filters, ordering and a slice; each evaluation runs one
    statement (composed from the model's whitelist of fields)."""

    def __init__(self, model: type[R], filters: tuple[tuple[bool, dict[str, Any]], ...] = (),
                 ordering: tuple[str, ...] = (), offset: int = 0,
                 limit: int | None = None) -> None:
        self.model = model
        self._filters = filters
        self._ordering = ordering
        self._offset = offset
        self._limit = limit

    def _clone(self, **changes: Any) -> QuerySet[R]:
        state = {"filters": self._filters, "ordering": self._ordering, "offset": self._offset,
                 "limit": self._limit, **changes}
        return QuerySet(self.model, **state)

    def _group(self, include: bool, lookups_: Mapping[str, Any]) -> QuerySet[R]:
        if self._offset or self._limit is not None:
            message = "cannot filter a query once it is sliced"
            raise InvalidInput(message)
        group = {k: _plain(v) for k, v in lookups_.items()}
        self._compose(extra=((include, group),))  # unknown fields fail here, at the call
        return self._clone(filters=(*self._filters, (include, group)))

    def all(self) -> QuerySet[R]:
        return self._clone()

    def filter(self, **lookups_: Any) -> QuerySet[R]:
        return self._group(True, lookups_)

    def exclude(self, **lookups_: Any) -> QuerySet[R]:
        return self._group(False, lookups_)

    def order_by(self, *fields: str) -> QuerySet[R]:
        self._compose(ordering=fields)
        return self._clone(ordering=fields)

    def _compose(self, *, extra: tuple[tuple[bool, dict[str, Any]], ...] = (),
                 ordering: tuple[str, ...] | None = None) -> dict[str, Any]:
        model = self.model
        params = lookups.Params()
        where = lookups.where((*self._filters, *extra), model._columns, params, model._what)
        order = lookups.order(self._ordering if ordering is None else ordering, model._columns,
                              model._columns["pk"], model._what)
        return {"where": where, "order": order,
                "params": {**params.values, "limit": self._limit, "offset": self._offset}}

    def _run(self, kind: str, columns: sql.Composable | None = None) -> list[dict[str, Any]]:
        parts = self._compose()
        text = q(f"{self.model._queries}_{kind}")
        stmt = sql.SQL(text).format(where=parts["where"], order=parts["order"],
                                    columns=columns or sql.SQL(""))
        with wrap_db_errors():
            return api.connection().execute(stmt, parts["params"]).fetchall()

    def __iter__(self) -> Iterator[R]:
        return iter([self.model._record(row) for row in self._run("rows")])

    def __len__(self) -> int:
        return self.count()

    def __bool__(self) -> bool:
        return self.exists()

    @overload
    def __getitem__(self, key: int) -> R: ...
    @overload
    def __getitem__(self, key: slice) -> QuerySet[R]: ...

    def __getitem__(self, key: int | slice) -> R | QuerySet[R]:
        if isinstance(key, slice):
            start, stop = key.start or 0, key.stop
            if key.step not in (None, 1) or start < 0 or (stop is not None and stop < 0):
                message = "queries take slices with non-negative bounds and no step"
                raise InvalidInput(message)
            length = None if stop is None else max(0, stop - start)
            if self._limit is not None:
                length = self._limit - start if length is None else min(length, self._limit - start)
            return self._clone(offset=self._offset + start, limit=length)
        found = list(self[key:key + 1])
        if not found:
            raise IndexError(key)
        return found[0]

    def count(self) -> int:
        return int(self._run("count")[0]["n"])

    def exists(self) -> bool:
        return bool(list(self[:1]))

    def first(self) -> R | None:
        found = list(self[:1])
        return found[0] if found else None

    def last(self) -> R | None:
        reverse = tuple(f[1:] if f.startswith("-") else f"-{f}" for f in self._ordering)
        found = list(self._clone(ordering=(*reverse, "-pk"))[:1])
        return found[0] if found else None

    def get(self, **lookups_: Any) -> R:
        found: list[R] = list(self.filter(**lookups_)[:2] if lookups_ else self[:2])
        shown = ", ".join(f"{k}={v!r}" for k, v in lookups_.items())
        if not found:
            message = f"no {self.model._what} matches {shown or 'the query'}"
            raise NotFound(message)
        if len(found) > 1:
            message = f"more than one {self.model._what} matches {shown or 'the query'}"
            raise MultipleObjectsReturned(message)
        return found[0]

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        if flat and len(fields) != 1:
            message = "values_list(flat=True) takes exactly one field"
            raise InvalidInput(message)
        rows = self.values(*fields)
        if flat:
            return [r[fields[0]] for r in rows]
        return [tuple(r.values()) for r in rows]

    def values(self, *fields: str) -> list[dict[str, Any]]:
        model = self.model
        fields = fields or (model._key, *model._writable)
        exprs = []
        for name in fields:
            if name not in model._columns:
                known = ", ".join(sorted(model._columns))
                message = f"{model._what} has no field {name!r}; expected one of: {known}"
                raise InvalidInput(message)
            exprs.append(sql.SQL("{} AS {}").format(model._columns[name].expr,
                                                    sql.Identifier(name)))
        rows = self._run("values", sql.SQL(", ").join(exprs))
        if "environ_vars" in fields:
            for row in rows:
                row["environ_vars"] = lookups.format_environ(row["environ_vars"])
        return rows

    def delete(self) -> tuple[int, dict[str, int]]:
        """Remove the matching objects, as Django's delete() reports it."""
        ids = self.values_list("pk", flat=True)
        if self.model is BalsamJob:
            removed = len(api.remove_tasks(ids=ids)) if ids else 0
        else:
            for app_id in ids:
                api.remove_app(app_id)
            removed = len(ids)
        return removed, {f"core.{self.model._what}": removed}

    def __repr__(self) -> str:
        shown = list(self[:5])
        return f"<QuerySet {shown}{' ...' if len(shown) == 5 else ''}>"


class Manager(Generic[R]):
    """``Model.objects``: where queries start, and where objects are made."""

    def __init__(self, model: type[R]) -> None:
        self.model = model

    def all(self) -> QuerySet[R]:
        return QuerySet(self.model)

    def filter(self, **lookups_: Any) -> QuerySet[R]:
        return self.all().filter(**lookups_)

    def exclude(self, **lookups_: Any) -> QuerySet[R]:
        return self.all().exclude(**lookups_)

    def get(self, **lookups_: Any) -> R:
        return self.all().get(**lookups_)

    def count(self) -> int:
        return self.all().count()

    def exists(self) -> bool:
        return self.all().exists()

    def first(self) -> R | None:
        return self.all().first()

    def last(self) -> R | None:
        return self.all().last()

    def order_by(self, *fields: str) -> QuerySet[R]:
        return self.all().order_by(*fields)

    def values_list(self, *fields: str, flat: bool = False) -> list[Any]:
        return self.all().values_list(*fields, flat=flat)

    def values(self, *fields: str) -> list[dict[str, Any]]:
        return self.all().values(*fields)

    def create(self, **fields: Any) -> R:
        obj = self.model(**fields)
        obj.save()
        return obj

    def get_or_create(self, defaults: Mapping[str, Any] | None = None,
                      **lookups_: Any) -> tuple[R, bool]:
        """The object matching ``lookups_``, or a new one made from them and ``defaults``. An
        app without an executable yet is returned unsaved: its save() inserts it."""
        try:
            return self.get(**lookups_), False
        except NotFound:
            pass
        fields = {k: v for k, v in lookups_.items() if "__" not in k}
        obj = self.model(**fields, **(defaults or {}))
        if obj._complete():
            obj.save()
        return obj, True

    def bulk_create(self, objs: Iterable[R]) -> list[R]:
        """Insert many new objects at once (jobs: one COPY); returns them, saved."""
        objs = list(objs)
        jobs = [o for o in objs if isinstance(o, BalsamJob)]
        if len(jobs) < len(objs):
            for obj in objs:
                obj.save()
            return objs
        ids = api.add_tasks([job._spec() for job in jobs])
        rows = {t.id: t for t in api.get_tasks(ids=ids)}
        for job, task_id in zip(jobs, ids, strict=True):
            job._load(rows[task_id])
            object.__setattr__(job, "_parents", [])
        return objs


ApplicationDefinition.objects = Manager(ApplicationDefinition)
BalsamJob.objects = Manager(BalsamJob)
