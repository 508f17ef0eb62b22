#!/usr/bin/env bash
# The demo's steps, as a user would type them (see scripts/demo.sh).
set -euo pipefail
export COLUMNS="${COLUMNS:-150}"   # rich tables: wide enough for ls --wide when piped
DIR="$1"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

cd "$(dirname "$DIR")"
step balsam init "$(basename "$DIR")"
printf '\n\033[1m$ . balsamactivate %s\033[0m\n' "$(basename "$DIR")"
. balsamactivate "$(basename "$DIR")"
step balsam which
step balsam app --name hello --executable "echo hello from" --description "greets"
step balsam job --name first --workflow demo --app hello --args "task one"
step balsam job --name second --workflow demo --app hello --args "task two"
step balsam job --name joined --workflow demo --app hello --args "the child of both"
step balsam dep 1 3
step balsam dep 2 3
step balsam ls
step balsam launcher --job-mode serial --consume-all --nodes 2
step balsam ls --wide
step balsam ls --history 3
step balsam report summary
printf '\n\033[1m$ cat %s\033[0m\n' "data/demo/joined_3/joined.out"
cat "$BALSAM_DB_PATH/data/demo/joined_3/"*.out
step balsam server stop
. balsamdeactivate
echo
echo "Demo finished: project left in $DIR"
