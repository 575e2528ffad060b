#!/usr/bin/env bash
# One Ray node inside a SLURM job step (started by cluster.sh, one `srun` per node):
#   ray_node.sh head  LOCAL_INDEX
#   ray_node.sh worker LOCAL_INDEX HEAD_ADDRESS
# LOCAL_INDEX counts this job's nodes on the same host (0 on a real cluster; 0, 1, ... where several
# simulated nodes share a host): it keeps their ports apart. Sized from the job's allocation on this
# node, not the whole machine. `ray start --block` keeps every Ray process a child of this step; on
# SIGTERM (cluster.sh's teardown, scancel, the time limit) Ray is stopped and its logs copied to
# $RDC_LOGS/<node>/.
set -euo pipefail

role=$1 index=$2 head=${3:-}
node=${SLURMD_NODENAME:-$(hostname -s)}

cpus=${SLURM_CPUS_ON_NODE:-${SLURM_CPUS_PER_TASK:-$(nproc)}}
if [[ -n "${SLURM_MEM_PER_NODE:-}" ]]; then
    mem_mb=$SLURM_MEM_PER_NODE
elif [[ -n "${SLURM_MEM_PER_CPU:-}" ]]; then
    mem_mb=$((SLURM_MEM_PER_CPU * cpus))
else  # no --mem: the job holds the node's configured memory
    mem_mb=$(scontrol show node -o "$node" | grep -o 'RealMemory=[0-9]*' | cut -d= -f2)
fi
store_mb=$((mem_mb * 30 / 100))
((store_mb <= RDC_OBJECT_STORE_MAX_MB)) || store_mb=$RDC_OBJECT_STORE_MAX_MB

# Ports: a block of 10 per node, from the job's base (cluster.sh). Worker ports are left to the OS.
p=$((RDC_PORT_BASE + 10 * index))
args=(--block --disable-usage-stats --num-cpus="$cpus"
      --memory=$(((mem_mb - store_mb) << 20)) --object-store-memory=$((store_mb << 20))
      --node-manager-port=$((p + 1)) --object-manager-port=$((p + 2)) --metrics-export-port=$((p + 3))
      --dashboard-agent-listen-port=$((p + 4)) --dashboard-agent-grpc-port=$((p + 5))
      --runtime-env-agent-port=$((p + 6)) --min-worker-port=0 --max-worker-port=0)
# Short and node-local: Ray's socket paths must stay under ~107 characters.
temp="${RDC_RAY_TMP}/rdc-${SLURM_JOB_ID}-${index}"
args+=(--temp-dir="$temp")
if [[ $role == head ]]; then
    args+=(--head --port="$p" --ray-client-server-port=$((p + 7)) --dashboard-port=$((p + 8))
           --include-dashboard="$RDC_DASHBOARD" --dashboard-host="${RAYDSCONV_DASHBOARD_HOST:-127.0.0.1}")
    [[ -z "${RAYDSCONV_HEAD_IP:-}" ]] || args+=(--node-ip-address="$RAYDSCONV_HEAD_IP")
else
    args+=(--address="$head")
fi

# The whole cluster goes down together: no point draining (Ray's default waits up to 30 s for a GCS
# that is stopping too).
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-0}

save_logs() {
    mkdir -p "$RDC_LOGS/$node"
    cp -r "$temp"/session_latest/logs/. "$RDC_LOGS/$node/" 2>/dev/null || true
    rm -rf "$temp"
}
stop() {
    kill -TERM "$ray" 2>/dev/null || true  # ray start --block stops every process it started
    wait "$ray" || true
    save_logs
    exit 0
}

echo "raydsconv-slurm: $role on $node: $cpus CPUs, ${mem_mb} MB (object store ${store_mb} MB), ports $p-$((p + 9)), temp dir $temp"
"$RDC_PYTHON" -m ray.scripts.scripts start "${args[@]}" >"$RDC_LOGS/ray-start-$node.log" 2>&1 &
ray=$!
trap stop TERM INT
rc=0
wait "$ray" || rc=$?
echo "raydsconv-slurm: Ray on $node exited by itself with code $rc (see $RDC_LOGS/ray-start-$node.log)" >&2
save_logs
exit "$rc"
