#!/usr/bin/env bash
# Functions (sourced by scripts/engines/run.sh) that start the real engines of the `engines`
# tests under one temp folder, $ENGINES_DIR, and stop exactly what they started:
# - SLURM: a one-node cluster (munged, MariaDB, slurmdbd so sacct works, slurmctld, slurmd)
#   whose node has 2 CPUs and 2 fake GPUs (GRES backed by character devices, so jobs get
#   CUDA_VISIBLE_DEVICES); the partition enforces its limits, so an impossible request is
#   refused at submission instead of pending forever;
# - PostgreSQL: a server on 127.0.0.1 with user autotimm / password autotimm, database autotimm.
# Every daemon runs in the foreground of a background job; its pid goes to $ENGINES_DIR/pids
# and stop_services kills those pids (and their descendants), never processes by name.

ENGINES_USER_PW=autotimm

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

started() { # name pid
  echo "$2 $1" >>"$ENGINES_DIR/pids"
}

wait_for() { # what seconds command...
  local what=$1 seconds=$2
  shift 2
  local end=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "engines: $what did not come up in ${seconds}s; its log:" >&2
      tail -20 "$ENGINES_DIR"/log/* 2>/dev/null | tail -60 >&2
      return 1
    fi
    sleep 0.2
  done
}

start_munge() {
  # the default socket: slurmctld's connection to slurmdbd ignores AuthInfo's socket
  if [ -S /run/munge/munge.socket.2 ] && munge -n </dev/null >/dev/null 2>&1; then
    return 0 # a munged runs already: use it
  fi
  local dir=$ENGINES_DIR/munge
  mkdir -p "$dir" /run/munge && chown munge:munge "$dir" /run/munge && chmod 755 /run/munge
  head -c 1024 /dev/urandom >"$dir/munge.key"
  chown munge:munge "$dir/munge.key" && chmod 400 "$dir/munge.key"
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground \
    --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
    --log-file="$ENGINES_DIR/log/munged.log" --seed-file="$dir/munged.seed" \
    >"$ENGINES_DIR/log/munged.out" 2>&1 &
  started munged $!
  wait_for munged 10 sh -c 'munge -n </dev/null'
}

start_mariadb() {
  local dir=$ENGINES_DIR/mysql
  mkdir -p "$dir" && chown mysql:mysql "$dir"
  mariadb-install-db --user=mysql --datadir="$dir/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$ENGINES_DIR/log/mariadb-install.log" 2>&1
  MYSQL_PORT=$(free_port)
  /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir/data" --socket="$dir/mysqld.sock" \
    --pid-file="$dir/mysqld.pid" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --log-error="$dir/mariadb.log" --innodb-buffer-pool-size=64M \
    >"$ENGINES_DIR/log/mariadb.out" 2>&1 &
  started mariadbd $!
  wait_for mariadb 30 mariadb --no-defaults --socket="$dir/mysqld.sock" -e "select 1"
  mariadb --no-defaults --socket="$dir/mysqld.sock" -e \
    "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$ENGINES_USER_PW';
     GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

write_slurm_conf() {
  local dir=$ENGINES_DIR/slurm host
  host=$(hostname -s)
  mkdir -p "$dir/state" "$dir/spool" "$dir/dev"
  # fake GPUs: slurmd accepts only character devices as GRES files (/dev/null's numbers)
  mknod "$dir/dev/fakegpu0" c 1 3 && mknod "$dir/dev/fakegpu1" c 1 3
  SLURMCTLD_PORT=$(free_port) SLURMD_PORT=$(free_port) SLURMDBD_PORT=$(free_port)
  cat >"$dir/slurm.conf" <<EOF
# one-node test cluster of make test-engines (scripts/engines/services.sh)
ClusterName=autotimm
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$ENGINES_DIR/log/slurmctld.log
SlurmdLogFile=$ENGINES_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
EnforcePartLimits=ALL
MinJobAge=300
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURMDBD_PORT
AccountingStorageTRES=gres/gpu
KillWait=5
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 RealMemory=16000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$dir/gres.conf" <<EOF
NodeName=$host Name=gpu File=$dir/dev/fakegpu[0-1]
EOF
  cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$SLURMDBD_PORT
SlurmUser=root
LogFile=$ENGINES_DIR/log/slurmdbd.log
PidFile=$dir/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$ENGINES_USER_PW
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$dir/slurmdbd.conf"
  export SLURM_CONF=$dir/slurm.conf
}

start_slurm() {
  start_munge
  start_mariadb
  write_slurm_conf
  /usr/sbin/slurmdbd -D >"$ENGINES_DIR/log/slurmdbd.out" 2>&1 &
  started slurmdbd $!
  wait_for slurmdbd 30 sacctmgr -n list cluster
  sacctmgr -i add cluster autotimm >/dev/null
  /usr/sbin/slurmctld -D -i >"$ENGINES_DIR/log/slurmctld.out" 2>&1 &
  started slurmctld $!
  /usr/sbin/slurmd -D >"$ENGINES_DIR/log/slurmd.out" 2>&1 &
  started slurmd $!
  wait_for "the SLURM node" 30 sh -c 'sinfo -h -o %T | grep -qx idle'
}

start_postgres() {
  local dir=$ENGINES_DIR/postgres bin
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir"
  echo "$ENGINES_USER_PW" >"$dir/pw" && chown postgres "$dir/pw"
  setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -D "$dir/data" \
    -U autotimm --pwfile="$dir/pw" --auth-host=scram-sha-256 --auth-local=trust \
    >"$ENGINES_DIR/log/initdb.log" 2>&1
  POSTGRES_PORT=$(free_port)
  setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -D "$dir/data" \
    -h 127.0.0.1 -p "$POSTGRES_PORT" -k "$dir" -c fsync=off \
    >"$ENGINES_DIR/log/postgres.log" 2>&1 &
  started postgres $!
  wait_for postgres 30 "$bin/pg_isready" -h 127.0.0.1 -p "$POSTGRES_PORT"
  setpriv --reuid=postgres --regid=postgres --init-groups "$bin/createdb" -h "$dir" \
    -p "$POSTGRES_PORT" -U autotimm autotimm
  export AUTOTIMM_TEST_POSTGRES="postgresql://autotimm:$ENGINES_USER_PW@127.0.0.1:$POSTGRES_PORT/autotimm"
}

descendants() { # pid: its children, grandchildren, ...
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

stop_services() {
  [ -f "$ENGINES_DIR/pids" ] || return 0
  if [ -n "${SLURM_CONF:-}" ] && [ -f "$SLURM_CONF" ]; then
    scancel --quiet --full --user=root 2>/dev/null || true # no job outlives the cluster
  fi
  local pid name pids=()
  # the last started first (slurmd before slurmctld, ..., munged last)
  while read -r pid name; do
    pids=("$pid" $(descendants "$pid") "${pids[@]}")
  done <"$ENGINES_DIR/pids"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  local end=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -f "$ENGINES_DIR/pids"
}
