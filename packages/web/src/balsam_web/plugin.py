"""balsam-web's hook implementations: ``balsam web`` and ``balsam report html``."""

from __future__ import annotations

from collections.abc import Callable

from balsam import hookimpl
from balsam_web import commands


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register(commands.web)
    register(commands.report_html, group="report")
