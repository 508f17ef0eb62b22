#!/usr/bin/env bash
# Run a command on a node of the namespace test cluster (scripts/cluster-up.sh), as root: the
# equivalent of `ssh NODE CMD` on a real cluster.
#   usage: scripts/cluster-exec.sh NODE [CMD [ARGS...]]      NODE: login, node1, ... (default: bash)
#   e.g.   scripts/cluster-exec.sh login runuser -u alice -- sbatch job.sh
# The command joins every namespace of the node (its network, hostname, processes and mounts: its
# own /tmp, /run and /dev/shm) and starts in the caller's working directory when the node has it
# (the shared filesystem), else in /. Descriptors above 2 are not passed on, as over ssh.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"
cl_require_root
node=${1:?usage: cluster-exec.sh NODE [CMD [ARGS...]]}
shift
pid=$(cl_init_pid "$node") \
    || cl_die "node '$node' is not running (nodes: $(cl_nodes | tr '\n' ' ')); see scripts/cluster-up.sh"
[ $# -gt 0 ] || set -- bash
exec nsenter --target "$pid" --mount --uts --ipc --net --pid -- /bin/bash -c "
    $(declare -f cl_closefds)
    cl_closefds"'
    cd "$1" 2>/dev/null || cd /
    shift
    exec "$@"' cluster-exec "$PWD" "$@"
