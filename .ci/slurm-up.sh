#!/usr/bin/env bash
# A single-node SLURM on this machine, from Debian's packages (slurm-wlm, munge), for the
# integration test tests/workflow/test_cluster.py. Idempotent: a second call leaves running daemons alone.
#   sudo .ci/slurm-up.sh          # install if missing, configure, start munged/slurmctld/slurmd
#   .ci/slurm-up.sh --check       # exit 0 when the node answers and is idle/mixed
# Daemons run as root in the foreground-less classic way (no systemd in containers). The node
# offers all CPUs and most of the memory of the machine under partition "debug".
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
HOST=$(hostname -s)

node_ready() {
    sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'
}

if [[ "${1:-}" == "--check" ]]; then
    node_ready && exit 0 || exit 1
fi

if [[ $EUID -ne 0 ]]; then
    echo "slurm-up.sh: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y slurm-wlm munge
fi

CPUS=$(nproc)
# Leave 2 GiB to the system; SLURM refuses jobs asking for more than RealMemory.
MEM_MB=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 2048 ))

mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS" /run/munge /var/log/munge /var/lib/munge
# slurm.conf is rewritten only when it changes, so that running daemons stay consistent.
NEW_CONF=$(cat <<CONF
# Written by .ci/slurm-up.sh: one node, no accounting database (status via squeue).
ClusterName=lenslab
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
)
if [[ ! -f $CONF_DIR/slurm.conf ]] || [[ "$(cat $CONF_DIR/slurm.conf)" != "$NEW_CONF" ]]; then
    printf '%s\n' "$NEW_CONF" > "$CONF_DIR/slurm.conf"
    CHANGED=1
else
    CHANGED=0
fi
# cgroup v1 is what containers usually mount; only proctrack/task plugins would use it.
printf "CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n" > "$CONF_DIR/cgroup.conf"

# munge: one key, owned by munge, readable by nobody else.
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key

running() { pgrep -x "$1" >/dev/null; }

if ! running munged; then
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 20); do munge -n >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null

if [[ $CHANGED == 1 ]] && running slurmctld; then
    scontrol reconfigure || true
fi
running slurmctld || /usr/sbin/slurmctld
running slurmd || /usr/sbin/slurmd

for _ in $(seq 60); do
    node_ready && break
    # A node left "down" by an earlier unclean stop comes back on its own (ReturnToService=2);
    # resume it explicitly in case it was drained.
    scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
    sleep 1
done
if ! node_ready; then
    echo "slurm-up.sh: the node did not come up; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
    sinfo -N -l >&2 || true
    exit 1
fi
sinfo -N -l
