"""``balsam config``: the site configuration in force and where each value comes from."""

from __future__ import annotations

import click

from balsam.config import OPTIONS, load_settings, project_file, user_file
from balsam.output import Output, options
from balsam_cli import listings


@click.command("config")
@click.argument("key", required=False)
@options
def config(key: str | None, out: Output) -> None:
    """Show each setting, its value and where it came from (default, a file, or a BALSAM_...
    environment variable; a command-line option wins over them all).

    Files: ~/.balsam/config.toml, then the project's balsam.toml (owner-writable only).
    """
    settings = load_settings()
    if key is not None:
        wanted = key.replace("-", "_").lower()
        if wanted not in settings.items:
            message = f"unknown setting {key!r}; known: {', '.join(o.key for o in OPTIONS)}"
            raise click.UsageError(message)
        value = settings.get(wanted)
        click.echo(" ".join(value) if isinstance(value, list) else "" if value is None else value)
        return
    out.write(listings.CONFIG, ((s.key, s.value, s.source, s.env) for s in settings))
    if out.interactive:
        project = project_file()
        out.note(f"files: {user_file()}" + (f", {project}" if project else ""))
