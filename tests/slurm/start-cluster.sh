#!/usr/bin/env bash
# Start a real single-node SLURM cluster (munge + MariaDB + slurmdbd + slurmctld +
# slurmd) on this machine, idempotently, for CI and the SLURM tests.
#
#   sudo tests/slurm/start-cluster.sh [--no-smoke]
#   eval "$(sudo tests/slurm/start-cluster.sh)"   # sets LATENTEBSD_REAL_SLURM=1
#
# Run as root on Debian 12 (no systemd needed: every daemon is started directly).
# Everything is logged on stderr; stdout carries only the final line
# "export LATENTEBSD_REAL_SLURM=1", so the output can be eval'ed.
# A second run finds everything healthy, changes nothing and only re-runs the
# smoke test (a few seconds). Daemons that died are started again; a changed
# generated config restarts the daemons that read it. See README.md.
#
# Environment knobs (all optional):
#   LATENTEBSD_SLURM_CLUSTER  cluster name               [latentebsd]
#   LATENTEBSD_SLURM_ACCOUNT  account for root/$SUDO_USER [latentebsd]
#   LATENTEBSD_SLURM_CPUS     CPUs of the node            [2]
#   LATENTEBSD_SLURM_MEM_PCT  RealMemory, % of MemTotal   [70]
#   LATENTEBSD_SLURM_TIMEOUT  seconds to wait per daemon  [120]
set -euo pipefail

CLUSTER=${LATENTEBSD_SLURM_CLUSTER:-latentebsd}
ACCOUNT=${LATENTEBSD_SLURM_ACCOUNT:-latentebsd}
NODE_CPUS=${LATENTEBSD_SLURM_CPUS:-2}
MEM_PCT=${LATENTEBSD_SLURM_MEM_PCT:-70}
TIMEOUT=${LATENTEBSD_SLURM_TIMEOUT:-120}
SMOKE=1
for arg in "$@"; do
    case $arg in
        --no-smoke) SMOKE=0 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "start-cluster.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

ETC=/etc/slurm
LOGDIR=/var/log/slurm
RUNDIR=/run/slurm
CTLD_SPOOL=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS_FILE=$ETC/slurmdbd.pass
MYSQL_LOG=/var/log/mysql/error.log
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
export DEBIAN_FRONTEND=noninteractive

T0=$SECONDS
log() { printf '[start-cluster %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }

show_logs() {
    local f
    for f in /var/log/munge/munged.log "$MYSQL_LOG" "$LOGDIR/slurmdbd.log" \
             "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log"; do
        [[ -s $f ]] || continue
        printf '\n----- tail -n 25 %s -----\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

die() {
    log "ERROR: $*"
    show_logs
    exit 1
}
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; log "ERROR: command failed (rc=$rc) at line $LINENO: ${BASH_COMMAND:0:200}"; show_logs; exit $rc' ERR

# pid_alive PIDFILE NAME: the pid in PIDFILE is a live process called NAME.
pid_alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == "$2" ]]
}

# daemon_running PIDFILE NAME: ours (pid file) or someone else's (same exact name).
# mariadbd counts as running while its mysqld_safe wrapper is still starting it.
daemon_running() {
    pid_alive "$1" "$2" || pgrep -x "$2" >/dev/null 2>&1 ||
        { [[ $2 == mariadbd ]] && pgrep -x mysqld_safe >/dev/null 2>&1; }
}

