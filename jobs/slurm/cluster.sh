# shellcheck shell=bash
# Sourced by the batch scripts in this folder: start a Ray cluster over the SLURM allocation (head on
# the first node, where the batch script runs; one worker per other node), wait until every node has
# joined, and tear it down again. Settings (environment, all optional):
#   RAYDSCONV_PYTHON        the Python with raydsconv and ray[default] (default: the one next to
#                           `raydsconv` on PATH, else python3)
#   RAYDSCONV_SLURM_LOGS    where Ray's logs are kept (default: $SLURM_SUBMIT_DIR/raydsconv-$SLURM_JOB_ID;
#                           a requeued job's later runs in run-2, run-3, ... inside it)
#   RAYDSCONV_RAY_TMP       node-local parent of Ray's temp dirs (default: /tmp)
#   RAYDSCONV_RAY_PORT_BASE first of the ports this job's Ray uses (default: from the job id, 20000-29999)
#   RAYDSCONV_OBJECT_STORE_MAX_MB  object store cap per node (default 16384; else 30% of the allocation)
#   RAYDSCONV_START_TIMEOUT seconds to wait for all nodes (default 120)
#   RAYDSCONV_HEAD_IP       the head's address, where Ray picks the wrong interface
#   RAY_AUTH_MODE           default disabled; with "token" and no RAY_AUTH_TOKEN(_PATH) a job token is made

rdc_say() { echo "raydsconv-slurm: $*"; }
rdc_now() { date +%s.%N; }
rdc_since() { awk -v a="$1" -v b="$(rdc_now)" 'BEGIN {printf "%.1f", b - a}'; }

