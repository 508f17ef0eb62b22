#!/usr/bin/env bash
# Install what Balsam needs on a fresh Debian machine, idempotently:
#   apt packages (PostgreSQL server; with --tests also Slurm, munge, Open MPI and Chromium for the
#   web page's browser tests), a virtualenv every user can execute (from /usr/bin/python3), and
#   the packages editable.
# Prints the repository path the venv was installed from (a world-readable copy when the clone
# itself is not readable by other users, because the multi-user tests run commands as them).
#   usage: scripts/setup.sh [--tests]
set -euo pipefail
TESTS=0; [ "${1:-}" = "--tests" ] && TESTS=1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BALSAM_VENV:-/opt/balsam/venv}"
log() { echo "[setup] $*" >&2; }

need_apt=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "$TESTS" = 1 ]; then
    command -v slurmctld >/dev/null || need_apt+=(slurm-wlm munge)
    command -v mpirun >/dev/null || need_apt+=(openmpi-bin)
    command -v runuser >/dev/null || need_apt+=(util-linux)
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)   # Playwright drives Debian's build
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then log "missing packages: ${need_apt[*]} (install them as root)"; exit 1; fi
    log "apt-get install ${need_apt[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

# Other users (the project's collaborators in tests, the demo user) must read the sources.
if [ "$(id -u)" = 0 ] && ! runuser -u nobody -- test -r "$REPO/packages/core/pyproject.toml" 2>/dev/null; then
    COPY="$(dirname "$VENV")/src"
    log "repository not readable by other users: installing from a copy in $COPY"
    rm -rf "$COPY"; mkdir -p "$COPY"
    tar -C "$REPO" --exclude=.git --exclude='__pycache__' -cf - . | tar -C "$COPY" -xf -
    chmod -R a+rX "$COPY"
    REPO="$COPY"
fi

mkdir -p "$(dirname "$VENV")"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; /usr/bin/python3 -m venv "$VENV"; }
stamp="$VENV/.balsam-install"
want="$REPO $(cat "$REPO"/packages/*/pyproject.toml "$REPO"/tests/plugins/*/pyproject.toml | sha1sum)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing packages into $VENV"
    pip_log="$(mktemp)"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        -e "$REPO/packages/core[analytics]" -e "$REPO/packages/pgserver" -e "$REPO/packages/perms" \
        -e "$REPO/packages/launcher" -e "$REPO/packages/cli" -e "$REPO/packages/web" \
        -e "$REPO/tests/plugins/balsam-testplugin" \
        'pytest>=8' 'pytest-postgresql>=6' 'hypothesis>=6' 'ruff>=0.6' 'playwright>=1.40' \
        >"$pip_log" 2>&1 \
        || { grep -v '^WARNING: Location' "$pip_log" >&2; exit 1; }
    rm -f "$pip_log"
    echo "$want" > "$stamp"
fi
chmod -R a+rX "$(dirname "$VENV")"
echo "$REPO"
