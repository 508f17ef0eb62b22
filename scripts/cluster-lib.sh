# Sourced by scripts/cluster-*.sh: the names, paths and helpers of the namespace test cluster.
#
# A node is one long-lived init process (Python, reaping orphans as PID 1 does) in its own PID,
# UTS, IPC and mount namespaces, inside a network namespace bcl-NODE wired to the bridge bcl0.
# Killing that init kills every process of the node at once, as a power failure would. Its mount
# namespace has node-local /tmp, /run and /dev/shm and the cluster's /etc/hosts and /etc/slurm;
# everything else (/home, /opt, /var/tmp, /etc/passwd, ...) is the machine's: the shared filesystem.
# shellcheck shell=bash

CL_ETC=/etc/balsam-cluster
CL_RUN=/run/balsam-cluster
CL_LIB=/var/lib/balsam-cluster
CL_LOG=/var/log/balsam-cluster
CL_BRIDGE=bcl0
CL_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

cl_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

cl_require_root() { [ "$(id -u)" = 0 ] || cl_die "must run as root"; }

# cl_alive PID: the process exists and is not a zombie (kill -0 succeeds on zombies, which linger
# where PID 1 reaps only now and then).
cl_alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# cl_init_pid NODE: print the (host) pid of the node's init, or fail if the node is not running.
cl_init_pid() {
    local pid
    pid=$(cat "$CL_RUN/$1.init" 2>/dev/null) && cl_alive "$pid" \
        && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q " balsam-cluster-init $1 " && echo "$pid"
}

# cl_nodes: every node of the cluster, login first.
cl_nodes() { cat "$CL_RUN/nodes" 2>/dev/null; }

# cl_closefds: close every descriptor above 2, so that daemons started from a script holding a
# lock (flock) or a pipe do not keep it open for their whole life.
cl_closefds() {
    local fd
    for fd in /proc/self/fd/*; do  # (no redirection here: it would be undone by the closing)
        fd=${fd##*/}
        if [ "$fd" -gt 2 ]; then eval "exec $fd>&-"; fi
    done
    return 0
}
