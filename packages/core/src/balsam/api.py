"""The Python API: apps, tasks, dependencies and states, for scripts and for running tasks.

Every function takes an optional ``conn``. Without it, the process opens one connection to the
active project (``BALSAM_DB_PATH``) on first use and reuses it; inside a task started by a
launcher that is the task's own project, and :func:`current_task` is the task itself::

    from balsam import api
    me = api.current_task()
    api.add_task("reduce", name="sum", workflow=me.workflow, parents=[me.id])

Each call is one transaction; wrap several in ``with conn.transaction():`` to group them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from balsam import bulk, claim, dag, held
from balsam.db import Connection, connect, wrap_db_errors
from balsam.errors import AlreadyExists, CycleError, InvalidInput, NotFound
from balsam.models import (
    TASK_ALIASES,
    App,
    Change,
    Event,
    Task,
    Trust,
    coerce_app_field,
    coerce_task_field,
    task_field,
    validate_user_name,
)
from balsam.project import ADMIN_ROLE, Project
from balsam.queries import q
from balsam.states import INITIAL, State, parse_state

__all__ = [
    "add_app", "add_dependency", "add_task", "add_tasks", "add_trust", "app_history", "children",
    "connection", "count_by_state", "count_by_workflow", "current_task", "descendants", "edges",
    "get_app", "get_task", "get_tasks", "history", "kill", "list_apps", "list_trust",
    "modify_app", "modify_task", "parents", "remove_app", "remove_dependency", "remove_tasks",
    "remove_trust", "set_state", "spawn_child", "task_ids", "waiting_reasons", "workdir",
]

TaskRef = int | Task
AppRef = str | int | App

_JSON = ("data", "environ_vars")

_EPOCH = datetime.min.replace(tzinfo=UTC)

_cached: tuple[tuple[int, str], Project, Connection] | None = None


# --- connection ---------------------------------------------------------------------------------


def connection() -> Connection:
    """The process's connection to the active project (opened on first use, reopened if lost,
    after reading server-info again: the server may have moved)."""
    global _cached
    key = (os.getpid(), os.environ.get("BALSAM_DB_PATH", ""))
    project = None
    if _cached is not None:
        old_key, project, old = _cached
        if old_key == key and not old.closed and not old.broken:
            return old
        if old_key[0] == key[0]:
            old.close()  # never close a connection inherited across fork: it is the parent's
        project = project.reload() if old_key == key else None
    project = project or Project.from_env()
    conn = connect(project)
    try:
        with wrap_db_errors():
            claim.reap_if_allowed(conn)  # every command reaps the dead launchers
    except BaseException:
        conn.close()
        raise
    _cached = (key, project, conn)
    return conn


def disconnect() -> None:
    """Close the process's connection, if this process opened one (the next call that needs
    it opens another): a script or a test done with a project lets its server go."""
    global _cached
    if _cached is not None and _cached[0][0] == os.getpid():
        _cached[2].close()
    _cached = None


def _conn(conn: Connection | None) -> Connection:
    return conn if conn is not None else connection()


# --- apps ---------------------------------------------------------------------------------------


def add_app(name: str, executable: str, *, description: str = "", preprocess: str = "",
            postprocess: str = "", envscript: str = "", conn: Connection | None = None) -> App:
    """Register an application; AlreadyExists if the name is taken."""
    given = {"name": name, "executable": executable, "description": description,
             "preprocess": preprocess, "postprocess": postprocess, "envscript": envscript}
    values = {k: coerce_app_field(k, v) for k, v in given.items()}
    try:
        with wrap_db_errors():
            row = _conn(conn).execute(q("insert_app"), values).fetchone()
    except AlreadyExists:
        message = f"app {name!r} already exists"
        raise AlreadyExists(message) from None
    assert row is not None
    return App.from_row(row)


def get_app(app: AppRef, *, conn: Connection | None = None) -> App:
    """An app by name, id or record; NotFound names it."""
    if isinstance(app, App):
        app = app.id if app.id is not None else app.name
    with wrap_db_errors():
        if isinstance(app, int) and not isinstance(app, bool):
            row = _conn(conn).execute(q("app_by_id"), {"id": app}).fetchone()
        else:
            row = _conn(conn).execute(q("app_by_name"), {"name": str(app)}).fetchone()
    if row is None:
        message = f"unknown app {app!r}"
        raise NotFound(message)
    return App.from_row(row)


def list_apps(*, conn: Connection | None = None) -> list[tuple[App, int]]:
    """Every app with the number of tasks using it, by name."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("list_apps")).fetchall()
    return [(App.from_row(r), int(r["tasks"])) for r in rows]


