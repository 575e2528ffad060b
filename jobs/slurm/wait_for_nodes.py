"""Wait until a Ray cluster has N alive nodes: wait_for_nodes.py ADDRESS N TIMEOUT_SECONDS."""

import sys
import time

import ray

address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.monotonic() + timeout
ray.init(address=address, logging_level="WARNING", log_to_driver=False)
while (alive := sum(node["Alive"] for node in ray.nodes())) < count:
    if time.monotonic() > deadline:
        sys.exit(f"raydsconv-slurm: only {alive} of {count} Ray nodes joined within {timeout:.0f} s")
    time.sleep(0.2)
print(f"raydsconv-slurm: {alive} Ray nodes, {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
