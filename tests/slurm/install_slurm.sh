#!/usr/bin/env bash
# Install slurm-wlm and munge from apt when slurmctld is missing (Debian/Ubuntu, as root).
# Prints "installed" when this call installed them, "present" when they were there already.
# Exit 77 (skip) when not root or without apt-get.
set -euo pipefail
if [ "$(id -u)" != 0 ]; then echo "SKIP: needs root to install and start SLURM"; exit 77; fi
if command -v slurmctld >/dev/null; then echo present; exit 0; fi
command -v apt-get >/dev/null || { echo "SKIP: no apt-get to install slurm-wlm"; exit 77; }
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
echo installed