def modify_app(app: AppRef, field: str, value: str, *, conn: Connection | None = None) -> App:
    """Change one field of an app (name, executable, description, preprocess, postprocess,
    envscript)."""
    column = field.strip().replace("-", "_").lower()
    value = coerce_app_field(column, value)
    conn = _conn(conn)
    stmt = sql.SQL(q("update_app")).format(column=sql.Identifier(column))
    try:
        with wrap_db_errors(), conn.transaction():
            found = get_app(app, conn=conn)
            row = conn.execute(stmt, {"value": value, "id": found.id}).fetchone()
    except AlreadyExists:
        message = f"app {value!r} already exists"
        raise AlreadyExists(message) from None
    assert row is not None
    return App.from_row(row)


def remove_app(app: AppRef, *, force: bool = False, conn: Connection | None = None) -> list[int]:
    """Remove an app (its history stays: :func:`app_history`). Refused while tasks use it, unless
    ``force``, which removes those tasks too (still refused if other tasks wait for them).
    Returns the removed task ids."""
    conn = _conn(conn)
    with wrap_db_errors(), conn.transaction():
        found = get_app(app, conn=conn)
        ids = [r["id"] for r in conn.execute(q("app_task_ids"), {"app_id": found.id})]
        if ids and not force:
            shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
            message = (f"app {found.name!r} is used by {len(ids)} task(s) ({shown}); remove them "
                       f"first or force")
            raise InvalidInput(message)
        if ids:
            _remove_ids(conn, ids)
        conn.execute(q("delete_app"), {"id": found.id})
    return ids


# --- creating tasks -----------------------------------------------------------------------------


def add_task(app: AppRef, *, parents: Iterable[TaskRef] = (), conn: Connection | None = None,
             **fields: Any) -> Task:
    """Create one task of ``app``; keyword arguments are task fields (``name``, ``workflow``,
    ``args``, ``num_nodes``, ``data``, ``environ_vars`` or ``env``, ``workdir``...).

    With unfinished parents it waits in AWAITING_PARENTS, otherwise it is READY.
    """
    conn = _conn(conn)
    with conn.transaction():
        (task_id,) = add_tasks([{**fields, "app": app, "parents": list(parents)}], conn=conn)
        return get_task(task_id, conn=conn)


def add_tasks(tasks: Iterable[Mapping[str, Any]], *, conn: Connection | None = None) -> list[int]:
    """Create many tasks at once (COPY), all or none; returns their ids in input order.

    Each mapping holds task fields as for :func:`add_task`, plus ``app`` (name, id or App) and
    optionally ``parents`` (ids or Tasks that already exist).
    """
    return bulk.insert_tasks(_conn(conn), tasks)


def _task_id(ref: TaskRef) -> int:
    task_id = ref.id if isinstance(ref, Task) else ref
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        message = f"a task is given by its id (an integer), got {ref!r}"
        raise InvalidInput(message)
    return task_id


def _check_exist(conn: Connection, ids: Iterable[int], what: str = "task") -> None:
    wanted = set(ids)
    if not wanted:
        return
    with wrap_db_errors():
        rows = conn.execute(q("existing_ids"), {"ids": sorted(wanted)}).fetchall()
    missing = sorted(wanted - {r["id"] for r in rows})
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        message = f"no {what} {shown}" if len(missing) == 1 else f"no {what}s {shown}"
        raise NotFound(message)


