"""Resumable conversions: what a resume, an already-complete re-run and the driver's memory cost.

Run by hand, alone on the machine:

    .venv/bin/python benchmarks/resume.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

Each figure is a whole `raydsconv convert` command (CLI in a subprocess, embedded Ray, memmap 224²,
images_per_file 100), median of --repeats, in one run:
  * fresh: a conversion from scratch (the baseline of the ratios);
  * resume at 50 %: a conversion interrupted with SIGINT once half its shards were written, then the
    same command again (only the second command is timed);
  * already complete: the same command on the finished output;
  * driver peak memory (VmHWM of the driver process) converting --images and 10 times as many small
    images (64x48): flat means the driver does not hold per-shard results in memory.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import benchmark_parser, imagenet_like_folder

from raydsconv.samples import write_image_folder

IMAGES_PER_FILE = 100


def command(source: Path, output: Path) -> list[str]:
    return [sys.executable, "-m", "raydsconv.cli", "convert", str(source), str(output), "--shape", "224", "224",
            "--images-per-file", str(IMAGES_PER_FILE), "--no-progress"]


def run(source: Path, output: Path, *, stop_after_shards: int | None = None) -> tuple[float, int]:
    """(seconds, driver peak RSS in bytes) of one command; SIGINT once ``stop_after_shards`` are written."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    records = output / ".raydsconv" / "shards"
    started = time.perf_counter()
    process = subprocess.Popen(command(source, output), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak, signalled = 0, False
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]) * 1024)
        except (OSError, IndexError):
            pass
        if stop_after_shards is not None and records.is_dir() and len(os.listdir(records)) >= stop_after_shards:
            process.send_signal(signal.SIGINT)
            stop_after_shards, signalled = None, True
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read()
    if process.returncode not in ((0, 130) if signalled else (0,)):
        raise SystemExit(f"convert exited {process.returncode}: {stderr[-2000:]}")
    return seconds, peak


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    source = imagenet_like_folder(args.workdir, args.images)
    shards = -(-args.images // IMAGES_PER_FILE)
    output = args.workdir / "resume-out"
    fresh, resumed, complete = [], [], []
    for _ in range(args.repeats):
        shutil.rmtree(output, ignore_errors=True)
        fresh.append(run(source, output)[0])
        complete.append(run(source, output)[0])
        shutil.rmtree(output, ignore_errors=True)
        run(source, output, stop_after_shards=shards // 2)
        resumed.append(run(source, output)[0])
    base = statistics.median(fresh)
    print(f"{args.images} images, {shards} shards of {IMAGES_PER_FILE}, memmap 224x224, medians of {args.repeats}")
    print(f"  fresh conversion         {base:6.1f} s")
    print(f"  resume after 50 %        {statistics.median(resumed):6.1f} s  ({statistics.median(resumed) / base:.2f}x fresh)")
    print(f"  already complete         {statistics.median(complete):6.1f} s  ({statistics.median(complete) / base:.2f}x fresh)")

    peaks = {}
    for count in (args.images, 10 * args.images):
        small = args.workdir / f"small-{count}"
        if not small.exists():
            print(f"generating {count} small JPEGs in {small} ...", flush=True)
            write_image_folder(small.with_suffix(".partial"), num_images=count, num_classes=10, sizes=((64, 48),))
            small.with_suffix(".partial").rename(small)
        shutil.rmtree(output, ignore_errors=True)
        peaks[count] = run(small, output)[1]
    low, high = peaks[args.images], peaks[10 * args.images]
    print(f"  driver peak memory: {low / 1e6:.0f} MB for {args.images} images, {high / 1e6:.0f} MB for "
          f"{10 * args.images} ({high / low:.2f}x)")
    shutil.rmtree(output, ignore_errors=True)


if __name__ == "__main__":
    main()
