#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by tests/slurm/start-cluster.sh.
#
#   sudo tests/slurm/stop-cluster.sh          # stop slurmd, slurmctld, slurmdbd, MariaDB, munged
#   sudo tests/slurm/stop-cluster.sh --purge  # ... and delete the SLURM state, the accounting
#                                             # database and the generated configs (next start is cold)
#
# Daemons are stopped through their pid files (never by process name). Packages stay installed.
set -euo pipefail

PURGE=0
for arg in "$@"; do
    case $arg in
        --purge) PURGE=1 ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "stop-cluster.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "stop-cluster.sh: must run as root" >&2; exit 1; }

log() { echo "[stop-cluster] $*" >&2; }

# stop PIDFILE NAME: SIGTERM the process in PIDFILE if it is NAME, wait, then SIGKILL.
stop() {
    local pid i
    [[ -s $1 ]] || { log "$2: no pid file"; return 0; }
    pid=$(<"$1")
    if ! [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$2" ]]; then
        log "$2: not running"; return 0
    fi
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        [[ -d /proc/$pid ]] || return 0
        sleep 0.5
    done
    log "$2 (pid $pid) ignored SIGTERM for 30s, sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
}

stop /run/slurm/slurmd.pid slurmd
stop /run/slurm/slurmctld.pid slurmctld
if ((PURGE)) && command -v mysql >/dev/null && mysql -uroot -NBe 'SELECT 1' >/dev/null 2>&1; then
    log "dropping database slurm_acct_db and user slurm@localhost"
    mysql -uroot -NB -e "DROP DATABASE IF EXISTS slurm_acct_db; DROP USER IF EXISTS 'slurm'@'localhost';"
fi
stop /run/slurm/slurmdbd.pid slurmdbd
# a clean SIGTERM shutdown of mariadbd also ends its mysqld_safe wrapper
stop /run/mysqld/mysqld.pid mariadbd
stop /run/mysqld/mysqld_safe.pid mysqld_safe
stop /run/munge/munged.pid munged

if ((PURGE)); then
    log "removing SLURM state, logs and generated configs"
    rm -rf /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
    rm -f /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf /etc/slurm/slurmdbd.pass
fi
log "stopped"
