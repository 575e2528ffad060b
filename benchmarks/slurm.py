"""The same conversion through jobs/slurm/convert.sbatch (a Ray cluster over a SLURM allocation) and
embedded (`raydsconv convert` on this machine's Ray), images/s and the SLURM job's fixed overhead.

Run by hand, alone on the machine, with a local SLURM up (`scripts/local_slurm.sh start`: 2 simulated
nodes sharing this host's cores, so SLURM and embedded get the same CPUs in all):

    .venv/bin/python benchmarks/slurm.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

Both sides start cold (a fresh process, fresh Ray workers), as a user's job does, and convert the
generated ImageNet-like folder to memmap 224x224; medians of --repeats interleaved runs:
  * images/s: from the CLI's report (conversion only, Ray start-up excluded) on both sides;
  * cluster start / teardown / job script: the batch script's own timings;
  * total: wall time of `raydsconv convert` embedded vs `sbatch --wait` (which polls every 2 s).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import benchmark_parser, fresh, imagenet_like_folder

ROOT = Path(__file__).resolve().parent.parent
REPORT = re.compile(r"([\d.]+) s \((\d+) images/s; Ray start-up ([\d.]+) s more\)")


def run(command: list[str], env: dict) -> tuple[float, str]:
    """Wall seconds and output of a command that must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images-per-file", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=2)
    args = parser.parse_args()
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
           "RAYDSCONV_PYTHON": sys.executable}
    env.pop("RAY_ADDRESS", None)
    local_conf = Path(os.environ.get("RAYDSCONV_SLURM_DIR", "/tmp/raydsconv-slurm")) / "slurm.conf"
    if "SLURM_CONF" not in env and local_conf.is_file():
        env["SLURM_CONF"] = str(local_conf)
    workdir = args.workdir
    source = imagenet_like_folder(workdir, args.images)
    options = ["--shape", "224", "224", "--images-per-file", str(args.images_per_file), "--no-progress"]
    nodes = subprocess.run(["sinfo", "-h", "-o", "%D %c %T"], env=env, capture_output=True, text=True)
    print(f"{args.images} JPEGs -> memmap 224x224, {args.images_per_file} per shard; "
          f"SLURM nodes (count, CPUs each, state): {nodes.stdout.strip() or nodes.stderr.strip()}", flush=True)

    rows: dict[str, list[float]] = {k: [] for k in (
        "embedded images/s", "slurm images/s", "embedded Ray start s", "cluster start s", "teardown s",
        "job script s", "embedded total s", "sbatch total s")}
    for repeat in range(args.repeats):
        seconds, text = run([sys.executable, "-m", "raydsconv.cli", "convert", str(source),
                             str(fresh(workdir / "embedded-out")), *options], env)
        _, rate, ray_start = REPORT.search(text).groups()
        rows["embedded images/s"].append(float(rate))
        rows["embedded Ray start s"].append(float(ray_start))
        rows["embedded total s"].append(seconds)

        log = workdir / "slurm-job.out"
        seconds, _ = run(["sbatch", "--wait", f"--nodes={args.nodes}", f"--output={log}", f"--chdir={workdir}",
                          str(ROOT / "jobs" / "slurm" / "convert.sbatch"), str(source), str(fresh(workdir / "slurm-out")),
                          *options], {**env, "RAYDSCONV_SLURM_LOGS": str(workdir / "slurm-logs")})
        text = log.read_text()
        rows["slurm images/s"].append(float(REPORT.search(text).group(2)))
        rows["cluster start s"].append(float(re.search(r"cluster ready in ([\d.]+) s", text).group(1)))
        rows["teardown s"].append(float(re.search(r"teardown ([\d.]+) s", text).group(1)))
        rows["job script s"].append(float(re.search(r"job script took ([\d.]+) s", text).group(1)))
        rows["sbatch total s"].append(seconds)
        nodes_used = re.search(r"by (\d+) Ray nodes?", text).group(1)
        print(f"  run {repeat + 1}: embedded {rows['embedded images/s'][-1]:.0f} images/s, "
              f"SLURM {rows['slurm images/s'][-1]:.0f} images/s ({nodes_used} nodes wrote shards), "
              f"cluster start {rows['cluster start s'][-1]:.1f} s, teardown {rows['teardown s'][-1]:.1f} s, "
              f"sbatch {seconds:.1f} s", flush=True)
        shutil.rmtree(workdir / "slurm-logs", ignore_errors=True)

    print()
    for name, values in rows.items():
        print(f"{name:<24}{statistics.median(values):>10.1f}   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
