#!/bin/bash
# Stop the local cluster of cluster-up.sh by its pid files (never by process name).
for pf in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/munge/munged.pid; do
  [ -s "$pf" ] && kill "$(cat "$pf")" 2>/dev/null
done
[ -S /run/mysqld/mysqld.sock ] && mysqladmin shutdown 2>/dev/null
sleep 1
ps -C slurmd,slurmctld,slurmdbd,munged,mariadbd -o pid=,stat=,comm= | grep -v ' Z' || echo "slurm down"