rdc_setup() {
    : "${SLURM_JOB_ID:?run this inside a SLURM job (sbatch)}"
    RDC_PYTHON=${RAYDSCONV_PYTHON:-}
    if [[ -z $RDC_PYTHON ]]; then
        local cli; cli=$(command -v raydsconv || true)
        if [[ -n $cli && -x $(dirname "$cli")/python ]]; then RDC_PYTHON=$(dirname "$cli")/python; else RDC_PYTHON=python3; fi
    fi
    RDC_LOGS=${RAYDSCONV_SLURM_LOGS:-${SLURM_SUBMIT_DIR:-$PWD}/raydsconv-$SLURM_JOB_ID}
    # A requeued job runs again under the same id: the logs of each later run in a folder of their own.
    ((${SLURM_RESTART_COUNT:-0} == 0)) || RDC_LOGS+=/run-$((SLURM_RESTART_COUNT + 1))
    RDC_RAY_TMP=${RAYDSCONV_RAY_TMP:-/tmp}
    RDC_PORT_BASE=${RAYDSCONV_RAY_PORT_BASE:-$((20000 + SLURM_JOB_ID % 250 * 40))}
    RDC_OBJECT_STORE_MAX_MB=${RAYDSCONV_OBJECT_STORE_MAX_MB:-16384}
    RDC_DASHBOARD=${RDC_DASHBOARD:-false}
    # Explicit: Ray 2.60 silently switches to token auth when ~/.ray/auth_token exists.
    export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
    if [[ $RAY_AUTH_MODE == token && -z "${RAY_AUTH_TOKEN:-}${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        export RAY_AUTH_TOKEN_PATH=$RDC_LOGS/auth_token
        (umask 077 && mkdir -p "$RDC_LOGS" && "$RDC_PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$RAY_AUTH_TOKEN_PATH")
    fi
    unset RAY_ADDRESS  # the job's own cluster is given by address, never one inherited from the submitter
    export RDC_PYTHON RDC_LOGS RDC_RAY_TMP RDC_PORT_BASE RDC_OBJECT_STORE_MAX_MB RDC_DASHBOARD
    mkdir -p "$RDC_LOGS"
}

# Starts the cluster; sets RDC_ADDRESS (head GCS address, also written to $RDC_LOGS/ray_address).
rdc_start_cluster() {
    local started here nodes=() index=() name host n step
    started=$(rdc_now)
    here=$(dirname "${BASH_SOURCE[0]}")
    rdc_setup
    RDC_STEPS=()
    trap rdc_stop_cluster EXIT
    # Node names in allocation order and, per node, how many of the job's nodes share its host before it.
    mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    declare -A seen=() host_of=()
    while read -r name host; do host_of[$name]=$host; done < <(scontrol show node -o "$SLURM_JOB_NODELIST" |
        sed -E 's/^NodeName=([^ ]+).* NodeHostName=([^ ]+).*/\1 \2/')
    for name in "${nodes[@]}"; do
        host=${host_of[$name]:-$name}
        index+=("${seen[$host]:-0}"); seen[$host]=$((${seen[$host]:-0} + 1))
    done
    rdc_say "job $SLURM_JOB_ID: ${#nodes[@]} nodes (${nodes[*]}), python $RDC_PYTHON, logs in $RDC_LOGS"

    srun --overlap --export=ALL -N1 -n1 -w "${nodes[0]}" bash "$here/ray_node.sh" head "${index[0]}" &
    RDC_STEPS+=($!)
    # The head runs on this (the batch) host; it writes its address into its temp dir once it is up.
    local address_file="$RDC_RAY_TMP/rdc-$SLURM_JOB_ID-${index[0]}/ray_current_cluster"
    rm -f "$address_file"  # left by an earlier run of this job (requeued) that was killed
    local timeout=${RAYDSCONV_START_TIMEOUT:-120}
    local deadline=$((SECONDS + timeout))
    until [[ -s $address_file ]]; do
        kill -0 "${RDC_STEPS[0]}" 2>/dev/null || { rdc_say "the Ray head failed: see $RDC_LOGS"; return 1; }
        ((SECONDS < deadline)) || { rdc_say "the Ray head did not start within $timeout s: see $RDC_LOGS"; return 1; }
        sleep 0.1
    done
    RDC_ADDRESS=$(cat "$address_file")
    echo "$RDC_ADDRESS" >"$RDC_LOGS/ray_address"
    for ((n = 1; n < ${#nodes[@]}; n++)); do
        srun --overlap --export=ALL -N1 -n1 -w "${nodes[n]}" bash "$here/ray_node.sh" worker "${index[n]}" "$RDC_ADDRESS" &
        RDC_STEPS+=($!)
    done
    # Global, so that a teardown meanwhile (a signal trapped by the batch script) stops it too.
    "$RDC_PYTHON" "$here/wait_for_nodes.py" "$RDC_ADDRESS" "${#nodes[@]}" $((deadline - SECONDS)) &
    RDC_WAITER=$!
    while kill -0 "$RDC_WAITER" 2>/dev/null; do  # give up early when a node's step has ended
        for step in "${RDC_STEPS[@]}"; do
            kill -0 "$step" 2>/dev/null || { kill "$RDC_WAITER"; rdc_say "a Ray node failed: see $RDC_LOGS"; return 1; }
        done
        sleep 0.2
    done
    wait "$RDC_WAITER" || return 1
    RDC_WAITER=
    rdc_say "cluster ready in $(rdc_since "$started") s at $RDC_ADDRESS"
}

# Stops what rdc_start_cluster started: SIGTERM to this job's steps (never the batch script itself, and
# never `ray stop`, which would end every Ray process of the user on the host), then their srun.
rdc_stop_cluster() {
    local rc=$? started pid
    trap - EXIT
    if [[ -n ${RDC_WAITER:-} ]]; then  # still waiting for the nodes
        kill "$RDC_WAITER" 2>/dev/null || true
        wait "$RDC_WAITER" 2>/dev/null || true
        RDC_WAITER=
    fi
    ((${#RDC_STEPS[@]})) || return "$rc"
    started=$(rdc_now)
    scancel --signal=TERM "$SLURM_JOB_ID" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    for pid in "${RDC_STEPS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill "$pid" 2>/dev/null || true  # still there: srun then kills its step
    done
    wait "${RDC_STEPS[@]}" 2>/dev/null || true
    RDC_STEPS=()
    rdc_say "teardown $(rdc_since "$started") s; Ray logs in $RDC_LOGS"
    return "$rc"
}
