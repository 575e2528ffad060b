"""How long opening an ImageNet-sized dataset takes: 1.3 M samples in 500 memmap shards.

    .venv/bin/python benchmarks/open_dataset.py [--workdir /tmp/rdc-open]

Builds (once) a real manifest and index of that size over sparse shard files (no pixels are written),
then times, medians of 5: open_dataset() (manifest read + validated, each shard file stat'ed, no
file opened), and the first access to the last sample's location.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import raydsconv
from raydsconv.layout import INDEX_FILE, MANIFEST_FILE
from raydsconv.manifest import Manifest, Shard, ShardFile

SHARDS, PER_SHARD, SHAPE = 500, 2600, (224, 224, 3)


def build(root: Path) -> None:
    if (root / MANIFEST_FILE).exists():
        return
    (root / INDEX_FILE).parent.mkdir(parents=True, exist_ok=True)
    shards = []
    for k in range(SHARDS):
        files = {}
        for role, size in (("images", 128 + PER_SHARD * int(np.prod(SHAPE))), ("labels", 128 + PER_SHARD * 8)):
            name = f"{role}-{k:05d}.npy"
            with open(root / name, "wb") as file:
                file.truncate(size)  # sparse: only the size matters to open_dataset
            files[role] = ShardFile(name, size, "0" * 64)
        shards.append(Shard(k, PER_SHARD, files))
    total = SHARDS * PER_SHARD
    pq.write_table(pa.table({"label": np.arange(total) % 1000, "shard": np.arange(total) // PER_SHARD,
                             "row": np.arange(total) % PER_SHARD,
                             "path": [f"n{i % 1000:08d}/img_{i}.JPEG" for i in range(total)]}), root / INDEX_FILE)
    Manifest(format="memmap", params={"shape": list(SHAPE[:2]), "mode": "RGB", "channels": 3, "resize": "stretch"},
             num_samples=total, classes=[f"n{i:08d}" for i in range(1000)], shards=shards).write(root)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="/tmp/rdc-open")
    root = Path(parser.parse_args().workdir)
    build(root)
    opening, locating = [], []
    for _ in range(5):
        started = time.perf_counter()
        dataset = raydsconv.open_dataset(root)
        opening.append(time.perf_counter() - started)
        started = time.perf_counter()
        dataset.locate(len(dataset) - 1)
        locating.append(time.perf_counter() - started)
    print(f"{len(dataset)} samples in {len(dataset.manifest.shards)} shards: open_dataset "
          f"{statistics.median(opening) * 1000:.0f} ms, locate a sample {statistics.median(locating) * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
