"""Numbered SQL migrations, applied per package and recorded in ``balsam_migrations``."""

from __future__ import annotations

from importlib.resources import files

import pluggy
from psycopg import sql

from balsam.db import Connection
from balsam.queries import q
from balsam.states import FINAL, INITIAL, RUNNABLE, TRANSITIONS, State


def migration_files(package: str) -> list[tuple[str, str]]:
    """``(name, sql)`` of ``<package>/sql/migrations/NNNN_*.sql`` in order."""
    folder = files(package).joinpath("sql", "migrations")
    if not folder.is_dir():
        return []
    entries = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name, f.read_text()) for f in entries]


def migrate(conn: Connection, package: str) -> list[str]:
    """Apply each unapplied migration of ``package`` in its own transaction; return their names."""
    with conn.transaction():
        conn.execute(q("create_migrations_table"))
    done = _applied(conn, package)
    applied = []
    for name, text in migration_files(package):
        if name in done:
            continue
        with conn.transaction():
            conn.execute(sql.SQL(text))
            conn.execute(q("record_migration"), {"package": package, "name": name})
        applied.append(name)
    return applied


def _applied(conn: Connection, package: str) -> set[str]:
    rows = conn.execute(q("applied_migrations"), {"package": package}).fetchall()
    return {r["name"] for r in rows}


def sync_states(conn: Connection) -> None:
    """Make ``task_states``/``task_transitions`` equal to :mod:`balsam.states`."""
    pairs = [(src.value, dst.value) for src, dsts in TRANSITIONS.items() for dst in sorted(dsts)]
    with conn.transaction():
        for state in State:
            conn.execute(q("upsert_state"), {
                "state": state.value, "initial": state in INITIAL,
                "final": state in FINAL, "runnable": state in RUNNABLE,
            })
        conn.execute(q("delete_transitions"))
        conn.execute(q("insert_transitions"), {
            "from_states": [a for a, _ in pairs], "to_states": [b for _, b in pairs],
        })


def upgrade(conn: Connection, packages: tuple[str, ...] = ()) -> list[str]:
    """Bring the schema up to date: core first, then ``packages``; returns what was applied."""
    applied = [f"balsam/{n}" for n in migrate(conn, "balsam")]
    sync_states(conn)
    for package in packages:
        applied += [f"{package}/{n}" for n in migrate(conn, package)]
    return applied


def plugin_packages(pm: pluggy.PluginManager) -> tuple[str, ...]:
    """The packages whose migrations installed plugins contribute (see ``migration_packages``)."""
    names: list[str] = []
    for result in pm.hook.migration_packages():
        names += [n for n in result or [] if n not in names]
    return tuple(names)
