"""The issue-15 baseline as a whole command: a plain multiprocessing.Pool, one task per shard of 1000,
Pillow decode + bicubic resize to 224x224 RGB, each shard written as one .npy (no Ray, no torch).

    .venv/bin/python benchmarks/pool_convert.py SOURCE OUTPUT [--processes N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES_PER_FILE = 1000


def shard(job: tuple[str, list[str], str, int]) -> int:
    root, paths, output, index = job
    pixels = np.empty((len(paths), 224, 224, 3), dtype=np.uint8)
    for row, path in enumerate(paths):
        with Image.open(os.path.join(root, path)) as image:
            pixels[row] = np.asarray(image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
    np.save(os.path.join(output, f"images-{index:05d}.npy"), pixels)
    return len(paths)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--processes", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    paths = sorted(str(p.relative_to(args.source)) for p in args.source.rglob("*") if p.is_file())
    args.output.mkdir(parents=True)
    jobs = [(str(args.source), paths[i : i + IMAGES_PER_FILE], str(args.output), i // IMAGES_PER_FILE)
            for i in range(0, len(paths), IMAGES_PER_FILE)]
    with multiprocessing.Pool(args.processes) as pool:
        count = sum(pool.map(shard, jobs, chunksize=1))
    print(f"{count} images into {len(jobs)} shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
