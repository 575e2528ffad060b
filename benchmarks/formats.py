"""Every format: conversion throughput, reading throughput through a DataLoader, size on disk.

Run by hand, alone on the machine:

    .venv/bin/python benchmarks/formats.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

Conversion: images/s of `raydsconv.convert` per format (224x224 RGB for fixed-size formats; full
decode validation, and header-only, for flexible ones), Ray start-up excluded, medians of --repeats.
Reading: images/s of `DataLoader(batch_size=64, shuffle=True, num_workers=2)` over one epoch, beside
torchvision's ImageFolder on the source folder with the same transform (RandomResizedCrop(224) +
ToTensor for ImageFolder and flexible formats, ToTensor for fixed-size ones), and the single-process
decode + RandomResizedCrop rate times the cores (the limit for flexible formats).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import torch
from common import benchmark_parser, fresh, imagenet_like_folder
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from raydsconv.cluster import available_cpus

FIXED, FLEXIBLE = ("memmap", "hdf5"), ("parquet", "ipc", "tar")


def as_list(batch):
    return batch


def read_rate(dataset, flexible: bool) -> float:
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2, persistent_workers=False,
                        collate_fn=as_list if flexible else None)
    started = time.perf_counter()
    count = sum(len(batch) if flexible else len(batch[1]) for batch in loader)
    return count / (time.perf_counter() - started)


def decode_crop_rate(source: Path, count: int = 300) -> float:
    crop = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
    paths = [p for p in sorted(source.rglob("*.JPEG"))[:count]]
    data = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    for item in data:
        crop(Image.open(io.BytesIO(item)).convert("RGB"))
    return len(data) / (time.perf_counter() - started)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> int:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = args.workdir
    source = imagenet_like_folder(workdir, args.images)
    cores = available_cpus()

    import ray

    import raydsconv
    from raydsconv.cluster import ensure_ray

    ensure_ray()
    runs = [(name, "full") for name in FIXED + FLEXIBLE] + [(name, "header") for name in FLEXIBLE]
    options = {"shape": (224, 224), "images_per_file": 500, "progress": False}
    raydsconv.convert(source, fresh(workdir / "warm"), format="memmap", **options)  # warms Ray's workers
    conversion: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for _ in range(args.repeats):
        for name, validation in runs:
            report = raydsconv.convert(source, fresh(workdir / f"fmt-{name}"), format=name, validation=validation, **options)
            conversion[(name, validation)].append(report.images_per_second)
    ray.shutdown()  # DataLoader workers fork: no Ray driver in this process from here on

    sizes = {name: disk_bytes(workdir / f"fmt-{name}") for name in FIXED + FLEXIBLE}
    crop = transforms.Compose([transforms.RandomResizedCrop(224), transforms.ToTensor()])
    reading = {"ImageFolder (source)": read_rate(datasets.ImageFolder(str(source), transform=crop), True)}
    for name in FIXED + FLEXIBLE:
        transform = transforms.ToTensor() if name in FIXED else crop
        reading[name] = read_rate(raydsconv.open_dataset(workdir / f"fmt-{name}", transform=transform), name in FLEXIBLE)
    limit = decode_crop_rate(source) * cores

    print(f"\n{args.images} JPEGs ({disk_bytes(source) / 1e6:.0f} MB), {cores} cores, 500 images per shard")
    print(f"\n{'conversion':<28}{'images/s':>10}")
    for (name, validation), rates in conversion.items():
        label = f"{name} ({'224x224' if name in FIXED else validation + ' validation'})"
        print(f"{label:<28}{statistics.median(rates):>10.0f}")
    base = reading["ImageFolder (source)"]
    print(f"\n{'reading (DataLoader, 2 workers)':<34}{'images/s':>10}{'vs ImageFolder':>16}{'vs limit':>10}{'on disk MB':>12}")
    for name, rate in reading.items():
        size = f"{sizes[name] / 1e6:>12.0f}" if name in sizes else f"{disk_bytes(source) / 1e6:>12.0f}"
        print(f"{name:<34}{rate:>10.0f}{rate / base:>16.2f}{rate / limit:>10.2f}{size}")
    print(f"{'decode + crop x cores (limit)':<34}{limit:>10.0f}")
    print(f"hdf5 reading / memmap reading: {reading['hdf5'] / reading['memmap']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