def current_task(*, conn: Connection | None = None) -> Task:
    """The task this process runs as (``BALSAM_TASK_ID``, exported by the launcher)."""
    value = os.environ.get("BALSAM_TASK_ID", "")
    if not value.strip().isdigit():
        why = f"BALSAM_TASK_ID is {value!r}, not a task id" if value.strip() else \
            "BALSAM_TASK_ID is not set"
        message = f"not inside a balsam task ({why})"
        raise InvalidInput(message)
    return get_task(int(value), conn=conn)


def spawn_child(app: AppRef, *, conn: Connection | None = None, **fields: Any) -> Task:
    """From inside a running task: add a task that waits for this one (same workflow unless
    given)."""
    me = current_task(conn=conn)
    fields.setdefault("workflow", me.workflow)
    extra = [p for p in fields.pop("parents", ()) if _task_id(p) != me.id]
    return add_task(app, parents=[me.id, *extra], conn=conn, **fields)  # type: ignore[list-item]


# --- dependencies -------------------------------------------------------------------------------


def add_dependency(parent: TaskRef, child: TaskRef, *, conn: Connection | None = None) -> Task:
    """Make ``child`` wait for ``parent``; returns the child (AWAITING_PARENTS unless the parent
    has finished). Refused if it closes a cycle or if the child has started."""
    conn = _conn(conn)
    parent_id, child_id = _task_id(parent), _task_id(child)
    if parent_id == child_id:
        message = f"task {child_id} cannot depend on itself"
        raise CycleError(message)
    with wrap_db_errors(), conn.transaction():
        _check_exist(conn, [parent_id, child_id])
        conn.execute(q("insert_edges"), {"parents": [parent_id], "children": [child_id]})
        return get_task(child_id, conn=conn)


def remove_dependency(parent: TaskRef, child: TaskRef, *,
                      conn: Connection | None = None) -> Task:
    """Drop a dependency; a child left with only finished parents becomes READY."""
    conn = _conn(conn)
    parent_id, child_id = _task_id(parent), _task_id(child)
    with wrap_db_errors(), conn.transaction():
        cur = conn.execute(q("delete_edge"), {"parent": parent_id, "child": child_id})
        if cur.rowcount == 0:
            message = f"task {child_id} does not depend on task {parent_id}"
            raise NotFound(message)
        return get_task(child_id, conn=conn)


def parents(task: TaskRef, *, conn: Connection | None = None) -> list[int]:
    """Ids of the tasks ``task`` depends on."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("parent_ids"), {"id": _task_id(task)}).fetchall()
    return [r["id"] for r in rows]


def children(task: TaskRef, *, conn: Connection | None = None) -> list[int]:
    """Ids of the tasks that depend on ``task``."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("child_ids"), {"id": _task_id(task)}).fetchall()
    return [r["id"] for r in rows]


