#!/bin/bash
# Stop the local cluster of cluster-up.sh by its pid files (never by process name).
# Cancel every job first and wait (bounded) until the queue is empty: a daemon killed while a
# job is still ending leaves its job step behind, and the next cluster-up recovers it as a
# job that holds the node forever.
if squeue -h >/dev/null 2>&1; then
  squeue -h -o %i | xargs -r scancel
  for _ in $(seq 1 60); do [ -z "$(squeue -h -o %i)" ] && break; sleep 0.5; done
fi
for pf in /run/slurmd.pid /run/slurmctld.pid /run/slurmdbd.pid /run/munge/munged.pid; do
  [ -s "$pf" ] && kill "$(cat "$pf")" 2>/dev/null
done
[ -S /run/mysqld/mysqld.sock ] && mysqladmin shutdown 2>/dev/null
sleep 1
ps -C slurmd,slurmctld,slurmdbd,munged,mariadbd -o pid=,stat=,comm= | grep -v ' Z' || echo "slurm down"
