"""Balsam: a multi-user HPC workflow manager on PostgreSQL."""

from __future__ import annotations

from balsam.errors import BalsamError
from balsam.hookspecs import hookimpl, hookspec

__all__ = ["BalsamError", "hookimpl", "hookspec"]
