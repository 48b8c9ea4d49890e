#!/usr/bin/env bash
# Stop the daemons started by start_cluster.sh (by the pids it recorded, not by name).
pidfile=${1:?usage: stop_cluster.sh PIDFILE}
[ -f "$pidfile" ] || exit 0
while read -r pid; do
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
done < "$pidfile"
sleep 1
rm -f "$pidfile"
# Without a controller, every scontrol call (Snakemake's SLURM plugin makes one at start-up) waits
# ~10 s for it; with no slurm.conf it fails at once. Keep the file beside, for inspection.
[ -f /etc/slurm/slurm.conf ] && mv /etc/slurm/slurm.conf /etc/slurm/slurm.conf.oncorobust-test
exit 0
