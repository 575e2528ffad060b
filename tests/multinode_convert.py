"""Run by test_multinode.py in its own process: start a 2-node local Ray cluster (1 CPU per node),
or with "single" an embedded Ray of 1 CPU, convert SRC into OUT through it, print the report as JSON.
With "remove-node", the worker node is killed once a few shards are written, and the same conversion
is run again on what is left of the cluster."""

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from raydsconv import convert

source, output = sys.argv[1], sys.argv[2]
temp_dir = tempfile.mkdtemp(prefix="rdc-mn-")
if sys.argv[3:] == ["single"]:
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=temp_dir, logging_level="WARNING")
    report = convert(source, output, shape=(16, 16), images_per_file=2, progress=False)
    print(json.dumps({"nodes": report.nodes, "num_samples": report.num_samples, "cpus": ray.cluster_resources()["CPU"]}))
    ray.shutdown()
    sys.exit(0)
node_args = {"num_cpus": 1, "object_store_memory": 200 << 20}
cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False, "temp_dir": temp_dir})
cluster.add_node(**node_args)
cluster.wait_for_nodes()
ray.init(address=cluster.address, logging_level="WARNING")
try:
    if sys.argv[3:] == ["remove-node"]:
        worker = next(iter(cluster.worker_nodes))
        records = Path(output) / ".raydsconv" / "shards"

        def remove_worker_node() -> None:
            while len(list(records.glob("[0-9]*.json"))) < 3:
                time.sleep(0.005)
            cluster.remove_node(worker, allow_graceful=False)

        remover = threading.Thread(target=remove_worker_node, daemon=True)
        remover.start()
        first = "completed"
        try:
            convert(source, output, shape=(32, 32), images_per_file=2, progress=False)
        except Exception as error:  # the run may fail with the node, or Ray may retry its tasks elsewhere
            first = f"failed: {type(error).__name__}"
        remover.join(timeout=120)
        deadline = time.monotonic() + 90  # the GCS marks a killed node dead only after its health checks fail
        while sum(node["Alive"] for node in ray.nodes()) > 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        report = convert(source, output, shape=(32, 32), images_per_file=2, progress=False)
        print(json.dumps({"first_run": first, "node_removed": not remover.is_alive(),
                          "already_complete": report.already_complete, "resumed_shards": report.resumed_shards,
                          "alive_nodes": sum(node["Alive"] for node in ray.nodes())}))
        sys.exit(0)
    report = convert(source, output, shape=(16, 16), images_per_file=2, progress=False)
    print(json.dumps({"nodes": report.nodes, "num_samples": report.num_samples,
                      "cluster_nodes": len(ray.nodes())}))
finally:
    ray.shutdown()
    cluster.shutdown()
