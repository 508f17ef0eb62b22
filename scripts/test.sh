#!/usr/bin/env bash
# The test command: install the test environment (scripts/setup.sh --tests), lint, check types
# (mypy over every package's src/), then run every test (pytest as root; PostgreSQL clusters run
# as unprivileged users; multi-user tests create real UNIX users).
#   usage: scripts/test.sh [pytest args...]
set -euo pipefail
where="$(bash "$(dirname "${BASH_SOURCE[0]}")/setup.sh" --tests)"
REPO="$(sed -n 1p <<<"$where")"
VENV="$(sed -n 2p <<<"$where")"
cd "$REPO"
export PATH="$VENV/bin:$PATH"
echo "[test] ruff check"
ruff check --quiet .
echo "[test] mypy"
mypy   # every package's src/ (the files of [tool.mypy] in pyproject.toml)
echo "[test] pytest"
set +e
pytest "$@"
rc=$?
set -e
[ "$rc" = 5 ] && { echo "[test] no tests were collected" >&2; exit 1; }
exit "$rc"