# stop_daemon PIDFILE NAME: stop the daemon recorded in PIDFILE (never by name).
stop_daemon() {
    local pid i
    pid_alive "$1" "$2" || return 0
    pid=$(<"$1")
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

# ensure NAME PIDFILE CHECK START...: make daemon NAME answer CHECK. Nothing is done
# when it already does. When no NAME process runs, START is run (again if it dies
# while we wait). A NAME process that neither answers nor exits within 15 s
# (e.g. hung) is stopped through PIDFILE and started again. This also covers a
# daemon that was just sent SIGTERM and is still shutting down.
ensure() {
    local name=$1 pidfile=$2 check=$3 deadline grace
    shift 3
    if daemon_running "$pidfile" "$name" && "$check" >/dev/null 2>&1; then
        log "$name already running"
        return 0
    fi
    deadline=$((SECONDS + TIMEOUT)) grace=$((SECONDS + 15))
    until "$check" >/dev/null 2>&1; do
        if ! daemon_running "$pidfile" "$name"; then
            log "starting $name"
            "$@"
            grace=$((SECONDS + TIMEOUT))
        elif ((SECONDS >= grace)); then
            log "$name runs but does not answer; restarting it"
            stop_daemon "$pidfile" "$name"
            continue
        fi
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $name to answer ($check)"
        sleep 0.5
    done
}

# launch LOG COMMAND...: run a daemon with stdin from /dev/null, stdout/stderr
# appended to LOG and every other inherited descriptor closed. munged, mysqld_safe
# and slurmdbd keep inherited descriptors: they would hold the start lock forever,
# and a caller's pipe open (a CI step waiting for EOF would hang).
launch() {
    local out=$1
    shift
    (
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            ((fd > 2)) && eval "exec $fd>&-"
        done
        exec "$@"
    ) </dev/null >>"$out" 2>&1
}

# install_if_changed DEST MODE OWNER CONTENT: write DEST only if CONTENT differs;
# returns 0 when the file changed.
install_if_changed() {
    local dest=$1 mode=$2 owner=$3 content=$4 tmp changed=1
    tmp=$(mktemp)
    printf '%s\n' "$content" >"$tmp"
    if ! cmp -s "$tmp" "$dest" 2>/dev/null; then
        install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$dest"
        log "wrote $dest"
        changed=0
    else
        chmod "$mode" "$dest"; chown "$owner" "$dest"
    fi
    rm -f "$tmp"
    return $changed
}

[[ $EUID -eq 0 ]] || { log "ERROR: must run as root (try: sudo $0)"; exit 1; }
# one start at a time (parallel CI steps would otherwise race on the daemons);
# launch() keeps this lock (fd 9) out of the daemons
exec 9>/run/lock/latentebsd-slurm-start.lock
flock -w 600 9 || die "another start-cluster.sh holds /run/lock/latentebsd-slurm-start.lock"

# ---------------------------------------------------------------- packages
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
else
    log "packages already installed: ${PACKAGES[*]}"
fi
id slurm >/dev/null 2>&1 || die "the slurm user was not created by the packages"

# ---------------------------------------------------------------- munge
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
ensure munged /run/munge/munged.pid munge_ok \
    launch /dev/null runuser -u munge -- /usr/sbin/munged --force

# ---------------------------------------------------------------- MariaDB
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o mysql -g adm -m 2750 /var/log/mysql
sql() { mysql --protocol=socket -uroot -NB "$@"; }
sql_ok() { sql -e 'SELECT 1'; }
start_mariadb() {
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising the MariaDB data directory"
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql >&2
    fi
    # mysqld_safe does not daemonise: setsid --fork detaches it (no waiting parent)
    launch /var/log/mysql/mysqld_safe.out setsid --fork /usr/bin/mysqld_safe --user=mysql \
        --skip-syslog --log-error="$MYSQL_LOG"
}
ensure mariadbd /run/mysqld/mysqld.pid sql_ok start_mariadb
# record the mysqld_safe wrapper (parent of mariadbd) for stop-cluster.sh
if pid_alive /run/mysqld/mysqld.pid mariadbd; then
    ppid=$(ps -o ppid= -p "$(</run/mysqld/mysqld.pid)" | tr -d ' ')
    [[ -r /proc/$ppid/comm && $(<"/proc/$ppid/comm") == mysqld_safe ]] && echo "$ppid" >/run/mysqld/mysqld_safe.pid
fi
if [[ ! -s $DB_PASS_FILE ]]; then
    install -d -m 0755 "$ETC"
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASS_FILE")
fi
chmod 600 "$DB_PASS_FILE"
DB_PASS=$(<"$DB_PASS_FILE")
sql <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
log "database $DB_NAME and user $DB_USER@localhost ready"

# ---------------------------------------------------------------- configs
install -d -m 0755 "$ETC"
install -d -o slurm -g slurm -m 0755 "$LOGDIR" "$RUNDIR" "$CTLD_SPOOL"
install -d -o root -g root -m 0755 "$SLURMD_SPOOL"

mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
REAL_MEM=$((mem_kb * MEM_PCT / 100 / 1024))
GRES_FILE=/dev/null

DBD_CONF="# Generated by tests/slurm/start-cluster.sh - edits are overwritten.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
DebugLevel=info
LogFile=$LOGDIR/slurmdbd.log
PidFile=$RUNDIR/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME"

SLURM_CONF="# Generated by tests/slurm/start-cluster.sh - edits are overwritten.
ClusterName=$CLUSTER
SlurmctldHost=localhost
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_SPOOL
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUNDIR/slurmctld.pid
SlurmdPidFile=$RUNDIR/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in this container: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
# no mail(1) here; slurmctld logs an error about an invalid MailProg otherwise
MailProg=/bin/true
# a node that was DOWN comes back by itself as soon as its slurmd registers
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
# CPUs and memory are consumable: two 1-CPU jobs share the node, --mem is counted
SelectTypeParameters=CR_CPU_Memory
# without a default a job without --mem would take all of RealMemory (and the node)
DefMemPerCPU=1024
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
JobCompType=jobcomp/none
# short timeouts for tests; finished jobs stay visible in squeue/scontrol for 5 min
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
BatchStartTimeout=20
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$REAL_MEM Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP"

GRES_CONF="# Generated by tests/slurm/start-cluster.sh - edits are overwritten.
# The node has no GPU: a dummy device file makes --gpus=1 schedulable and sets
# CUDA_VISIBLE_DEVICES=0 in the job.
NodeName=localhost Name=gpu File=$GRES_FILE"

dbd_changed=0 slurm_changed=0
install_if_changed "$ETC/slurmdbd.conf" 600 slurm:slurm "$DBD_CONF" && dbd_changed=1
install_if_changed "$ETC/slurm.conf" 644 root:root "$SLURM_CONF" && slurm_changed=1
install_if_changed "$ETC/gres.conf" 644 root:root "$GRES_CONF" && slurm_changed=1
if ((slurm_changed)); then
    stop_daemon "$RUNDIR/slurmd.pid" slurmd
    stop_daemon "$RUNDIR/slurmctld.pid" slurmctld
fi
((dbd_changed)) && stop_daemon "$RUNDIR/slurmdbd.pid" slurmdbd

# ---------------------------------------------------------------- slurmdbd
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
ensure slurmdbd "$RUNDIR/slurmdbd.pid" dbd_ok launch /dev/null /usr/sbin/slurmdbd

# ---------------------------------------------------------------- associations
has() { grep -qx -- "$1" <<<"$2"; }
if ! has "$CLUSTER" "$(sacctmgr -n -P show cluster format=cluster)"; then
    log "sacctmgr: adding cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >&2
fi
if ! has "$ACCOUNT" "$(sacctmgr -n -P show account "$ACCOUNT" format=account)"; then
    log "sacctmgr: adding account $ACCOUNT"
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
        description="latentebsd tests" organization=latentebsd >&2
fi
users=(root)
[[ -n ${SUDO_USER:-} && $SUDO_USER != root ]] && users+=("$SUDO_USER")
for u in "${users[@]}"; do
    if ! has "$u" "$(sacctmgr -n -P show assoc where cluster="$CLUSTER" \
            account="$ACCOUNT" user="$u" format=user)"; then
        log "sacctmgr: adding user $u to account $ACCOUNT"
        sacctmgr -i add user "$u" account="$ACCOUNT" cluster="$CLUSTER" \
            defaultaccount="$ACCOUNT" >&2
    fi
done

# ---------------------------------------------------------------- slurmctld / slurmd
ctld_ok() { [[ $(scontrol ping 2>/dev/null) == *"is UP"* ]]; }
ensure slurmctld "$RUNDIR/slurmctld.pid" ctld_ok launch /dev/null /usr/sbin/slurmctld
# "scontrol show slurmd" asks the local slurmd itself
slurmd_ok() { [[ $(scontrol show slurmd 2>/dev/null) == *"Slurmd PID"* ]]; }
ensure slurmd "$RUNDIR/slurmd.pid" slurmd_ok launch /dev/null /usr/sbin/slurmd -N localhost

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n 1 || true; }
deadline=$((SECONDS + TIMEOUT)) last=
while :; do
    state=$(node_state)
    [[ $state != "$last" ]] && log "node localhost: ${state:-?}"
    last=$state
    case $state in
        idle|mixed|allocated|completing) break ;;
        *drain*|down|fail*)  # slurmd answers (no '*') but the node is set aside
            log "resuming node localhost ($(sinfo -h -n localhost -o %E))"
            scontrol update nodename=localhost state=resume >&2 || true ;;
    esac
    ((SECONDS < deadline)) || die "node localhost is '${state}' after ${TIMEOUT}s, not idle: $(sinfo -h -n localhost -o %E)"
    sleep 1
