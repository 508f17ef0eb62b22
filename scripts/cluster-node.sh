#!/usr/bin/env bash
# Boot, kill or unplug one node of the namespace test cluster (scripts/cluster-up.sh), as root.
#   usage: scripts/cluster-node.sh NODE boot|kill|link-down|link-up
#          scripts/cluster-node.sh status
#          scripts/cluster-node.sh hide DIR
#   boot       start the node: its init, munged, and slurmctld (login) or slurmd (compute nodes)
#   kill       SIGKILL the node's init: the kernel kills every process of the node at once, like a
#              power failure (do link-down first, or the dying sockets still say goodbye)
#   link-down  unplug the node's network cable (its processes keep running); link-up plugs it back
#   status     one line per node: running or stopped, link up or down
#   hide       make DIR (on the shared filesystem) look empty on every compute node, now and after
#              each boot, like a directory private to the login node: an empty read-only tmpfs of
#              the same owner, group and mode is mounted over it
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"
cl_require_root

# PID 1 of a node: reaps the orphans that land on it; SIGTERM powers the node off.
INIT='
import os, signal, sys

def reap(*_):
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return

signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
'

# Run inside the node's fresh namespaces (sh -c SETUP setup NODE INIT ETC LIB), before becoming
# its init: the cluster's /etc files, node-local /tmp, /run and /dev/shm.
SETUP='
set -e
node=$1 etc=$3 lib=$4
hostname "$node"
mount --bind "$etc/hosts" /etc/hosts
if [ -e /etc/resolv.conf ]; then mount --bind "$etc/resolv.conf" /etc/resolv.conf; fi
if [ -e /etc/hostname ]; then mount --bind "$etc/hostname/$node" /etc/hostname; fi
mount --bind "$etc/slurm" /etc/slurm
mount --bind "$lib/tmp/$node" /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev balsam-cluster-run /run
mount -t tmpfs -o mode=1777,nosuid,nodev balsam-cluster-shm /dev/shm
install -d -o munge -g munge -m 0755 /run/munge
exec python3 -c "$2" balsam-cluster-init "$node"
'

on() { "$CL_SCRIPTS/cluster-exec.sh" "$@"; }

wait_for() {  # wait_for SECONDS CMD...: poll every 0.05 s
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do [ "$SECONDS" -lt "$end" ] || return 1; sleep 0.05; done
}

booted() {  # booted NODE UNSHARE_PID: the init unshare forked runs the init program
    local child
    child=$(cut -d' ' -f1 "/proc/$2/task/$2/children" 2>/dev/null) && [ -n "$child" ] \
        && echo "$child" > "$CL_RUN/$1.init" && cl_init_pid "$1" >/dev/null
}

boot() {
    local node=$1 upid
    [ -e "/run/netns/bcl-$node" ] || cl_die "no node '$node' (run scripts/cluster-up.sh first)"
    if cl_init_pid "$node" >/dev/null; then cl_die "$node is already running"; fi
    # a fresh node-local /tmp, as after a reboot
    rm -rf "${CL_LIB:?}/tmp/$node"
    install -d -m 1777 "$CL_LIB/tmp/$node"
    (
        cl_closefds
        exec setsid nsenter --net="/run/netns/bcl-$node" -- unshare --uts --ipc --pid --fork \
            --mount --propagation slave --mount-proc -- /bin/sh -c "$SETUP" setup "$node" "$INIT" \
            "$CL_ETC" "$CL_LIB"
    ) </dev/null >>"$CL_LOG/node-$node.log" 2>&1 &
    upid=$!
    wait_for 10 booted "$node" "$upid" \
        || cl_die "$node did not boot: $(tail -n3 "$CL_LOG/node-$node.log")"

    install -o munge -g munge -m 0640 /dev/null "$CL_LOG/munged-$node.log"
    on "$node" runuser -u munge -- /usr/sbin/munged --key-file="$CL_ETC/munge/munge.key" \
        --seed-file="$CL_LIB/munge/$node.seed" --log-file="$CL_LOG/munged-$node.log" \
        </dev/null >>"$CL_LOG/node-$node.log" 2>&1 \
        || cl_die "munged on $node failed: $(tail -n3 "$CL_LOG/munged-$node.log")"
    wait_for 10 on "$node" sh -c 'munge -n | unmunge' || cl_die "munge does not work on $node"
    if [ "$node" = login ]; then
        on login /usr/sbin/slurmctld </dev/null >>"$CL_LOG/node-$node.log" 2>&1 \
            || cl_die "slurmctld failed: $(tail -n3 "$CL_LOG/slurmctld.log")"
    else
        while read -r dir; do hide_on "$node" "$dir"; done < <(cat "$CL_ETC/hidden" 2>/dev/null)
        install -d -m 0755 "$CL_LIB/spool/$node"
        on "$node" /usr/sbin/slurmd </dev/null >>"$CL_LOG/node-$node.log" 2>&1 \
            || cl_die "slurmd on $node failed: $(tail -n3 "$CL_LOG/slurmd-$node.log")"
    fi
}

hide_on() {  # hide_on NODE DIR
    local mode uid gid
    [ -d "$2" ] || return 0
    read -r mode uid gid < <(stat -c '%a %u %g' "$2")
    on "$1" mount -t tmpfs -o "ro,size=4k,mode=$mode,uid=$uid,gid=$gid" balsam-hidden "$2"
}

hide() {
    local dir node
    dir=$(realpath -e "$1") || cl_die "no directory $1"
    echo "$dir" >> "$CL_ETC/hidden"
    for node in $(cl_nodes); do
        if [ "$node" != login ] && cl_init_pid "$node" >/dev/null; then hide_on "$node" "$dir"; fi
    done
}

kill_node() {
    local node=$1 pid
    pid=$(cl_init_pid "$node") || { echo "$node is not running" >&2; return 0; }
    kill -KILL "$pid"
    wait_for 10 sh -c "! [ -d /proc/$pid ] || grep -q '^State:.*Z' /proc/$pid/status" \
        || cl_die "$node's init (pid $pid) did not die"
    wait_for 10 sh -c "[ -z \"\$(ip netns pids bcl-$node)\" ]" \
        || cl_die "processes of $node survived: $(ip netns pids "bcl-$node" | tr '\n' ' ')"
    rm -f "$CL_RUN/$node.init"
}

link() {
    [ -e "/run/netns/bcl-$1" ] || cl_die "no node '$1'"
    ip link set "bclv-$1" "$2"
}

status() {
    local node state link
    for node in $(cl_nodes); do
        state=stopped
        cl_init_pid "$node" >/dev/null && state=running
        link=$(ip -br link show "bclv-$node" 2>/dev/null | awk '{print $2}')
        echo "$node $state link=${link:-none}"
    done
}

usage="usage: cluster-node.sh NODE boot|kill|link-down|link-up, or status, or hide DIR"
case "${1:-}" in
    status) status ;;
    hide) hide "${2:?$usage}" ;;
    *)
        case "${2:-}" in
            boot) boot "$1" ;;
            kill) kill_node "$1" ;;
            link-down) link "$1" down ;;
            link-up) link "$1" up ;;
            *) cl_die "$usage" ;;
        esac ;;
esac
