"""What a conversion costs before its first image, and whether every CPU works whatever the shard
count (issue 15). Whole commands, each a fresh process, wall clock, medians of --repeats, all in one
run so that the ratios hold on a shared machine. Run by hand, alone on the machine:

    .venv/bin/python benchmarks/fixed_cost.py [--images 3000] [--small 300] [--workdir /tmp/rdc-bench]

  * raydsconv CLI, memmap 224x224, and the plain multiprocessing.Pool baseline
    (benchmarks/pool_convert.py), on --small and --images photo-like JPEGs: the fixed cost F and the
    marginal rate of each from t = F + N / rate;
  * 120 images into one shard: the whole CLI command with --num-workers 1 and with all CPUs, and
    in this process (Ray started and warm) the conversion's own seconds (report.seconds), medians of
    7, to show a shard spread over the CPUs; and the preparation alone of those 120 images, on one
    thread and on a thread per CPU (raydsconv.shards.prepared_in_threads, as a shard's task does).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import benchmark_parser, imagenet_like_folder

HERE = Path(__file__).parent
PYTHON = sys.executable


def subset(source: Path, workdir: Path, count: int) -> Path:
    """The first ``count`` files of ``source`` (class folders kept), as hard links: made once."""
    folder = workdir / f"{source.name}-first-{count}"
    if not folder.exists():
        files = sorted(p for p in source.rglob("*") if p.is_file())[:count]
        partial = folder.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for path in files:
            target = partial / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
        partial.rename(folder)
    return folder


def timed(command: list[str], output: Path) -> float:
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    shutil.rmtree(output, ignore_errors=True)
    return seconds


def ours(source: Path, output: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "raydsconv.cli", "convert", str(source), str(output), "--shape", "224", "224",
            "--no-progress", *extra]


def pool(source: Path, output: Path) -> list[str]:
    return [PYTHON, str(HERE / "pool_convert.py"), str(source), str(output)]


def fit(small: int, large: int, t_small: float, t_large: float) -> tuple[float, float]:
    """(F, rate) of t = F + N / rate through two points."""
    rate = (large - small) / (t_large - t_small)
    return t_small - small / rate, rate


def main() -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--small", type=int, default=300)
    args = parser.parse_args()
    full = imagenet_like_folder(args.workdir, max(args.images, 5000))
    sizes = {n: subset(full, args.workdir, n) for n in (args.small, args.images, 120)}
    out = args.workdir / "fixed-cost-out"
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for n in (args.small, args.images):
            times.setdefault(f"raydsconv {n}", []).append(timed(ours(sizes[n], out), out))
            times.setdefault(f"pool {n}", []).append(timed(pool(sizes[n], out), out))
        times.setdefault("one shard, 1 worker", []).append(timed(ours(sizes[120], out, "--num-workers", "1"), out))
        times.setdefault("one shard, all CPUs", []).append(timed(ours(sizes[120], out), out))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nwhole commands, wall clock, medians of {args.repeats} ({os.cpu_count()} CPUs)")
    for name, value in median.items():
        print(f"  {name:<24}{value:8.2f} s   {[round(v, 2) for v in times[name]]}")
    print(f"\n{'':<12}{'F (s)':>8}{'marginal img/s':>16}{f'{args.small} img/s':>12}{f'{args.images} img/s':>12}")
    for tool in ("raydsconv", "pool"):
        small, large = median[f"{tool} {args.small}"], median[f"{tool} {args.images}"]
        fixed, rate = fit(args.small, args.images, small, large)
        print(f"{tool:<12}{fixed:>8.1f}{rate:>16.0f}{args.small / small:>12.0f}{args.images / large:>12.0f}")
    for n in (args.small, args.images):
        print(f"raydsconv / pool at {n} images: {median[f'pool {n}'] / median[f'raydsconv {n}']:.2f}x")
    print(f"one shard of 120 images, all CPUs vs 1 worker (whole command): "
          f"{median['one shard, 1 worker'] / median['one shard, all CPUs']:.2f}x")
    one, spread = preparation_seconds(sizes[120])
    print(f"preparing 120 images: 1 thread {one:.2f} s, {os.cpu_count()} threads {spread:.2f} s: {one / spread:.2f}x")
    one, spread = one_shard_seconds(sizes[120], out)
    print(f"one shard of 120 images, conversion seconds on a warm Ray: 1 worker {one:.2f} s, all CPUs {spread:.2f} s: "
          f"{one / spread:.2f}x")
    return 0


def preparation_seconds(source: Path, repeats: int = 7) -> tuple[float, float]:
    """The 120 images prepared (read, decoded, resized) in this process: one thread, then a thread per
    CPU, each torch op on one thread as in a Ray worker of one CPU."""
    import torch

    from raydsconv.images import ImageSpec
    from raydsconv.pipeline import candidate_table, shard_rows
    from raydsconv.prepare import Preparation
    from raydsconv.shards import ShardJob, in_batches, prepared_in_threads
    from raydsconv.sources.folder import list_image_folder

    torch.set_num_threads(1)
    listing = list_image_folder(source)
    job = ShardJob(targets=(), preparation=Preparation(ImageSpec(shape=(224, 224)), keep_bytes=False), classes=[],
                   strict=False, batch_size=64, records=source)
    rows = shard_rows(candidate_table(listing, 1000), 0, 1000)

    def prepare(batch):
        return job.prepare(batch, listing.loader)

    def seconds(threads: int) -> float:
        started = time.perf_counter()
        if threads == 1:
            list(map(prepare, in_batches(rows, 64)))
        else:
            list(prepared_in_threads(rows, 64, threads, prepare))
        return time.perf_counter() - started

    seconds(1)  # imports, the decode path's first call
    alone, spread = [], []
    for _ in range(repeats):
        alone.append(seconds(1))
        spread.append(seconds(os.cpu_count() or 1))
    return statistics.median(alone), statistics.median(spread)


def one_shard_seconds(source: Path, output: Path, repeats: int = 7) -> tuple[float, float]:
    import ray

    import raydsconv

    ray.init(include_dashboard=False, logging_level="ERROR")

    def seconds(**options) -> float:
        shutil.rmtree(output, ignore_errors=True)
        return raydsconv.convert(source, output, shape=(224, 224), progress=False, **options).seconds

    seconds()  # warm workers
    alone, spread = [], []
    for _ in range(repeats):
        alone.append(seconds(num_workers=1))
        spread.append(seconds())
    ray.shutdown()
    return statistics.median(alone), statistics.median(spread)


if __name__ == "__main__":
    sys.exit(main())
