#!/usr/bin/env bash
# Throw-away Slurm on this host for tests (root): munged, slurmctld and one slurmd per fake node.
# Idempotent: installs slurm-wlm and munge with apt when missing and leaves a running cluster alone.
#   usage: [NNODES=1] [ACCT=0] [PARTITION=debug] scripts/slurm-up.sh
#   NNODES>1 runs fake nodes n1..nN on 127.0.0.1; ACCT=1 adds MariaDB + slurmdbd for sacct.
# Recipe: ../shared/reference/infrastructure-recipes.md section 4. Stop it with scripts/slurm-down.sh.
set -euo pipefail
NNODES=${NNODES:-1}; ACCT=${ACCT:-0}; PARTITION=${PARTITION:-debug}
export DEBIAN_FRONTEND=noninteractive
log() { echo "[slurm-up] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
idle() { [ "$(sinfo -h -o '%T' 2>/dev/null | sort -u | tr -d '\n')" = idle ]; }

if alive /run/slurmctld.pid && idle; then
    log "already running"; exit 0
fi

pkgs=()
command -v slurmctld >/dev/null || pkgs+=(slurm-wlm)
command -v munged >/dev/null || pkgs+=(munge)
if [ "$ACCT" = 1 ]; then
    command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
    command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
    log "apt-get install ${pkgs[*]}"
    apt-get update -q >/dev/null
    apt-get install -y -q "${pkgs[@]}" >/dev/null
fi

mkdir -p /run/munge /var/spool/slurmctld /var/log/slurm /etc/slurm
chown munge:munge /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged

if [ "$ACCT" = 1 ]; then
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if ! mariadb -e 'select 1' >/dev/null 2>&1; then
        /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
            >/var/log/slurm/mariadb.log 2>&1 &
        for _ in $(seq 1 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    mariadb -e "create database if not exists slurm_acct_db;
        create user if not exists 'slurm'@'localhost' identified by 'slurmdbpw';
        grant all on slurm_acct_db.* to 'slurm'@'localhost';"
    cat > /etc/slurm/slurmdbd.conf <<EOC
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpw
StorageLoc=slurm_acct_db
EOC
    chown slurm:slurm /etc/slurm/slurmdbd.conf; chmod 600 /etc/slurm/slurmdbd.conf
    alive /run/slurmdbd.pid || /usr/sbin/slurmdbd
    ACCTCONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux"
else
    ACCTCONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

CPUS=$(nproc)
if [ "$NNODES" = 1 ]; then
    NODES=localhost
    NODELINE="NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN"
else
    NODES="n[1-$NNODES]"
    NODELINE="NodeName=n[1-$NNODES] NodeAddr=127.0.0.1 NodeHostname=localhost Port=[17001-$((17000 + NNODES))] CPUs=$CPUS State=UNKNOWN"
fi
cat > /etc/slurm/slurm.conf <<EOC
# Written by balsam scripts/slurm-up.sh: a throw-away test cluster.
ClusterName=ci
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCTCONF
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=5
MinJobAge=300
$NODELINE
PartitionName=$PARTITION Nodes=$NODES Default=YES MaxTime=INFINITE State=UP
EOC

if [ "$ACCT" = 1 ]; then
    for _ in $(seq 1 50); do
        sacctmgr -i add cluster ci >/dev/null 2>&1 && break
        sacctmgr -n list cluster format=cluster 2>/dev/null | grep -qw ci && break
        sleep 0.2
    done
fi
alive /run/slurmctld.pid || /usr/sbin/slurmctld
if [ "$NNODES" = 1 ]; then
    mkdir -p /var/spool/slurmd/localhost
    alive /run/slurmd-localhost.pid || /usr/sbin/slurmd -N localhost
else
    for i in $(seq 1 "$NNODES"); do
        mkdir -p "/var/spool/slurmd/n$i"
        alive "/run/slurmd-n$i.pid" || /usr/sbin/slurmd -N "n$i"
    done
fi
for _ in $(seq 1 200); do idle && break; sleep 0.1; done
idle || { log "nodes did not become idle:"; sinfo >&2; exit 1; }
log "up: $(sinfo -h -o '%P %D %T' | tr '\n' ' ')"
