"""The query subset of legacy Balsam's Django models, as SQL: field lookups (``name__contains``,
``state__in``, ``job_id__gt``...) and ordering (``-field``), composed with :mod:`psycopg.sql` from a
whitelist of columns. Values always travel as parameters; nothing is formatted into SQL text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from balsam.errors import InvalidInput

#: SQL type of each kind of column (parameters are cast to it).
SQL_TYPES = {"int": "bigint", "text": "text", "bool": "boolean", "time": "timestamptz"}
KIND_NAMES = {"int": "an integer", "text": "a string", "bool": "True or False",
              "time": "a datetime"}

#: Lookups on text (on the decimal text of an integer column, as legacy did on its UUID keys).
TEXT_LOOKUPS = {
    "iexact": "lower({col}) = lower({val})",
    "contains": "strpos({col}, {val}) > 0",
    "icontains": "strpos(lower({col}), lower({val})) > 0",
    "startswith": "starts_with({col}, {val})",
    "istartswith": "starts_with(lower({col}), lower({val}))",
    "endswith": "right({col}, length({val})) = {val}",
    "iendswith": "right(lower({col}), length({val})) = lower({val})",
}
COMPARISONS = {"exact": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
LOOKUPS = (*COMPARISONS, *TEXT_LOOKUPS, "in", "isnull")


@dataclass(frozen=True)
class Column:
    """A field a query may filter and order on: its SQL expression and kind (SQL_TYPES)."""

    expr: sql.Composable
    kind: str


class Params:
    """Parameters of one statement, named p0, p1... as conditions are added."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def add(self, value: Any, kind: str, *, array: bool = False) -> sql.Composable:
        """A placeholder for ``value``, cast to the column's type (or an array of it)."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        cast = SQL_TYPES[kind] + ("[]" if array else "")
        return sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(cast))


def split(key: str, columns: Mapping[str, Column], what: str) -> tuple[str, Column, str]:
    """``field__lookup`` as (field, its column, lookup); InvalidInput names what is unknown."""
    field, _, lookup = key.partition("__")
    lookup = lookup or "exact"
    if field not in columns:
        known = ", ".join(sorted(columns))
        message = f"{what} has no field {field!r} to query; expected one of: {known}"
        raise InvalidInput(message)
    if lookup not in LOOKUPS:
        message = f"lookup {lookup!r} (in {key!r}) is not supported; use one of: " + \
            ", ".join(LOOKUPS)
        raise InvalidInput(message)
    return field, columns[field], lookup


def coerce(field: str, kind: str, value: Any) -> Any:
    """A filter value checked against the column's kind (one-line InvalidInput otherwise)."""
    if kind == "int" and isinstance(value, str) and value.strip().isdigit():
        return int(value)
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "text": isinstance(value, str), "bool": isinstance(value, bool),
          "time": isinstance(value, datetime)}[kind]
    if not ok:
        message = f"{field} is compared with {KIND_NAMES[kind]}, not {value!r}"
        raise InvalidInput(message)
    return value


def condition(key: str, value: Any, columns: Mapping[str, Column], params: Params,
              what: str) -> sql.Composable:
    """The SQL condition for one ``field__lookup=value`` keyword."""
    field, column, lookup = split(key, columns, what)
    col = column.expr
    if column.kind not in SQL_TYPES:
        message = f"{what}.{field} cannot be queried (filter in Python instead)"
        raise InvalidInput(message)
    if lookup == "isnull":
        if not isinstance(value, bool):
            message = f"{key} takes True or False, not {value!r}"
            raise InvalidInput(message)
        return sql.SQL("{} IS NULL" if value else "{} IS NOT NULL").format(col)
    if lookup == "exact" and value is None:
        return sql.SQL("{} IS NULL").format(col)
    if lookup == "in":
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            message = f"{key} takes a list of values, not {value!r}"
            raise InvalidInput(message)
        values = [coerce(field, column.kind, v) for v in value]
        return sql.SQL("{} = ANY({})").format(col, params.add(values, column.kind, array=True))
    if lookup in TEXT_LOOKUPS:
        if isinstance(value, int) and not isinstance(value, bool) and column.kind == "int":
            value = str(value)
        text = col if column.kind == "text" else sql.SQL("{}::text").format(col)
        val = params.add(coerce(field, "text", value), "text")
        return sql.SQL(TEXT_LOOKUPS[lookup]).format(col=text, val=val)
    val = params.add(coerce(field, column.kind, value), column.kind)
    return sql.SQL("{} {} {}").format(col, sql.SQL(COMPARISONS[lookup]), val)


def where(filters: Iterable[tuple[bool, Mapping[str, Any]]], columns: Mapping[str, Column],
          params: Params, what: str) -> sql.Composable:
    """``filter(**kw)`` (include) and ``exclude(**kw)`` groups, ANDed together. An excluded group
    drops the rows where all its conditions hold (a NULL is not a match, as in Django)."""
    parts: list[sql.Composable] = []
    for include, group in filters:
        conds = [condition(k, v, columns, params, what) for k, v in group.items()]
        if not conds:
            continue
        joined = sql.SQL("({})").format(sql.SQL(" AND ").join(conds))
        parts.append(joined if include else sql.SQL("NOT coalesce({}, false)").format(joined))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def order(fields: Iterable[str], columns: Mapping[str, Column], key: Column,
          what: str) -> sql.Composable:
    """``order_by("-name", "job_id")``, then the key, so that every order is total."""
    terms: list[sql.Composable] = []
    for spec in fields:
        name = spec.removeprefix("-")
        if name not in columns or columns[name].kind not in SQL_TYPES:
            known = ", ".join(sorted(k for k, c in columns.items() if c.kind in SQL_TYPES))
            message = f"{what} cannot be ordered by {spec!r}; expected one of: {known}"
            raise InvalidInput(message)
        direction = sql.SQL("DESC" if spec.startswith("-") else "ASC")
        terms.append(sql.SQL("{} {}").format(columns[name].expr, direction))
    terms.append(key.expr)
    return sql.SQL(", ").join(terms)


def parse_environ(text: str) -> dict[str, str]:
    """Legacy ``environ_vars``: ``A=1:B=2``. A piece without ``=`` continues the value before it
    (``PATH=/a:/b``), which legacy split apart."""
    pairs: dict[str, str] = {}
    last = None
    for piece in text.split(":") if text.strip() else []:
        name, sep, value = piece.partition("=")
        if sep and name.strip():
            last = name.strip()
            pairs[last] = value
        elif last is not None:
            pairs[last] += ":" + piece
        else:
            message = f"environ_vars {text!r}: {piece!r} must look like NAME=VALUE"
            raise InvalidInput(message)
    return pairs


def format_environ(env: Mapping[str, str]) -> str:
    """The legacy text of an environment (``A=1:B=2``)."""
    return ":".join(f"{k}={v}" for k, v in env.items())
