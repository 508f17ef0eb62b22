"""Named SQL queries kept in ``.sql`` files inside each package (procrastinate's format)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a queries file on ``-- name: X`` lines; comment lines inside a query are dropped."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def load_queries(package: str) -> dict[str, str]:
    """The named queries of ``<package>/sql/queries.sql`` (cached per package)."""
    return parse_queries(files(package).joinpath("sql", "queries.sql").read_text())


def query(package: str, name: str) -> str:
    """One named query of a package; KeyError names the missing query."""
    return load_queries(package)[name]
