#!/usr/bin/env bash
# Stop the test Slurm started by scripts/slurm-up.sh (daemons by PID file) and clear its state.
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "[slurm-down] must run as root" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive /run/slurmctld.pid; then
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 1 50); do alive /run/slurmctld.pid || break; sleep 0.1; done
fi
for f in /run/slurmctld.pid /run/slurmd-*.pid /run/slurmdbd.pid /run/mysqld/mysqld.pid \
         /run/munge/munged.pid; do
    alive "$f" && kill "$(cat "$f")"
done
for f in /run/slurmctld.pid /run/slurmd-*.pid /run/munge/munged.pid; do
    for _ in $(seq 1 50); do alive "$f" || break; sleep 0.1; done
done
rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
exit 0
