"""Run by test_multinode.py in its own process: start a 2-node local Ray cluster (1 CPU per node),
or with "single" an embedded Ray of 1 CPU, convert SRC into OUT through it, print the report as JSON."""

import json
import sys
import tempfile

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
    report = convert(source, output, shape=(16, 16), images_per_file=2, progress=False)
    print(json.dumps({"nodes": report.nodes, "num_samples": report.num_samples,
                      "cluster_nodes": len(ray.nodes())}))
finally:
    ray.shutdown()
    cluster.shutdown()
