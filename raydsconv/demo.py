"""`raydsconv demo`: generate a small photo-like image folder (with odd cases), convert it with an
embedded Ray, read it back through a DataLoader and say what happened."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


def run_demo(workdir: str | None = None, *, num_images: int = 300, say: Callable[[str], None] = logger.info) -> int:
    """The demo; ``say`` receives each line for the person watching (the CLI passes ``print``). Its
    files stay in ``workdir`` if one is given; otherwise they go to a temporary folder, removed at the end."""
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="raydsconv-demo-"))
    try:
        return _demo(base, num_images, say)
    finally:
        size = f"{_megabytes(base):.0f} MB"
        if workdir:
            say(f"   the files ({size}) stay in {base}; inspect the dataset with: raydsconv info {base / 'converted'}")
        else:
            shutil.rmtree(base, ignore_errors=True)
            say(f"   removed {base} ({size}); give --workdir DIR to keep the files")


def _megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def _demo(base: Path, num_images: int, say: Callable[[str], None]) -> int:
    from torch.utils.data import DataLoader
    from torchvision.transforms.v2 import PILToTensor

    from raydsconv.conversion import convert
    from raydsconv.reading import open_dataset
    from raydsconv.samples import write_image_folder, write_odd_cases

    source, output = base / "images", base / "converted"
    started = time.perf_counter()
    write_image_folder(source, num_images=num_images, num_classes=4, seed=0)
    odd = write_odd_cases(source)
    say(f"1. wrote {num_images} photo-like JPEGs in 4 classes and {len(odd.readable) + len(odd.bad)} odd "
          f"files to {source} ({time.perf_counter() - started:.1f} s)")

    # One read of the source writes resized pixels (memmap) and the original bytes (parquet).
    report = convert(source, output, format=["memmap", "parquet"], shape=(224, 224), mode="RGB", resize="crop",
                     images_per_file=128, overwrite=True)
    say("2. " + report.summary().replace("\n", "\n   "))
    import ray

    ray.shutdown()  # training needs no Ray, and DataLoader workers must not fork a Ray driver

    seen = 0
    for name in ("memmap", "parquet"):
        dataset = open_dataset(output, transform=PILToTensor(), format=name)
        # parquet keeps each image at its own size: batch them as lists, not stacked tensors
        loader = DataLoader(dataset, batch_size=64, num_workers=2, shuffle=True,
                            collate_fn=None if name == "memmap" else _as_list)
        started = time.perf_counter()
        seen, counts = 0, np.zeros(len(dataset.classes), dtype=int)
        for batch in loader:
            labels = batch[1] if name == "memmap" else [label for _, label in batch]
            seen += len(labels)
            counts += np.bincount(np.asarray(labels), minlength=len(counts))
        say(f"3. {name}: read {seen} samples back through a DataLoader with 2 workers in "
              f"{time.perf_counter() - started:.2f} s")
        say("   per class: " + ", ".join(f"{name}={n}" for name, n in zip(dataset.classes, counts)))
    return 0 if seen == report.num_samples else 1


def _as_list(batch):
    return batch