def waiting_reasons(ids: Iterable[int], *, conn: Connection | None = None) -> dict[int, str]:
    """Why each given task in AWAITING_PARENTS waits, e.g. ``waiting for parent 12 (FAILED)``."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    with wrap_db_errors():
        rows = _conn(conn).execute(q("unfinished_parents"), {"ids": wanted}).fetchall()
    unfinished: dict[int, list[tuple[int, str]]] = {i: [] for i in wanted}
    for r in rows:
        unfinished[r["child_id"]].append((r["id"], r["state"]))
    return {i: dag.waiting_reason(ps) for i, ps in unfinished.items()}


# --- reading tasks ------------------------------------------------------------------------------


def get_task(task: TaskRef, *, conn: Connection | None = None) -> Task:
    """One task by id; NotFound if there is none."""
    task_id = _task_id(task)
    with wrap_db_errors():
        row = _conn(conn).execute(q("task_by_id"), {"id": task_id}).fetchone()
    if row is None:
        message = f"no task {task_id}"
        raise NotFound(message)
    return Task.from_row(row)


def _filters(ids: Iterable[int] | None, workflow: str | None, state: Any, name: str | None,
             app: AppRef | None, conn: Connection) -> dict[str, Any]:
    if isinstance(state, str | State):
        state = [state]
    return {
        "ids": None if ids is None else sorted({_task_id(i) for i in ids}),
        "workflow": workflow,
        "states": None if state is None else sorted({parse_state(str(s)).value for s in state}),
        "name": name,
        "app_id": None if app is None else get_app(app, conn=conn).id,
    }


def get_tasks(*, ids: Iterable[int] | None = None, workflow: str | None = None,
              state: str | Iterable[str] | None = None, name: str | None = None,
              app: AppRef | None = None, limit: int | None = None,
              conn: Connection | None = None) -> list[Task]:
    """Tasks matching every given filter, in id order: ``name`` matches a substring, ``state``
    one state or several, ``limit`` caps the number returned."""
    conn = _conn(conn)
    if limit is not None and limit < 0:
        message = f"limit must be at least 0, got {limit}"
        raise InvalidInput(message)
    params = _filters(ids, workflow, state, name, app, conn) | {"limit": limit}
    with wrap_db_errors():
        rows = conn.execute(q("select_tasks"), params).fetchall()
    return [Task.from_row(r) for r in rows]


def task_ids(*, ids: Iterable[int] | None = None, workflow: str | None = None,
             state: str | Iterable[str] | None = None, name: str | None = None,
             app: AppRef | None = None, conn: Connection | None = None) -> list[int]:
    """Ids of the tasks matching the filters (as :func:`get_tasks`), in order."""
    conn = _conn(conn)
    params = _filters(ids, workflow, state, name, app, conn)
    with wrap_db_errors():
        rows = conn.execute(q("select_task_ids"), params).fetchall()
    return [r["id"] for r in rows]


def count_by_state(*, ids: Iterable[int] | None = None, workflow: str | None = None,
                   state: str | Iterable[str] | None = None, name: str | None = None,
                   app: AppRef | None = None, conn: Connection | None = None) -> dict[State, int]:
    """How many matching tasks are in each state (states with none are left out)."""
    conn = _conn(conn)
    params = _filters(ids, workflow, state, name, app, conn)
    with wrap_db_errors():
        rows = conn.execute(q("count_by_state"), params).fetchall()
    return {State(r["state"]): int(r["count"]) for r in rows}


def count_by_workflow(*, conn: Connection | None = None) -> dict[str, dict[State, int]]:
    """Per workflow, how many tasks are in each state."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("count_by_workflow")).fetchall()
    out: dict[str, dict[State, int]] = {}
    for r in rows:
        out.setdefault(r["workflow"], {})[State(r["state"])] = int(r["count"])
    return out


def history(task: TaskRef, *, conn: Connection | None = None) -> list[Event | Change]:
    """Every state change of a task and every change of what a launcher would run for it (and
    its removal), oldest first. A removed task keeps its history."""
    conn = _conn(conn)
    task_id = _task_id(task)
    with wrap_db_errors(), conn.transaction():
        events = conn.execute(q("task_history"), {"id": task_id}).fetchall()
        changes = conn.execute(q("entity_changes"), {"entity": "task", "id": task_id}).fetchall()
    if not events and not changes:
        get_task(task_id, conn=conn)  # NotFound for an unknown task
    merged: list[Event | Change] = [Event.from_row(r) for r in events]
    merged += [Change.from_row(r) for r in changes]
    return sorted(merged, key=lambda entry: entry.at or _EPOCH)  # stable: events first on ties


def app_history(app: AppRef, *, conn: Connection | None = None) -> list[Change]:
    """Every change of what an app runs (and its removal), oldest first. A removed app is found
    by its id."""
    conn = _conn(conn)
    with wrap_db_errors():
        if isinstance(app, int) and not isinstance(app, bool):
            app_id = app
        else:
            app_id = get_app(app, conn=conn).id  # type: ignore[assignment]
        rows = conn.execute(q("entity_changes"), {"entity": "app", "id": app_id}).fetchall()
    if not rows:
        get_app(app_id, conn=conn)  # NotFound for an unknown app
    return [Change.from_row(r) for r in rows]


