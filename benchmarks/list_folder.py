"""Listing speed: raydsconv's folder walk vs torchvision's ImageFolder listing on many empty files.

    .venv/bin/python benchmarks/list_folder.py [--files 1300000] [--classes 1000] [--workdir /tmp/rdc-list]

Creates (once) CLASSES folders holding FILES empty ".JPEG" files in total, then times, medians of 3:
raydsconv.sources.folder.list_image_folder and torchvision's make_dataset (is_valid_file accepting
everything, like ours, so both list the same files). Nothing is decoded on either side.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from torchvision.datasets.folder import find_classes, make_dataset

from raydsconv.sources.folder import list_image_folder


def build(root: Path, files: int, classes: int) -> None:
    if (root / ".complete").exists():
        return
    per_class = -(-files // classes)
    for c in range(classes):
        folder = root / f"n{c:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_class, files - c * per_class)):
            (folder / f"n{c:08d}_{i}.JPEG").touch()
    (root / ".complete").touch()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1_300_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--workdir", default="/tmp/rdc-list")
    args = parser.parse_args()
    root = Path(args.workdir) / f"{args.files}-{args.classes}"
    build(root, args.files, args.classes)
    ours, theirs = [], []
    for _ in range(3):
        started = time.perf_counter()
        listing = list_image_folder(root)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        samples = make_dataset(str(root), find_classes(str(root))[1], is_valid_file=lambda p: True)
        theirs.append(time.perf_counter() - started)
    assert len(listing) == len(samples)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(f"{len(listing)} files in {args.classes} classes")
    print(f"raydsconv list_image_folder : {ours_s:.2f} s")
    print(f"torchvision make_dataset    : {theirs_s:.2f} s  (raydsconv takes {ours_s / theirs_s:.2f}x its time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
