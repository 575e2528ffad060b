"""Hash checking speed of `raydsconv verify` next to `sha256sum` on the same files, in one run.

Run by hand, alone on the machine:

    .venv/bin/python benchmarks/verify.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

Converts (once, cached in --workdir) the generated ImageNet-like folder to memmap 224² (about 450 MB
for 3000 images, 100 per shard), then times, medians of --repeats, page cache warm for both:
  * sha256sum: coreutils, one process, every shard file;
  * sha256sum x cores: the same files split over one sha256sum per core (what a careful user would do);
  * raydsconv.verify(path): manifest, sizes, hashes (threads), headers, index — hash MB/s reported;
  * raydsconv.verify(path, deep=True): also reads every row back.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import benchmark_parser, imagenet_like_folder

import raydsconv
from raydsconv.cluster import available_cpus
from raydsconv.layout import MANIFEST_FILE
from raydsconv.manifest import load_manifest


def dataset(workdir: Path, images: int) -> Path:
    output = workdir / f"verify-memmap-{images}"
    if not (output / MANIFEST_FILE).exists():
        raydsconv.convert(imagenet_like_folder(workdir, images), output, format="memmap", shape=(224, 224),
                          images_per_file=100, progress=False)
    return output


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def sha256sum(files: list[str], processes: int) -> None:
    groups = [files[i::processes] for i in range(processes)]
    running = [subprocess.Popen(["sha256sum", *group], stdout=subprocess.DEVNULL) for group in groups if group]
    if any(process.wait() for process in running):
        raise RuntimeError("sha256sum failed")


def main() -> int:
    args = benchmark_parser(__doc__).parse_args()
    root = dataset(Path(args.workdir), args.images)
    manifest = load_manifest(root)
    files = [str(root / f.name) for shard in manifest.shards for f in shard.files.values()]
    megabytes = sum(f.bytes for shard in manifest.shards for f in shard.files.values()) / 1e6
    cores = available_cpus()
    runs: dict[str, list[float]] = {"sha256sum": [], f"sha256sum x {cores}": [], "verify": [], "verify --deep": []}
    speeds = []
    sha256sum(files, 1)  # warm the page cache
    for _ in range(args.repeats):
        runs["sha256sum"].append(timed(lambda: sha256sum(files, 1)))
        runs[f"sha256sum x {cores}"].append(timed(lambda: sha256sum(files, cores)))
        report = raydsconv.verify(root)
        assert report.ok, report.problems
        runs["verify"].append(timed(lambda: raydsconv.verify(root)))
        speeds.append(report.bytes_hashed / 1e6 / report.hash_seconds)
        runs["verify --deep"].append(timed(lambda: raydsconv.verify(root, deep=True)))
    base = statistics.median(runs["sha256sum"])
    print(f"{len(files)} files, {megabytes:.0f} MB, {manifest.num_samples} samples, {cores} cores, page cache warm")
    print(f"{'check':24} {'seconds':>8} {'MB/s':>7} {'vs sha256sum':>13}")
    for name, times in runs.items():
        seconds = statistics.median(times)
        print(f"{name:24} {seconds:8.2f} {megabytes / seconds:7.0f} {base / seconds:13.2f}")
    print(f"verify's hashing alone: {statistics.median(speeds):.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
