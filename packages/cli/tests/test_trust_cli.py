"""balsam trust add, rm and ls through the real CLI on a real database."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from psycopg import sql

from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam_cli.main import build_cli
from balsam_pgserver import roles

pytestmark = pytest.mark.pg


@pytest.fixture
def colleague(project, pg_server):
    """A second user of the project (a login role in its member role)."""
    name = f"colleague_{os.getpid()}"
    with connect(project) as conn:
        roles.add_user(conn, name, "member")
    yield name
    with connect(pg_server.dsn()) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_trust_add_ls_rm(colleague):
    cli = build_cli(get_plugin_manager())

    def run(*args: str):
        return CliRunner().invoke(cli, ["trust", *args], terminal_width=200)

    added = run("add", colleague)
    assert added.exit_code == 0 and f"now run what {colleague} owns or changes" in added.output
    assert f"{colleague} was already trusted" in run("add", colleague).output
    listed = json.loads(run("ls", "--json").stdout)
    assert [(t["truster"], t["trustee"]) for t in listed] == [("postgres", colleague)]
    table = run("-o", "plain")
    assert table.exit_code == 2  # options belong to ls
    plain = run("ls", "-o", "plain")
    assert plain.stdout.split()[:3] == ["truster", "trustee", "granted_at"]
    assert colleague in plain.stdout
    assert plain.stderr.strip() == f"your launchers run the tasks of: balsam_admin, {colleague}, " \
                                   "postgres"
    for args, message in ((["add", "Bob;--"], "Error: invalid user name 'Bob;--'"),
                          (["add", "nobody_at_all"], "Error: no user nobody_at_all"),
                          (["add", "postgres"], "Error: postgres is always trusted"),
                          (["rm", "nobody_at_all"], "Error: you do not trust nobody_at_all")):
        result = run(*args)
        assert result.exit_code == 1 and result.output.startswith(message), result.output
        assert len(result.output.strip().splitlines()) == 1
    assert f"no longer start what {colleague}" in run("rm", colleague).output
    assert json.loads(run("ls", "--json").stdout) == []
