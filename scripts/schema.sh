#!/usr/bin/env bash
# Write docs/schema.sql, the schema the migrations build, from a throwaway PostgreSQL cluster
# (balsam_testing.schema; the test environment). After changing a migration, run it and commit
# the file; tests/test_schema.py fails while it is out of date.
#   usage: scripts/schema.sh [--check]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(bash "$REPO/scripts/setup.sh" --tests | sed -n 2p)"
exec "$VENV/bin/python" -m balsam_testing.schema "$REPO/docs/schema.sql" "$@"