def edges(ids: Iterable[int], *, conn: Connection | None = None) -> list[tuple[int, int]]:
    """The dependencies ``(parent, child)`` touching the given tasks."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("edges_among"), {"ids": sorted(set(ids))}).fetchall()
    return [(r["parent_id"], r["child_id"]) for r in rows]


def workdir(task: Task, project: Project | None = None) -> Path:
    """A task's working directory as a path (inside the project unless it is absolute)."""
    return (project or Project.from_env()).workdir(task.workdir)


# --- changing tasks -----------------------------------------------------------------------------


def modify_task(task: TaskRef, field: str, value: Any, *, message: str = "",
                conn: Connection | None = None) -> Task:
    """Change one field of a task. ``state`` goes through the state machine, ``app`` takes an
    app name; other fields as for :func:`add_task`. Refused while a launcher holds the task,
    except the task's own data and description from inside it (:mod:`balsam.held`)."""
    key = field.strip().replace("-", "_").lower()
    if key == "state":
        set_state([_task_id(task)], value, message=message, conn=conn)
        return get_task(task, conn=conn)
    conn = _conn(conn)
    task_id = _task_id(task)
    with wrap_db_errors(), conn.transaction():
        row = conn.execute(q("lock_task"), {"id": task_id}).fetchone()
        if row is None:
            message = f"no task {task_id}"
            raise NotFound(message)
        current = Task.from_row(row)
        refused = held.refusal(task_id, current.state, current.launcher_id,
                               TASK_ALIASES.get(key, key), held.caller())
        if refused:
            raise InvalidInput(refused)
        if key in ("app", "application", "app_id"):
            conn.execute(q("set_app"), {"id": task_id, "app_id": get_app(value, conn=conn).id})
            return get_task(task_id, conn=conn)
        column = task_field(key)
        new = coerce_task_field(column, value)
        if column in ("name", "workflow") and current.user_workdir is None \
                and current.state not in INITIAL:
            # Its directory already exists under the old name: keep using it.
            conn.execute(q("pin_workdir"), {"id": task_id, "workdir": current.workdir})
        stmt = sql.SQL(q("update_task")).format(column=sql.Identifier(column))
        conn.execute(stmt, {"id": task_id, "value": Jsonb(new) if column in _JSON else new})
        return get_task(task_id, conn=conn)


def set_state(tasks: Iterable[TaskRef], state: str | State, *, message: str = "",
              conn: Connection | None = None) -> list[int]:
    """Move tasks to ``state`` through the state machine, all or none; returns the ids that
    changed (those already in it are left alone). InvalidTransition names a forbidden move."""
    conn = _conn(conn)
    target = parse_state(str(state))
    ids = sorted({_task_id(t) for t in tasks})
    with wrap_db_errors(), conn.transaction():
        _check_exist(conn, ids)
        rows = conn.execute(q("set_state"), {"ids": ids, "state": target.value,
                                               "message": message}).fetchall()
    return sorted(r["id"] for r in rows)


def kill(tasks: Iterable[TaskRef], *, recursive: bool = False, message: str = "killed by user",
         conn: Connection | None = None) -> list[int]:
    """Mark tasks USER_KILLED (from any non-final state; a launcher running one stops it).
    ``recursive`` also kills every task below them. Returns the ids that were killed."""
    conn = _conn(conn)
    ids = sorted({_task_id(t) for t in tasks})
    with wrap_db_errors(), conn.transaction():
        _check_exist(conn, ids)
        if recursive:
            ids = sorted(set(ids) | set(_descendants(conn, ids)))
        rows = conn.execute(q("kill_tasks"), {"ids": ids, "message": message}).fetchall()
    return sorted(r["id"] for r in rows)


