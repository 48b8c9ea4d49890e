#!/usr/bin/env bash
# Start a one-node SLURM cluster on this (Debian) machine, as root: installs slurm-wlm and munge
# from apt if needed (install_slurm.sh), writes /etc/slurm/slurm.conf (no accounting: Snakemake's
# SLURM plugin is then told to use squeue for job status), starts munged (unless running),
# slurmctld and slurmd, and waits until the node is idle. Writes the pids of the daemons it started
# to the file named by $1; stop_cluster.sh kills them. tests/test_slurm.py snapshots and restores
# what this writes (/etc/slurm, /etc/munge, /var/spool/slurm*, /var/log/slurm, ...).
# Exit 77 (skip) when not root, without apt-get, or when SLURM daemons already run here (a real
# cluster node: its configuration is not ours to overwrite).
set -euo pipefail
pidfile=${1:?usage: start_cluster.sh PIDFILE}
bash "$(dirname "$0")/install_slurm.sh" >/dev/null || exit $?
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
  echo "SKIP: slurmctld or slurmd already runs on this machine"; exit 77
fi
mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
if [ ! -f /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
: > "$pidfile"
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged --force
  for _ in $(seq 20); do [ -s /run/munge/munged.pid ] && break; sleep 0.2; done
  cat /run/munge/munged.pid >> "$pidfile"  # ours: stop_cluster.sh stops it
fi
H=$(hostname -s)
MEM=$(( $(free -m | awk '/^Mem:/ {print $2}') * 8 / 10 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=oncorobust-test
SlurmctldHost=$H
SlurmUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
ReturnToService=2
NodeName=$H CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -i
slurmd
for _ in $(seq 60); do
  sleep 1
  [ -f /run/slurmctld.pid ] && [ -f /run/slurmd.pid ] || continue
  if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix)'; then break; fi
done
cat /run/slurmctld.pid /run/slurmd.pid >> "$pidfile"
sinfo -h -o %t | grep -qE '^(idle|mix)' || { echo "SLURM node did not become idle"; sinfo; exit 1; }
echo "SLURM $(sinfo --version) up on $H ($(nproc) CPUs, ${MEM} MB)"
