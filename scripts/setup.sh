#!/usr/bin/env bash
# Install what Balsam needs on a fresh Debian machine, idempotently: apt packages (PostgreSQL
# server; with --tests also Slurm, munge, Open MPI and Chromium for the web page's browser tests),
# uv at the version pyproject.toml requires (in a small venv of its own), and one of two
# environments, both exactly as uv.lock pins them (a lock that no longer matches the pyproject
# files is an error, never silently re-resolved), both executable by every user:
#   (default)  the users' runtime, /opt/balsam/venv: the packages installed from this clone (not
#              editable) and what they need to run; no test tools, no test plugin.
#   --tests    the test environment, /opt/balsam/venv-tests: the packages editable, the test
#              plugin and the dev group (pytest, hypothesis, ruff, mypy, playwright, uv).
# BALSAM_VENV=DIR installs into DIR instead; a runtime install into a directory that holds a test
# environment keeps the test environment (it runs everything the runtime does).
# Prints two lines: the repository the environment runs from (for --tests, a world-readable copy
# when the clone is not readable by other users: the multi-user tests run commands as them), then
# the environment's directory.
#   usage: scripts/setup.sh [--tests]
set -euo pipefail
TESTS=0; [ "${1:-}" = "--tests" ] && TESTS=1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "[setup] $*" >&2; }
files_hash() {   # of the files below $1 (.git and __pycache__ aside): what changed since last time
    (cd "$1" && find . -name .git -prune -o -name __pycache__ -prune -o -type f -print0 \
        | LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-40)
}

need_apt=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need_apt+=(postgresql)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "$TESTS" = 1 ]; then
    command -v slurmctld >/dev/null || need_apt+=(slurm-wlm munge)
    command -v mpirun >/dev/null || need_apt+=(openmpi-bin)
    command -v runuser >/dev/null || need_apt+=(util-linux)
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)   # Playwright drives Debian's build
    # the staging tests run the real rsync and scp (and sftp-server) through a local ssh stand-in
    command -v rsync >/dev/null || need_apt+=(rsync)
    command -v scp >/dev/null || need_apt+=(openssh-client)
    [ -x /usr/lib/openssh/sftp-server ] || need_apt+=(openssh-sftp-server)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then log "missing packages: ${need_apt[*]} (install them as root)"; exit 1; fi
    log "apt-get install ${need_apt[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi

VENV=/opt/balsam/venv; [ "$TESTS" = 1 ] && VENV=/opt/balsam/venv-tests
VENV="$(realpath -m "${BALSAM_VENV:-$VENV}")"
stamp="$VENV/.balsam-install"   # "tests", or "runtime <hash of the packages' files>"
if [ "$TESTS" = 0 ] && [ "$(cut -d' ' -f1 "$stamp" 2>/dev/null)" = tests ]; then
    log "$VENV holds the test environment: keeping it (it runs everything the runtime does)"
    TESTS=1
fi
mkdir -p "$(dirname "$VENV")"

# uv, at the one version pyproject.toml names, in a venv of its own beside the environment.
UV_VERSION="$(/usr/bin/python3 -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["tool"]["uv"]["required-version"].lstrip("="))' \
    "$REPO/pyproject.toml")"
TOOLS="$(dirname "$VENV")/uv-$UV_VERSION"
UV="$TOOLS/bin/uv"
if [ ! -e "$TOOLS/.complete" ]; then
    (
        flock 9
        if [ ! -e "$TOOLS/.complete" ]; then
            log "installing uv $UV_VERSION into $TOOLS"
            rm -rf "$TOOLS"
            /usr/bin/python3 -m venv "$TOOLS"
            "$TOOLS/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION" 2>&1 \
                | grep -v '^WARNING: Location' >&2 || true
            "$UV" --version >/dev/null
            chmod -R a+rX "$TOOLS"
            touch "$TOOLS/.complete"
        fi
    ) 9>"$TOOLS.lock"
fi

if [ "$TESTS" = 1 ]; then
    # Other users (the project's collaborators in tests) import the editable sources, on the
    # namespace cluster's nodes too, where /tmp, /run and /dev/shm are node-local.
    case "$REPO" in /tmp/*|/run/*|/dev/shm/*) node_local=1 ;; *) node_local=0 ;; esac
    if [ "$(id -u)" = 0 ] && { [ "$node_local" = 1 ] \
            || ! runuser -u nobody -- test -r "$REPO/packages/core/pyproject.toml" 2>/dev/null; }; then
        COPY="$VENV-src"; copied="$(files_hash "$REPO")"
        if [ "$(cat "$COPY/.balsam-copy" 2>/dev/null)" != "$copied" ]; then
            log "repository not readable by other users or on every node: installing from a copy in $COPY"
            rm -rf "$COPY"; mkdir -p "$COPY"
            tar -C "$REPO" --exclude=.git --exclude='__pycache__' -cf - . | tar -C "$COPY" -xf -
            echo "$copied" > "$COPY/.balsam-copy"
            chmod -R a+rX "$COPY"
        fi
        REPO="$COPY"
    fi
    what="the test environment"
    want="tests"
    sync=(--locked)
else
    what="the users' runtime"
    # uv rebuilds a local package only when its pyproject.toml changes: when any of the packages'
    # files changed, ask it to rebuild them all.
    want="runtime $(files_hash "$REPO/packages")"
    sync=(--locked --no-dev --no-editable)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        for name in $(sed -n 's/^name = "\(.*\)"$/\1/p' "$REPO"/packages/*/pyproject.toml); do
            sync+=(--reinstall-package "$name")
        done
    fi
fi

[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || log "installing $what into $VENV"
# Compiled bytecode: other users cannot write __pycache__ into the environment.
if ! (cd "$REPO" && UV_PROJECT_ENVIRONMENT="$VENV" "$UV" sync --quiet --python /usr/bin/python3 \
        --compile-bytecode "${sync[@]}"); then
    log "installing into $VENV failed (for a stale uv.lock: '$UV lock', then commit uv.lock)"
    exit 1
fi
[ "$TESTS" = 1 ] && ln -sfn "$UV" "$VENV/bin/uv"
echo "$want" > "$stamp"
chmod -R a+rX "$VENV"
echo "$REPO"
echo "$VENV"
