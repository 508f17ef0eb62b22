"""balsam-web's hook implementations: ``balsam web`` and ``balsam report html``, registered by
import path (the web server's modules are imported only when one of them runs)."""

from __future__ import annotations

from collections.abc import Callable

from balsam import hookimpl


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    register("web", "balsam_web.commands:web",
             help="Serve a live, read-only status page of the active project.")
    register("html", "balsam_web.commands:report_html", group="report",
             help="The overview and charts as one self-contained HTML file.")
