"""What masks cost: converting and reading a segmentation folder with its masks (dense=True) vs the
same images as a classification folder, same run.

    .venv/bin/python benchmarks/dense.py [--images 2000] [--workdir /tmp/rdc-bench] [--repeats 3]

VOC-like samples (500x375 photo-like JPEGs, palette-PNG masks); memmap 224x224 crop (decode-bound)
and tar (masks kept as files, full validation). Reading: one shuffled epoch of the memmap output,
uint8 batches of 64, 2 DataLoader workers, second epoch. Medians of --repeats; Ray start-up excluded.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from common import benchmark_parser, fresh

import raydsconv
from raydsconv.samples import jpeg_bytes, segmentation_sample


def segmentation_folder(workdir: Path, images: int) -> Path:
    """images/ + masks/, and class/ holding hard links to the same JPEGs (one class) for the baseline."""
    root = workdir / f"voc-like-{images}"
    if root.exists():
        return root
    print(f"generating {images} image/mask pairs in {root} ...", flush=True)
    partial = root.with_suffix(".partial")
    for name in ("images", "masks", "as_classes/all"):
        (partial / name).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        image, mask = segmentation_sample(rng, 500, 375, num_classes=21)
        (partial / "images" / f"{i:06d}.jpg").write_bytes(jpeg_bytes(image))
        mask.save(partial / "masks" / f"{i:06d}.png")
        os.link(partial / "images" / f"{i:06d}.jpg", partial / "as_classes" / "all" / f"{i:06d}.jpg")
    partial.rename(root)
    return root


def epoch_rate(path: Path) -> float:
    """Samples/s of the second epoch (the workers are started by then)."""
    dataset = raydsconv.open_dataset(path, output="numpy")
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2, collate_fn=raydsconv.collate,
                        multiprocessing_context="spawn", persistent_workers=True)
    for _ in loader:
        pass
    started = time.perf_counter()
    count = sum(len(images) for images, _ in loader)
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = benchmark_parser(__doc__, images=2000)
    args = parser.parse_args()
    workdir = args.workdir
    root = segmentation_folder(workdir, args.images)
    from raydsconv.cluster import ensure_ray

    ensure_ray()
    options = {"images_per_file": 500, "progress": False}
    formats = {"memmap": {"shape": (224, 224), "resize": "crop"}, "tar": {}}
    runs: dict[tuple[str, str], list[float]] = {(fmt, kind): [] for fmt in formats for kind in ("classes", "masks")}
    raydsconv.convert(root / "as_classes", fresh(workdir / "dense-warm"), format="memmap", shape=(224, 224), **options)
    for _ in range(args.repeats):
        for (fmt, kind), rates in runs.items():
            source = root / "as_classes" if kind == "classes" else root
            report = raydsconv.convert(source, fresh(workdir / f"dense-{fmt}-{kind}"), format=fmt, dense=kind == "masks",
                                       **formats[fmt], **options)
            assert report.num_samples == args.images, report.summary()
            rates.append(report.images_per_second)
    import ray

    ray.shutdown()  # DataLoader workers below; no live Ray driver beside them
    reading = {kind: statistics.median(epoch_rate(workdir / f"dense-memmap-{kind}") for _ in range(args.repeats))
               for kind in ("classes", "masks")}
    print(f"\n{args.images} VOC-like samples (500x375); images/s, medians of {args.repeats}")
    for fmt in formats:
        classes, masks = (statistics.median(runs[(fmt, kind)]) for kind in ("classes", "masks"))
        print(f"convert {fmt:<7} classes {classes:>6.0f}   with masks {masks:>6.0f}   ratio {masks / classes:.2f}")
    print(f"read    memmap  classes {reading['classes']:>6.0f}   with masks {reading['masks']:>6.0f}   "
          f"ratio {reading['masks'] / reading['classes']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
