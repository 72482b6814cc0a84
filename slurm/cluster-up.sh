#!/bin/bash
# A one-node SLURM cluster on localhost for tests and CI (Debian 12, slurm-wlm, root, no
# systemd). Accounting (MariaDB + slurmdbd) is ON by default: without it a job that dies
# without a result leaves submitit polling forever; with it failures surface.
#   sudo bash slurm/cluster-up.sh          ACCOUNTING=0 to skip MariaDB/slurmdbd
# Stop with slurm/cluster-down.sh (by pid files).
set -euo pipefail
ACCOUNTING=${ACCOUNTING:-1}
[ "$(id -u)" = 0 ] || { echo "cluster-up: needs root" >&2; exit 2; }
alive() { ps -C "$1" -o stat= | grep -qv '^Z'; }   # pgrep would also match zombies
T0=$(date +%s.%N)
export DEBIAN_FRONTEND=noninteractive
PKGS="slurm-wlm munge"; [ "$ACCOUNTING" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
  apt-get install -y -q $PKGS >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q $PKGS >/dev/null; }
fi
NCPU=$(nproc --all)  # --all: plain nproc honours OMP_NUM_THREADS (1 in the tests)
MEM=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024 ))

[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
alive munged || runuser -u munge -- /usr/sbin/munged

mkdir -p /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
if [ "$ACCOUNTING" = 1 ]; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if ! alive mariadbd; then
    (cd / && setsid /usr/bin/mysqld_safe --bind-address=127.0.0.1 </dev/null >/dev/null 2>&1 &) </dev/null >/dev/null 2>&1
    for _ in $(seq 1 120); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.25; done
  fi
  mysql -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  alive slurmdbd || /usr/sbin/slurmdbd
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
fi

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
$ACCT
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

if [ "$ACCOUNTING" = 1 ]; then
  for _ in $(seq 1 120); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.25; done
  sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
fi
alive slurmctld || /usr/sbin/slurmctld -i
alive slurmd || /usr/sbin/slurmd -N localhost
for _ in $(seq 1 120); do sinfo -h -o %T 2>/dev/null | grep -q '^idle' && break; sleep 0.25; done
sinfo
echo "slurm up in $(echo "$(date +%s.%N) - $T0" | bc) s"
