#!/usr/bin/env bash
# A multi-host test cluster on this one machine (root): a login node and N compute nodes, each its
# own network, hostname, process and mount namespaces, on a private bridge with no route out.
#   usage: scripts/cluster-up.sh [N]          N compute nodes, 1..16 (default 3)
#
#   login   10.78.0.1             munged, slurmctld (users submit here; their servers run here)
#   node1   10.78.0.11 ... nodeN  munged, slurmd (partition "compute", the default)
#   host    10.78.0.254           this machine's own network namespace, on bridge bcl0
#
# Run commands on a node with scripts/cluster-exec.sh NODE CMD...; boot, kill or unplug a node
# with scripts/cluster-node.sh; tear everything down with scripts/cluster-down.sh.
# Each node has its own munged (one shared key), node-local /tmp, /run and /dev/shm, and sees the
# machine's /home, /opt and /var/tmp as a cluster's shared filesystem. Slurm commands work on the
# nodes only (the machine's own /etc/slurm and munged, e.g. scripts/slurm-up.sh's, are untouched).
#
# Idempotent: installs what is missing with apt-get, leaves a healthy cluster of the same shape
# alone, and otherwise tears the old one down and builds a new one (about 2 s).
# Knobs: BALSAM_CLUSTER_NET (10.78.0, a /24 unused on this machine), BALSAM_CLUSTER_CPUS (2) and
# BALSAM_CLUSTER_MEM_MB (2048): what Slurm believes each node has.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/cluster-lib.sh"
cl_require_root
N=${1:-3}
NET=${BALSAM_CLUSTER_NET:-10.78.0}
CPUS=${BALSAM_CLUSTER_CPUS:-2}
MEM=${BALSAM_CLUSTER_MEM_MB:-2048}
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 16 ] || cl_die "N must be 1..16, got '$N'"
[[ "$NET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || cl_die "BALSAM_CLUSTER_NET must look like 10.78.0"
log() { echo "[cluster-up] $*" >&2; }

NODES=(login)
for i in $(seq 1 "$N"); do NODES+=("node$i"); done
ip_of() { if [ "$1" = login ]; then echo "$NET.1"; else echo "$NET.$((10 + ${1#node}))"; fi; }
on() { "$CL_SCRIPTS/cluster-exec.sh" "$@"; }
node_states() { on login sinfo -h -N -o '%T' 2>/dev/null | sort | uniq -c | awk '{print $2 "=" $1}'; }

# ---- packages -----------------------------------------------------------------------------------
pkgs=()
command -v slurmctld >/dev/null || pkgs+=(slurmctld)
command -v slurmd >/dev/null || pkgs+=(slurmd)
command -v sbatch >/dev/null || pkgs+=(slurm-client)
command -v munged >/dev/null || pkgs+=(munge)
command -v mpirun >/dev/null || pkgs+=(openmpi-bin)
# srun --mpi=pmix: Slurm's plugin dlopen()s the unversioned libpmix.so of the -dev package
dpkg-query -W -f='${Status}' libpmix-dev 2>/dev/null | grep -q 'ok installed' || pkgs+=(libpmix-dev)
command -v ip >/dev/null || pkgs+=(iproute2)
command -v python3 >/dev/null || pkgs+=(python3)
command -v nsenter >/dev/null || pkgs+=(util-linux)
if [ ${#pkgs[@]} -gt 0 ]; then
    log "apt-get install ${pkgs[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >/dev/null
fi

# ---- already up? --------------------------------------------------------------------------------
SETTINGS="N=$N NET=$NET CPUS=$CPUS MEM=$MEM"
healthy() {
    [ "$(cat "$CL_RUN/settings" 2>/dev/null)" = "$SETTINGS" ] || return 1
    local node
    for node in "${NODES[@]}"; do cl_init_pid "$node" >/dev/null || return 1; done
    # every compute node answers (idle, or busy with jobs)
    local states
    states=$(node_states)
    [ -n "$states" ] && ! grep -Evq '^(idle|allocated|mixed|completing)=' <<< "$states" \
        && [ "$(awk -F= '{n += $2} END {print n}' <<< "$states")" = "$N" ]
}
if healthy; then log "already up: ${NODES[*]}"; exit 0; fi
if [ -e "$CL_RUN" ] || [ -e "$CL_LIB" ] || ip link show "$CL_BRIDGE" >/dev/null 2>&1; then
    log "tearing down a previous or broken cluster"
    "$CL_SCRIPTS/cluster-down.sh"
fi
if ip -4 route show | grep -q "^$NET\."; then
    cl_die "$NET.0/24 is already routed on this machine: choose another BALSAM_CLUSTER_NET"
fi

# ---- files --------------------------------------------------------------------------------------
install -d -m 0755 "$CL_ETC" "$CL_ETC/slurm" "$CL_ETC/hostname" "$CL_RUN" "$CL_LIB" \
    "$CL_LIB/tmp" "$CL_LIB/spool" "$CL_LOG"
install -d -o munge -g munge -m 0700 "$CL_ETC/munge" "$CL_LIB/munge"
install -d -o slurm -g slurm -m 0755 "$CL_LIB/slurmctld"
install -o slurm -g slurm -m 0640 /dev/null "$CL_LOG/slurmctld.log"
install -o slurm -g slurm -m 0644 /dev/null "$CL_LOG/jobcomp.log"
printf '%s\n' "${NODES[@]}" > "$CL_RUN/nodes"
echo "$SETTINGS" > "$CL_RUN/settings"
mkdir -p /etc/slurm            # mount point for the nodes' view of $CL_ETC/slurm
[ -e /etc/hosts ] || printf '127.0.0.1 localhost\n' > /etc/hosts
{
    echo "127.0.0.1 localhost"
    echo "$NET.254 cluster-host"
    for node in "${NODES[@]}"; do echo "$(ip_of "$node") $node"; done
} > "$CL_ETC/hosts"
echo "# the test cluster has no DNS: names come from /etc/hosts" > "$CL_ETC/resolv.conf"
for node in "${NODES[@]}"; do echo "$node" > "$CL_ETC/hostname/$node"; done
dd if=/dev/urandom of="$CL_ETC/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$CL_ETC/munge/munge.key"
chmod 0400 "$CL_ETC/munge/munge.key"

nodelines=""
for node in "${NODES[@]:1}"; do
    nodelines+="NodeName=$node NodeAddr=$(ip_of "$node") CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS"
    nodelines+=" ThreadsPerCore=1 RealMemory=$MEM State=UNKNOWN"$'\n'
done
cat > "$CL_ETC/slurm/slurm.conf" <<EOF
# Written by balsam's scripts/cluster-up.sh: a throw-away multi-host test cluster.
ClusterName=balsam
SlurmctldHost=login($NET.1)
SlurmctldPort=6827
SlurmdPort=6828
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$CL_LIB/slurmctld
SlurmdSpoolDir=$CL_LIB/spool/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$CL_LOG/slurmctld.log
SlurmdLogFile=$CL_LOG/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$CL_LOG/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=30
MpiDefault=none
MailProg=/bin/true
KillWait=5
MinJobAge=300
${nodelines}PartitionName=compute Nodes=node[1-$N] Default=YES MaxTime=INFINITE State=UP
EOF

# ---- network: a bridge on this machine, one veth per node ---------------------------------------
ip link add "$CL_BRIDGE" type bridge
ip addr add "$NET.254/24" dev "$CL_BRIDGE"
ip link set "$CL_BRIDGE" up
for node in "${NODES[@]}"; do
    ip netns add "bcl-$node"
    ip link add "bclv-$node" type veth peer name eth0 netns "bcl-$node"
    ip link set "bclv-$node" master "$CL_BRIDGE" up
    ip -n "bcl-$node" addr add "$(ip_of "$node")/24" dev eth0
    ip -n "bcl-$node" link set lo up
    ip -n "bcl-$node" link set eth0 up
done

# ---- nodes --------------------------------------------------------------------------------------
for node in "${NODES[@]}"; do "$CL_SCRIPTS/cluster-node.sh" "$node" boot; done
ready() { [ "$(node_states)" = "idle=$N" ]; }
for _ in $(seq 1 300); do ready && break; sleep 0.1; done
ready || cl_die "the compute nodes did not become idle: $(node_states | tr '\n' ' ')"
log "up: ${NODES[*]} (scripts/cluster-exec.sh NODE CMD... runs a command on a node)"
