#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/sweep/test_slurm_cluster.py: `start` | `stop` | `status`.
# Debian 12's slurmctld/slurmd 22.05 and munge, as root, no systemd (adapted from shared/slurm/start-cluster.sh).
# `start` installs the packages with apt when missing, writes /etc/slurm/slurm.conf (this host, one partition,
# no accounting, KillWait 5 s), starts munged, slurmctld and slurmd and records each PID it started in
# $MTA_SLURM_STATE (default /run/mta-slurm); `stop` kills exactly those PIDs. A daemon that already ran is left
# alone (not recorded, not stopped). Exit status of `start`: 0 when `srun hostname` ran, 1 otherwise (with the
# reason on stderr); the caller decides whether that is fatal (.ci/run: not; the tests then skip saying why).
set -euo pipefail
STATE=${MTA_SLURM_STATE:-/run/mta-slurm}
log() { echo "slurm-cluster: $*" >&2; }

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# The daemon's own pid file (written as it forks) copied into $STATE/<name>.pid.
record() {
  local name=$1 pidfile=$2
  for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
  [ -s "$pidfile" ] || { log "$name wrote no pid file $pidfile"; return 1; }
  cp "$pidfile" "$STATE/$name.pid"
}

start() {
  [ "$(id -u)" -eq 0 ] || { log "must run as root (apt, munge key, daemons)"; return 1; }
  local node; node=$(hostname -s)
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
      || ! command -v sbatch >/dev/null; then
    # policy-rc.d: the packages' postinst must not start daemons (there is no systemd; we start them below)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    local ok=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge; } >/dev/null 2>&1 || ok=1
    rm -f /usr/sbin/policy-rc.d
    [ "$ok" -eq 0 ] || { log "apt-get install slurmctld slurmd slurm-client munge failed"; return 1; }
  fi
  install -d -m 0755 "$STATE"

  # munge: the key (the package makes one; make one if missing), its runtime dirs, the daemon as the munge user
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged  # forks; pid in /run/munge/munged.pid
    record munged /run/munge/munged.pid
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  munge -n | unmunge >/dev/null || { log "munged does not answer"; return 1; }

  # slurm.conf: this host, one partition, no accounting, no cgroups. KillWait 5: a cancelled job's processes get
  # SIGKILL 5 s after SIGTERM (default 30), so the cancel tests end sooner.
  local ram cpus
  ram=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p'); ram=$(( ram * 85 / 100 ))
  cpus=$(nproc)
  install -d /etc/slurm /var/spool/slurmd /var/log/slurm
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=mtaci
SlurmctldHost=${node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
KillWait=5
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/mta-slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldDebug=info
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdDebug=info
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${node} CPUs=${cpus} RealMemory=${ram} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  # daemons (both fork into the background)
  if ! pid_alive /run/slurmctld.pid; then
    rm -rf /run/slurmctld.pid /var/spool/mta-slurmctld  # a fresh controller state: no jobs of an earlier run
    install -d /var/spool/mta-slurmctld
    slurmctld || { log "slurmctld did not start (see /var/log/slurm/slurmctld.log)"; return 1; }
    record slurmctld /run/slurmctld.pid
  fi
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
  if ! pid_alive /run/slurmd.pid; then
    rm -f /run/slurmd.pid
    slurmd || { log "slurmd did not start (see /var/log/slurm/slurmd.log)"; return 1; }
    record slurmd /run/slurmd.pid
  fi
  for _ in $(seq 150); do sinfo -h -N -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break; sleep 0.2; done
  timeout 60 srun -N1 -t 1 hostname >/dev/null || { log "srun hostname failed: the node does not run jobs"; return 1; }
  sinfo >&2
  log "up: $(for f in "$STATE"/*.pid; do [ -s "$f" ] && printf '%s %s  ' "$(basename "$f" .pid)" "$(cat "$f")"; done)"
}

# Stop the daemons start recorded, by PID (slurmd first, munged last), waiting for each to exit.
stop() {
  local name f pid
  for name in slurmd slurmctld munged; do
    f=$STATE/$name.pid
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
      log "stopped $name ($pid)"
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) scontrol ping && sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
