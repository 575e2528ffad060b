#!/usr/bin/env bash
# A real SLURM on this host for CI and development: munged, slurmctld and N slurmd daemons, each slurmd
# a simulated node (c0, c1, ...) with a share of this host's CPUs and memory. Needs root (apt, slurmd).
#
#   eval "$(sudo bash scripts/local_slurm.sh start)"   # prints: export SLURM_CONF=...
#   sbatch --wait --nodes=2 jobs/slurm/convert.sbatch SRC DST --shape 64 64
#   sudo bash scripts/local_slurm.sh stop              # stops only the daemons this script started
#
# Settings (environment): RAYDSCONV_SLURM_DIR (state, logs, slurm.conf; default /tmp/raydsconv-slurm),
# RAYDSCONV_SLURM_NODES (default 2), RAYDSCONV_SLURM_PORT (slurmctld; slurmd i uses PORT+1+i; default 6817).
# Running `start` again is cheap: daemons already running with the same config are kept.
set -euo pipefail

DIR="${RAYDSCONV_SLURM_DIR:-/tmp/raydsconv-slurm}"
NODES="${RAYDSCONV_SLURM_NODES:-2}"
PORT="${RAYDSCONV_SLURM_PORT:-6817}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

say() { echo "local_slurm: $*" >&2; }

alive() {  # alive PIDFILE NAME: the PID in the file runs a process called NAME
    [[ -s "$1" ]] && [[ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" == "$2" ]]
}

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && apt-get install -y -qq slurm-wlm munge >/dev/null; }
}

start_munge() {
    munge -n </dev/null >/dev/null 2>&1 && return  # a munged already answers (ours or the system's)
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
    runuser -u munge -- munged
    cp /run/munge/munged.pid "$DIR/munged.pid"  # marks it as ours, for stop
}

write_conf() {  # to stdout
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(( $(nproc) / NODES )); (( cpus >= 1 )) || cpus=1
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 / NODES ))  # MB, 10% left to the host
    cat <<EOF
# Written by scripts/local_slurm.sh: $NODES simulated nodes on $host.
ClusterName=raydsconv
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=$(id -un)
AuthType=auth/munge
# No cgroups here: processes are tracked by parentage, so job steps must keep theirs as children.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Simulated nodes share one host; without this slurmd reports the host's real size and gets drained.
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
# Short, so that sbatch --wait notices a finished job quickly (else it polls at 2, 8, 32 s).
MinJobAge=5
KillWait=10
# A job without --mem gets the node's whole memory; its steps then need srun --overlap.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
EOF
    for ((i = 0; i < NODES; i++)); do
        echo "NodeName=c$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + 1 + i)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
}

all_alive() {
    alive "$DIR/slurmctld.pid" slurmctld || return 1
    for ((i = 0; i < NODES; i++)); do alive "$DIR/slurmd-c$i.pid" slurmd || return 1; done
}

wait_idle() {
    local deadline=$((SECONDS + 30))
    until [[ "$(sinfo -h -o '%T %D' 2>/dev/null)" == "idle $NODES" ]]; do
        if ((SECONDS > deadline)); then
            say "nodes not idle after 30 s: $(sinfo -h 2>&1 || true); logs in $DIR/log"
            return 1
        fi
        sleep 0.2
    done
}

stop() {
    local pidfile pids=()
    for pidfile in "$DIR"/slurmd-*.pid "$DIR/slurmctld.pid" "$DIR/munged.pid"; do
        [[ -s "$pidfile" ]] || continue
        local name; name=$(basename "$pidfile" .pid); name=${name%%-*}
        if alive "$pidfile" "$name"; then pids+=("$(cat "$pidfile")"); kill "$(cat "$pidfile")"; fi
        rm -f "$pidfile"
    done
    for pid in "${pids[@]}"; do  # wait, so that a following start finds the ports free
        for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    done
    say "stopped ${#pids[@]} daemons"
}

start() {
    install_packages
    mkdir -p "$DIR"/{state,spool,log}
    if [[ -f "$CONF" ]] && all_alive && diff -q <(write_conf) "$CONF" >/dev/null; then
        say "already running ($CONF)"
    else
        stop 2>/dev/null
        write_conf >"$CONF"
        start_munge
        slurmctld -c -f "$CONF"  # -c: a clean state; the node list may have changed
        for ((i = 0; i < NODES; i++)); do slurmd -f "$CONF" -N "c$i"; done
    fi
    wait_idle
    say "$NODES nodes idle; logs in $DIR/log"
    echo "export SLURM_CONF=$CONF"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    conf) write_conf ;;
    *) echo "usage: $0 [start|stop|conf]" >&2; exit 2 ;;
esac
