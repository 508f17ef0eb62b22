"""balsam-launcher hook implementations."""

from __future__ import annotations