done
log "cluster up: $(sinfo -h -o '%P %a %D %T %c %m %G' | tr '\n' ';')"

# ---------------------------------------------------------------- smoke test
if ((SMOKE)); then
    dir=$(mktemp -d /tmp/latentebsd-slurm-smoke.XXXXXX)
    chmod 755 "$dir"
    # shellcheck disable=SC2016  # $CUDA_VISIBLE_DEVICES is expanded inside the job
    gpu_id=$(sbatch --parsable -D "$dir" -o "$dir/%j.out" -J smoke-gpu -t 2 \
        -p gpu --gpus=1 --wrap 'echo $CUDA_VISIBLE_DEVICES')
    cpu_id=$(sbatch --parsable -D "$dir" -o "$dir/%j.out" -J smoke-cpu -t 2 \
        -p cpu --wrap hostname)
    gpu_id=${gpu_id%%;*} cpu_id=${cpu_id%%;*}
    log "smoke test: submitted gpu job $gpu_id and cpu job $cpu_id"
    # slurmctld sends job records to slurmdbd asynchronously: right after a (cold)
    # start the job row may be COMPLETED while Partition or the .batch step are
    # still missing, so poll until every check passes (or time out).
    row() { awk -F'|' -v id="$1" '$1 == id' <<<"$table"; }
    smoke_check() {
        table=$(sacct -j "$gpu_id,$cpu_id" -n -P -o JobID,Partition,AllocTRES,State 2>/dev/null) || return 1
        gpu_row=$(row "$gpu_id") cpu_row=$(row "$cpu_id")
        [[ $gpu_row == "$gpu_id|gpu|"*"|COMPLETED" && $gpu_row == *gres/gpu=1* ]] || return 1
        [[ $cpu_row == "$cpu_id|cpu|"*"|COMPLETED" && $cpu_row != *gres/gpu* ]] || return 1
        has "$gpu_id.batch" "$(cut -d'|' -f1 <<<"$table")" && has "$cpu_id.batch" "$(cut -d'|' -f1 <<<"$table")"
    }
    terminal='^(COMPLETED|FAILED|CANCELLED.*|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|PREEMPTED)$'
    deadline=$((SECONDS + TIMEOUT)) table=
    until smoke_check; do
        # give up early if a job ended badly; otherwise wait up to TIMEOUT
        for r in "$(row "$gpu_id")" "$(row "$cpu_id")"; do
            st=${r##*|}
            if [[ $st =~ $terminal && $st != COMPLETED ]]; then
                printf '%s\n' "$table" >&2
                die "smoke job ended $st: $r (output in $dir)"
            fi
        done
        if ((SECONDS >= deadline)); then
            squeue >&2 || true
            printf 'JobID|Partition|AllocTRES|State\n%s\n' "$table" >&2
            die "smoke test did not pass within ${TIMEOUT}s: need gpu job $gpu_id COMPLETED in partition gpu with gres/gpu=1 and cpu job $cpu_id COMPLETED in partition cpu without gres/gpu (output in $dir)"
        fi
        sleep 0.5
    done
    printf 'JobID|Partition|AllocTRES|State\n%s\n' "$table" >&2
    gpu_out=$(<"$dir/$gpu_id.out") cpu_out=$(<"$dir/$cpu_id.out")
    [[ $gpu_out == 0 ]] || die "gpu smoke job saw CUDA_VISIBLE_DEVICES='$gpu_out', expected 0"
    [[ -n $cpu_out ]] || die "cpu smoke job printed nothing"
    log "smoke test passed (gpu job: CUDA_VISIBLE_DEVICES=$gpu_out, cpu job ran on $cpu_out)"
    rm -rf "$dir"
fi

log "done in $((SECONDS - T0))s"
echo "export LATENTEBSD_REAL_SLURM=1"
