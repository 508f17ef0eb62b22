"""docs/schema.sql: current (what the migrations build now), and a database built from it is the
database the migrations build (their catalog dumps, normalised, are equal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsam_testing import schema
from balsam_testing.pg import throwaway_cluster

pytestmark = pytest.mark.pg
SNAPSHOT = Path(__file__).resolve().parents[1] / "docs" / "schema.sql"


def test_the_snapshot_is_current_and_builds_the_same_database():
    text = SNAPSHOT.read_text()
    with throwaway_cluster(prefix="balsam-schema-") as pg:
        migrated = schema.migrated(pg)
        assert schema.snapshot_text(migrated) == text, "docs/schema.sql is stale: run " \
            "scripts/schema.sh"
        assert schema.from_snapshot(pg, text) == migrated
        # The comparison sees a difference as small as one index.
        changed = text + "\nCREATE INDEX extra ON public.tasks (name);\n"
        assert schema.from_snapshot(pg, changed, "balsam_changed") != migrated


def test_normalise_drops_comments_settings_and_blank_runs_only():
    dump = ("--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET lock_timeout = 0;\n"
            "SELECT pg_catalog.set_config('search_path', '', false);\n\n\n\n"
            "CREATE TABLE public.t (\n    id integer  \n);\n\n\n-- Name: t\nGRANT SELECT ON "
            "TABLE public.t TO balsam_viewer;\n")
    assert schema.normalise(dump) == ("CREATE TABLE public.t (\n    id integer\n);\n\n"
                                      "GRANT SELECT ON TABLE public.t TO balsam_viewer;\n")
