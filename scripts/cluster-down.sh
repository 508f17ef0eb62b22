#!/usr/bin/env bash
# Tear down the namespace test cluster of scripts/cluster-up.sh (root); idempotent.
# Powers every node off (SIGKILL to its init kills all its processes: daemons, jobs, servers),
# kills anything else left in its network namespace, removes the namespaces, the bridge, the
# veths and the cluster's files. BALSAM_CLUSTER_KEEP_LOGS=1 keeps /var/log/balsam-cluster.
# Nothing outside the cluster's namespaces is signalled.
set -uo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"
cl_require_root
namespaces() { ip netns list 2>/dev/null | awk '$1 ~ /^bcl-/ {print $1}'; }
ns_pids() { local ns; for ns in $(namespaces); do ip netns pids "$ns" 2>/dev/null; done; }
links() { ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^(bcl0|bclv-)/ {sub(/@.*/, "", $2); print $2}'; }

for node in $(cl_nodes); do
    pid=$(cl_init_pid "$node") && kill -KILL "$pid"
done
# processes that entered a namespace some other way (ip netns exec): TERM, then KILL
pids=$(ns_pids)
if [ -n "$pids" ]; then
    kill -TERM $pids 2>/dev/null
    for _ in $(seq 1 20); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
    pids=$(ns_pids)
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null
fi
for _ in $(seq 1 50); do [ -z "$(ns_pids)" ] && break; sleep 0.1; done
for ns in $(namespaces); do ip netns del "$ns"; done     # also deletes the node's veth pair
ip link del "$CL_BRIDGE" 2>/dev/null
for _ in $(seq 1 20); do [ -z "$(links)" ] && break; sleep 0.1; done   # veths go asynchronously
for link in $(links); do ip link del "$link" 2>/dev/null; done
rm -rf "$CL_RUN" "$CL_LIB" "$CL_ETC"
[ "${BALSAM_CLUSTER_KEEP_LOGS:-0}" = 1 ] || rm -rf "$CL_LOG"
# `ip netns add` made /run/netns a mount point: undo that when no namespace at all is left
if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ]; then
    umount /run/netns 2>/dev/null
    rmdir /run/netns 2>/dev/null
fi
left="$(namespaces) $(links) $(ns_pids)"
[ -z "${left// /}" ] || cl_die "still present: $left"
echo "[cluster-down] down" >&2