def remove_tasks(*, ids: Iterable[int] | None = None, workflow: str | None = None,
                 state: str | Iterable[str] | None = None, name: str | None = None,
                 app: AppRef | None = None, all_tasks: bool = False, recursive: bool = False,
                 conn: Connection | None = None) -> list[int]:
    """Delete the tasks matching the filters (``all_tasks=True`` for every task). Their history
    stays (:func:`history`), with who removed them.

    Refused if a task left behind waits for one of them, unless ``recursive``, which removes
    everything below them as well. Returns the removed ids.
    """
    conn = _conn(conn)
    if not all_tasks and ids is None and workflow is None and state is None and name is None \
            and app is None:
        message = "say which tasks to remove (ids or filters), or all of them"
        raise InvalidInput(message)
    with wrap_db_errors(), conn.transaction():
        if ids is not None:
            _check_exist(conn, [_task_id(i) for i in ids])
        found = task_ids(ids=ids, workflow=workflow, state=state, name=name, app=app, conn=conn)
        if recursive:
            found = sorted(set(found) | set(_descendants(conn, found)))
        _remove_ids(conn, found)
    return found


def descendants(tasks: Iterable[TaskRef], *, conn: Connection | None = None) -> list[int]:
    """Ids of every task below the given ones in the DAG (each once, not including them)."""
    ids = sorted({_task_id(t) for t in tasks})
    with wrap_db_errors():
        return _descendants(_conn(conn), ids)


def _descendants(conn: Connection, ids: Sequence[int]) -> list[int]:
    return [r["id"] for r in conn.execute(q("descendants"), {"ids": list(ids)})]


def _remove_ids(conn: Connection, ids: Sequence[int]) -> None:
    """Delete tasks unless a task outside them waits for one (it would never run)."""
    if not ids:
        return
    blocked = conn.execute(q("waiting_children_outside"), {"ids": list(ids)}).fetchall()
    if blocked:
        pairs = ", ".join(f"{r['child_id']} waits for {r['parent_id']}" for r in blocked)
        message = f"other tasks wait for these ({pairs}); remove them too (recursive) or kill"
        raise InvalidInput(message)
    conn.execute(q("delete_tasks"), {"ids": list(ids)})


# --- trust --------------------------------------------------------------------------------------


def add_trust(users: Iterable[str], *, conn: Connection | None = None) -> list[str]:
    """Let your launchers run the tasks ``users`` own or changed, and those using apps they
    changed. Returns the users newly trusted (others already were)."""
    conn = _conn(conn)
    names = sorted({validate_user_name(u) for u in users})
    with wrap_db_errors(), conn.transaction():
        me = conn.execute(q("session_user")).fetchone()["name"]  # type: ignore[index]
        for name in names:
            if name in (me, ADMIN_ROLE):
                message = f"{name} is always trusted"
                raise InvalidInput(message)
        unknown = claim.unknown_users(conn, names)
        if unknown:
            message = (f"no user {', '.join(unknown)} in this project's database (the owner adds "
                       f"users with: balsam server --add-user NAME)")
            raise NotFound(message)
        rows = conn.execute(q("add_trust"), {"users": names}).fetchall()
    return sorted(r["trustee"] for r in rows)


def remove_trust(users: Iterable[str], *, conn: Connection | None = None) -> list[str]:
    """Stop trusting ``users`` (your launchers no longer start their tasks). Returns the users
    who were trusted; NotFound if none of them was."""
    names = sorted({validate_user_name(u) for u in users})
    with wrap_db_errors():
        rows = _conn(conn).execute(q("remove_trust"), {"users": names}).fetchall()
    if names and not rows:
        message = f"you do not trust {', '.join(names)}"
        raise NotFound(message)
    return sorted(r["trustee"] for r in rows)


def list_trust(*, conn: Connection | None = None) -> list[Trust]:
    """Who trusts whom in this project (everyone may read it), by truster then trustee."""
    with wrap_db_errors():
        rows = _conn(conn).execute(q("list_trust")).fetchall()
    return [Trust.from_row(r) for r in rows]
