"""Balsam: a multi-user HPC workflow manager on PostgreSQL."""

from __future__ import annotations

from balsam.errors import BalsamError
from balsam.hookspecs import hookimpl, hookspec

__version__ = "0.1.4"
__all__ = ["BalsamError", "__version__", "hookimpl", "hookspec"]
