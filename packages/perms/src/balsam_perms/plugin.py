"""balsam-perms hook implementations."""

from __future__ import annotations
