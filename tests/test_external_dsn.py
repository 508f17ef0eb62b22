"""A project on an existing external PostgreSQL server (``balsam init --dsn``)."""

from __future__ import annotations

import itertools

import pytest
from click.testing import CliRunner
from psycopg import sql

from balsam.db import connect
from balsam.plugins import get_plugin_manager
from balsam.project import Project
from balsam_cli.main import build_cli

pytestmark = pytest.mark.pg
_n = itertools.count()


@pytest.fixture
def empty_dsn(pg_server):
    name = f"ext_{next(_n)}"
    with connect(pg_server.dsn()) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.dsn(name)
    with connect(pg_server.dsn()) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_init_with_dsn_migrates_and_activates(tmp_path, empty_dsn, monkeypatch):
    monkeypatch.setenv("BALSAM_HOME", str(tmp_path / "home"))
    cli = build_cli(get_plugin_manager())
    root = tmp_path / "ext-project"
    result = CliRunner().invoke(cli, ["init", str(root), "--dsn", empty_dsn])
    assert result.exit_code == 0, result.output
    project = Project.load(root)
    assert project.info.dsn == empty_dsn and not project.embedded
    assert not (root / "balsamdb").exists()
    with connect(project) as conn:
        tables = {r["tablename"] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"apps", "tasks", "task_events", "task_parents", "batch_jobs", "launchers"} <= tables
    activated = CliRunner().invoke(cli, ["activate", str(root)])
    assert activated.exit_code == 0, activated.output
    assert f"BALSAM_DB_PATH={root}" in activated.output


def test_init_with_unreachable_dsn_fails_cleanly(tmp_path, pg_server):
    root = tmp_path / "bad"
    bad = pg_server.dsn("no_such_database_here")
    result = CliRunner().invoke(build_cli(get_plugin_manager()), ["init", str(root), "--dsn", bad])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot connect to the database of")
    assert len(result.output.strip().splitlines()) == 1
    assert not root.exists()
