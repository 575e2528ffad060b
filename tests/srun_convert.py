"""Run by test_slurm.py under `srun -n N`, the predecessor's way to distribute: every rank runs this same
script. `srun_convert.py SRC OUT converter [OPTION=VALUE ...]`: the predecessor's MemmapConverter with
dist=True and the step's ranks; `... convert ...`: raydsconv.convert. Each rank prints one JSON line
(its rank, the job, and the report it got, or the error it raised) and exits 0, or 1 after an error."""

import json
import os
import sys
import time

import raydsconv

source, output, how = sys.argv[1:4]
options = dict(argument.split("=", 1) for argument in sys.argv[4:])
strict = options.get("strict") == "1"
rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
started = time.perf_counter()
result = {"rank": rank, "job": os.environ["SLURM_JOB_ID"], "node": os.environ.get("SLURMD_NODENAME")}
try:
    if how == "converter":
        converter = raydsconv.MemmapConverter(source, output, 2, 4, None, (16, 16), "RGB", dist=True, rank=rank,
                                              num_replicas=world, strict=strict)
        report = converter.convert()
        result["len"] = converter.len
    else:
        report = raydsconv.convert(source, output, shape=(16, 16), images_per_file=2, strict=strict)
    result.update(nodes=report.nodes, num_samples=report.num_samples, num_shards=report.num_shards,
                  summary=report.summary())
except Exception as error:
    result["error"] = f"{type(error).__name__}: {error}"
result["seconds"] = time.perf_counter() - started
print(json.dumps(result), flush=True)
sys.exit(1 if "error" in result else 0)
