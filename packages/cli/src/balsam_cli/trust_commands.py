"""``balsam trust``: whose tasks your launchers run. A launcher runs a task only if its owner, the
last user who changed it and the last user who changed its app are all trusted by the launcher's
user: themselves, balsam_admin, and the users they trust here (see docs/security.md).
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from balsam import api, claim


@click.group("trust", invoke_without_command=True)
@click.pass_context
def trust(ctx: click.Context) -> None:
    """Whose tasks your launchers run: you, balsam_admin and the users you trust."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(trust_ls)


@trust.command("add")
@click.argument("users", nargs=-1, required=True)
def trust_add(users: tuple[str, ...]) -> None:
    """Let your launchers run what USERS own or changed (recorded; undo with trust rm)."""
    added = api.add_trust(users)
    for name in sorted(set(users)):
        click.echo(f"Your launchers now run what {name} owns or changes (undo: balsam trust rm "
                   f"{name})" if name in added else f"{name} was already trusted")


@trust.command("rm")
@click.argument("users", nargs=-1, required=True)
def trust_rm(users: tuple[str, ...]) -> None:
    """Stop trusting USERS: your launchers no longer start what they own or changed."""
    removed = api.remove_trust(users)
    for name in sorted(set(users)):
        click.echo(f"Your launchers no longer start what {name} owns or changes"
                   if name in removed else f"{name} was not trusted")


@trust.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def trust_ls(as_json: bool) -> None:
    """Who trusts whom in this project, and whose tasks your launchers run."""
    rows = api.list_trust()
    mine = claim.trusted_users(api.connection())
    if as_json:
        data: dict[str, Any] = {"trust": [{"truster": t.truster, "trustee": t.trustee,
                                           "granted_at": str(t.granted_at)} for t in rows],
                                "your_launchers_run": mine}
        click.echo(json.dumps(data, indent=2))
        return
    table = Table("user", "trusts", "since")
    for t in rows:
        since = t.granted_at.strftime("%Y-%m-%d %H:%M") if t.granted_at else ""
        table.add_row(t.truster, t.trustee, since)
    if rows:
        Console(soft_wrap=False).print(table)
    else:
        click.echo("Nobody trusts anybody else in this project.")
    click.echo(f"Your launchers run the tasks of: {', '.join(mine)}")
