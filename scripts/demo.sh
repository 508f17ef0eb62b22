#!/usr/bin/env bash
# The end-to-end demo on the embedded PostgreSQL: init a project, activate it, add an app and a
# small DAG of tasks, run a launcher until the work is done, and report.
# PostgreSQL refuses to run as root, so as root the demo runs as the ordinary user balsamdemo.
#   usage: scripts/demo.sh [PROJECT_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$(bash "$HERE/setup.sh" | sed -n 2p)"
STEPS="$(dirname "$VENV")/demo-steps.sh"
cp "$HERE/demo-steps.sh" "$STEPS"; chmod a+rx "$STEPS"
if [ "$(id -u)" = 0 ]; then
    id -u balsamdemo >/dev/null 2>&1 || useradd --create-home --shell /bin/bash balsamdemo
    DIR="${1:-$(runuser -u balsamdemo -- mktemp -d /tmp/balsam-demo-XXXX)/my-balsam-project}"
    exec runuser -u balsamdemo -- env -i HOME=/home/balsamdemo USER=balsamdemo LANG=C.UTF-8 \
        PATH="$VENV/bin:/usr/bin:/bin" bash "$STEPS" "$DIR"
fi
DIR="${1:-$(mktemp -d /tmp/balsam-demo-XXXX)/my-balsam-project}"
PATH="$VENV/bin:$PATH" exec bash "$STEPS" "$DIR"
