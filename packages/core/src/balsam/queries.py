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
    """The named queries of every ``<package>/sql/*.sql`` file (cached per package).

    A name defined twice is a bug and raises ValueError naming both files.
    """
    queries: dict[str, str] = {}
    origin: dict[str, str] = {}
    folder = files(package).joinpath("sql")
    for f in sorted(folder.iterdir(), key=lambda f: f.name):
        if not f.name.endswith(".sql"):
            continue
        for name, text in parse_queries(f.read_text()).items():
            if name in queries:
                message = f"query {name!r} defined in both {origin[name]} and {f.name} ({package})"
                raise ValueError(message)
            queries[name], origin[name] = text, f.name
    return queries


def query(package: str, name: str) -> str:
    """One named query of a package; KeyError names the missing query."""
    return load_queries(package)[name]


def q(name: str) -> str:
    """One named query of core (``balsam/sql/*.sql``)."""
    return query("balsam", name)
