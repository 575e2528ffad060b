"""Conversion throughput: raydsconv (Ray Data) vs a plain multiprocessing.Pool doing the same work.

Run by hand, alone on the machine (numbers taken beside another benchmark are noise):

    .venv/bin/python benchmarks/convert_memmap.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

It generates (once, cached in --workdir) an ImageNet-like folder of photo-like JPEGs (quality 90,
~110 KB, 500x375 ... 1024x768), then measures in one run, medians of --repeats:
  * decode-only: Pillow decode in one process, times the cores (the ceiling for any pipeline);
  * pool: a (spawned, warmed-up) multiprocessing.Pool on the same cores, one task per shard doing the same
    read + decode + resize (raydsconv.images.prepare_image) + .npy write;
  * raydsconv: convert(format="memmap", shape=(224, 224)) on an embedded Ray, start-up reported apart;
  * peak memory: the most memory in use on the machine (MemTotal - MemAvailable) above the level
    before the run, polled every 0.1 s, so every process (Ray's workers included) counts.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import PeakMemory, benchmark_parser, fresh, imagenet_like_folder

from raydsconv.cluster import available_cpus
from raydsconv.formats.base import OutputFile
from raydsconv.formats.memmap import NpyAppender
from raydsconv.images import ImageSpec, prepare_image
from raydsconv.sources.folder import list_image_folder

SPEC = ImageSpec(shape=(224, 224))


def pool_shard(job):
    """The baseline's unit of work: one shard, read + prepare + write, in one process."""
    root, paths, output, shard = job
    file = OutputFile(Path(output) / f"images-{shard:05d}.npy", Path(output))  # temporary name, sha256 while written
    images = NpyAppender(file, np.uint8, SPEC.array_shape, expected_rows=len(paths))
    for path in paths:
        with open(os.path.join(root, path), "rb") as source:
            pixels = prepare_image(source.read(), SPEC).pixels
        images.append(pixels[None])
    images.finish()
    file.commit()


def warm_up(_):
    """Import torch/torchvision in a pool worker, as Ray's warm-up run does for its workers."""
    from raydsconv.samples import jpeg_bytes, photo_like

    prepare_image(jpeg_bytes(photo_like(np.random.default_rng(0), 64, 48)), SPEC)


def run_pool(pool, root: Path, paths: list[str], output: Path, images_per_file: int) -> float:
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    jobs = [(str(root), paths[i : i + images_per_file], str(output), i // images_per_file)
            for i in range(0, len(paths), images_per_file)]
    started = time.perf_counter()
    pool.map(pool_shard, jobs, chunksize=1)
    return time.perf_counter() - started


def decode_only_rate(root: Path, paths: list[str], count: int = 400) -> float:
    data = [(root / p).read_bytes() for p in paths[:count]]
    started = time.perf_counter()
    for item in data:
        Image.open(io.BytesIO(item)).load()
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--images-per-file", type=int, default=500)
    args = parser.parse_args()
    workdir = args.workdir
    source = imagenet_like_folder(workdir, args.images)
    listing = list_image_folder(source)
    mean_kb = np.mean([os.path.getsize(source / p) for p in listing.paths[:500]]) / 1e3
    cores = available_cpus()
    print(f"{len(listing)} JPEGs, mean {mean_kb:.0f} KB; {cores} cores; target 224x224 RGB, "
          f"{args.images_per_file} images per shard", flush=True)

    decode_rate = decode_only_rate(source, listing.paths)
    print(f"decode-only (Pillow, 1 process): {decode_rate:.0f} images/s -> x{cores} cores = {decode_rate * cores:.0f}")

    # Spawned, not forked: the driver is about to run Ray, which must not be forked.
    pool = multiprocessing.get_context("spawn").Pool(cores)
    pool.map(warm_up, range(cores * 4))

    import ray

    import raydsconv
    from raydsconv.cluster import ensure_ray

    ray_start = ensure_ray()
    print(f"Ray start-up: {ray_start:.1f} s (not counted below)", flush=True)
    # A first, untimed conversion warms Ray's worker processes (imports of torch, PIL, ...).
    raydsconv.convert(source, fresh(workdir / "warm"), shape=(224, 224), images_per_file=args.images_per_file,
                      progress=False)

    pool_rates, ray_rates, pool_memory, ray_memory = [], [], [], []
    for repeat in range(args.repeats):
        with PeakMemory() as peak:
            seconds = run_pool(pool, source, listing.paths, workdir / "pool-out", args.images_per_file)
        pool_rates.append(len(listing) / seconds)
        pool_memory.append(peak.megabytes)
        fresh(workdir / "ray-out")
        with PeakMemory() as peak:
            report = raydsconv.convert(source, workdir / "ray-out", shape=(224, 224),
                                       images_per_file=args.images_per_file, progress=False)
        ray_rates.append(report.images_per_second)
        ray_memory.append(peak.megabytes)
        print(f"  run {repeat + 1}: pool {pool_rates[-1]:.0f} images/s, raydsconv {ray_rates[-1]:.0f} images/s",
              flush=True)
    ray.shutdown()
    pool.close()

    pool_rate, ray_rate = statistics.median(pool_rates), statistics.median(ray_rates)
    print()
    print(f"{'pipeline':<34}{'images/s':>10}{'vs pool':>10}{'vs decode x cores':>20}{'peak MB':>10}")
    for name, rate, memory in (("multiprocessing.Pool (baseline)", pool_rate, pool_memory),
                               ("raydsconv memmap (Ray Data)", ray_rate, ray_memory)):
        print(f"{name:<34}{rate:>10.0f}{rate / pool_rate:>10.2f}{rate / (decode_rate * cores):>20.2f}"
              f"{statistics.median(memory):>10.0f}")
    print(f"{'decode only x cores (ceiling)':<34}{decode_rate * cores:>10.0f}")
    print(f"\ntargets: >= 1000 images/s excluding Ray start-up; >= 0.9x the pool -> "
          f"{'met' if ray_rate >= 1000 else 'NOT met'} / {'met' if ray_rate >= 0.9 * pool_rate else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
