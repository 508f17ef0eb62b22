"""``balsam trust``: whose tasks your launchers run. A launcher runs a task only if its owner, the
last user who changed it and the last user who changed its app are all trusted by the launcher's
user: themselves, balsam_admin, and the users they trust here (see docs/security.md).
"""

from __future__ import annotations

import click

from balsam import api, claim
from balsam.output import Output, options
from balsam_cli import listings


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
@options
def trust_ls(out: Output) -> None:
    """Who trusts whom in this project; then whose tasks your launchers run."""
    rows = api.list_trust()
    out.write(listings.TRUST, ((t.truster, t.trustee, t.granted_at) for t in rows))
    if out.mode in ("table", "plain"):
        mine = ", ".join(claim.trusted_users(api.connection()))
        out.note(f"your launchers run the tasks of: {mine}")
