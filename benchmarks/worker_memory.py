"""Worker memory vs shard size: a Ray worker's peak memory must follow ``batch_size``, not ``images_per_file``.

Run by hand, alone on the machine:

    .venv/bin/python benchmarks/worker_memory.py [--images 5000] [--workdir /tmp/rdc-bench] \
        [--formats memmap,hdf5,parquet,ipc,tar] [--sizes 100,1000,5000] [--batch-size 32]

It generates (once, cached in --workdir) an ImageNet-like folder of photo-like JPEGs (quality 90,
~110 KB, 500x375 ... 1024x768), then for each format and each images_per_file runs one conversion
(fixed-size formats at 224x224 RGB) in a fresh process with its own embedded Ray, and reports the
peak resident memory (VmHWM, read from /proc before Ray shuts down) of that Ray's worker processes:
the largest, and its ratio to the smallest shard size. Flat (within ±15 %) means a worker holds a
batch, not a shard. The idle column is a worker prestarted by Ray before any import of ours.

ipc assembles whole record batches of 256 rows (its ``batch_rows``), so a shard smaller than that
(100) holds fewer rows in memory than any larger one: its target is checked against the first size
of at least 256 rows; the others' against the first size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import benchmark_parser, fresh, imagenet_like_folder

TOLERANCE = 0.15
BUFFERED_ROWS = {"ipc": 256}  # rows a format holds whatever batch_size is (its default batch_rows)


def descendants(root: int) -> list[int]:
    """Every live process below ``root``: embedded Ray's raylet is a child of the driver, its workers
    children of the raylet."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def worker_peaks(driver: int) -> dict[int, int]:
    """Peak RSS in bytes of each Ray worker below ``driver`` (workers retitle themselves ``ray::...``)."""
    peaks = {}
    for pid in descendants(driver):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if title.startswith(b"ray::"):
            peaks[pid] = int(status.split("VmHWM:")[1].split()[0]) * 1024
    return peaks


def child(config: dict) -> None:
    """One measurement, in its own process: a conversion on a fresh embedded Ray, then the workers' peaks."""
    import ray

    import raydsconv

    ray.init(num_cpus=config["workers"], include_dashboard=False, logging_level="WARNING",
             _temp_dir=tempfile.mkdtemp(prefix="rdc-wm-"))
    idle = max(worker_peaks(os.getpid()).values(), default=0)  # prestarted workers: imports only
    fixed = config["format"] in ("memmap", "hdf5")
    report = raydsconv.convert(config["source"], fresh(Path(config["output"])), format=config["format"],
                               shape=(224, 224) if fixed else None, images_per_file=config["images_per_file"],
                               batch_size=config["batch_size"], progress=False)
    peaks = worker_peaks(os.getpid())
    print(json.dumps({"idle": idle, "peak": max(peaks.values()), "workers": len(peaks),
                      "images_per_second": report.images_per_second}))
    ray.shutdown()


def measure(config: dict) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], capture_output=True, text=True,
                          env=env, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"{config['format']} x {config['images_per_file']} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]))
        return 0
    parser = benchmark_parser(__doc__, images=5000)
    parser.add_argument("--formats", default="memmap,hdf5,parquet,ipc,tar")
    parser.add_argument("--sizes", default="100,1000,5000", help="images_per_file values; the first is the reference")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    source = imagenet_like_folder(args.workdir, args.images)
    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"{args.images} JPEGs, batch_size {args.batch_size}, {args.workers} workers; "
          "peak RSS of the largest Ray worker (MB)", flush=True)
    print(f"{'format':<10}{'images_per_file':>16}{'idle MB':>10}{'peak MB':>10}{'vs first':>10}{'images/s':>10}")
    worst = 0.0
    for fmt in args.formats.split(","):
        first = reference = None
        for size in sizes:
            config = {"source": str(source), "output": str(args.workdir / "worker-memory-out"), "format": fmt,
                      "images_per_file": size, "batch_size": args.batch_size, "workers": args.workers}
            result = measure(config)
            first = first or result["peak"]
            ratio = result["peak"] / first
            if size >= BUFFERED_ROWS.get(fmt, 0):
                reference = reference or result["peak"]
                worst = max(worst, abs(result["peak"] / reference - 1))
            print(f"{fmt:<10}{size:>16}{result['idle'] / 1e6:>10.0f}{result['peak'] / 1e6:>10.0f}{ratio:>10.2f}"
                  f"{result['images_per_second']:>10.0f}", flush=True)
    print(f"\ntarget: every peak within ±{TOLERANCE:.0%} of its format's first (ipc: first of >= 256 rows) -> "
          f"{'met' if worst <= TOLERANCE else 'NOT met'} (worst {worst:+.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
