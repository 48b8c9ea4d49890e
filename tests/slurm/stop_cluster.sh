#!/usr/bin/env bash
# Stop the daemons started by start_cluster.sh (by the pids it recorded, not by name).
pidfile=${1:?usage: stop_cluster.sh PIDFILE}
[ -f "$pidfile" ] || exit 0
pids=$(cat "$pidfile")
for pid in $pids; do kill "$pid" 2>/dev/null || true; done
# wait (up to 15 s) until they are gone, so that nothing writes state after the files are restored
for _ in $(seq 30); do
  alive=0
  for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.5
done
rm -f "$pidfile"
# The files start_cluster.sh wrote (/etc/slurm/slurm.conf, ...) are restored by tests/test_slurm.py
# from the snapshot it took before; without a controller, a leftover slurm.conf would make every
# scontrol call (Snakemake's SLURM plugin makes one at start-up) wait ~10 s for it.
exit 0
