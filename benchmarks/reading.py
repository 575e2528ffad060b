"""Reading memmap data for training: our uint8 batch path vs the predecessor's per-item PIL path vs
the transport ceiling, and Ray Data iteration. Run by hand, alone on the machine:

    .venv/bin/python benchmarks/reading.py [--images 3000] [--workdir /tmp/rdc-bench] [--repeats 3]

All through DataLoader(batch_size=64, shuffle=True, num_workers=2) over the same 224x224 memmap data:
  * raydsconv: output="tensor", collate_fn=raydsconv.collate (uint8 (N, 3, 224, 224) batches);
  * predecessor-style: per-item PIL image + torchvision ToTensor (float), default collate;
  * ceiling: a dataset returning one constant uint8 tensor of the same shape (pure transport);
  * ray.data: raydsconv.read_ray(...).iter_torch_batches(batch_size=64).
Then the same images as a tar dataset (original JPEGs), decoded and augmented with
torchvision.transforms.v2.RandomResizedCrop(224) on uint8 tensors:
  * DataLoader: open_dataset(output="tensor", transform=crop), default collate;
  * ray.data: read_ray (decoding in the read tasks) + map_batches(crop) + iter_torch_batches(64).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from common import benchmark_parser, fresh, imagenet_like_folder
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import raydsconv
from raydsconv.layout import MANIFEST_FILE


class ConstantImages(Dataset):
    def __init__(self, length: int):
        self.length, self.image = length, torch.zeros((3, 224, 224), dtype=torch.uint8)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.image, 0


def epoch_rate(dataset, collate_fn=None) -> float:
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2, collate_fn=collate_fn)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    started, count = time.perf_counter(), 0
    for _, labels in iterator:
        count += len(labels)
    return count / (time.perf_counter() - started)


def ray_rate(path: Path) -> float:
    started, count = None, 0
    for batch in raydsconv.read_ray(path).iter_torch_batches(batch_size=64):
        if started is None:
            started = time.perf_counter()
            continue
        count += len(batch["label"])
    return count / (time.perf_counter() - started)


def crop_batch(batch: dict) -> dict:
    """RandomResizedCrop(224) of each decoded (H, W, 3) image of a Ray batch, as (3, 224, 224) uint8."""
    import numpy as np
    from torchvision.transforms import v2

    crop = v2.RandomResizedCrop(224, antialias=True)
    images = [crop(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)) for image in batch["image"]]
    return {"image": torch.stack(images).numpy(), "label": batch["label"]}


def ray_tar_rate(path: Path) -> float:
    started, count = None, 0
    dataset = raydsconv.read_ray(path).map_batches(crop_batch, batch_size=64)
    for batch in dataset.iter_torch_batches(batch_size=64):
        if started is None:
            started = time.perf_counter()
            continue
        count += len(batch["label"])
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = benchmark_parser(__doc__)
    args = parser.parse_args()
    workdir = args.workdir
    source = imagenet_like_folder(workdir, args.images)
    path = workdir / "read-memmap"
    if not (path / MANIFEST_FILE).exists():
        raydsconv.convert(source, fresh(path), shape=(224, 224), images_per_file=500, progress=False)
        import ray

        ray.shutdown()
    tar_path = workdir / "read-tar"
    if not (tar_path / "manifest.json").exists():
        raydsconv.convert(source, fresh(tar_path), format="tar", images_per_file=500, progress=False)
        import ray

        ray.shutdown()
    ours = raydsconv.open_dataset(path, output="tensor")
    predecessor = raydsconv.open_dataset(path, transform=transforms.ToTensor())
    rates: dict[str, list[float]] = {"raydsconv uint8 batches": [], "predecessor-style PIL + ToTensor": [],
                                     "constant tensor (ceiling)": []}
    for _ in range(args.repeats):
        rates["raydsconv uint8 batches"].append(epoch_rate(ours, raydsconv.collate))
        rates["predecessor-style PIL + ToTensor"].append(epoch_rate(predecessor))
        rates["constant tensor (ceiling)"].append(epoch_rate(ConstantImages(len(ours))))
    from torchvision.transforms import v2

    cropped = raydsconv.open_dataset(tar_path, output="tensor", transform=v2.RandomResizedCrop(224, antialias=True))
    tar_rates: dict[str, list[float]] = {"DataLoader tar decode + crop": [epoch_rate(cropped) for _ in range(args.repeats)]}
    import ray

    ray.init(include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    rates["ray.data iter_torch_batches"] = [ray_rate(path) for _ in range(args.repeats)]
    tar_rates["ray.data tar decode + crop"] = [ray_tar_rate(tar_path) for _ in range(args.repeats)]
    ray.shutdown()
    print(f"\n{len(ours)} samples, 224x224 RGB memmap, DataLoader(batch_size=64, shuffle=True, num_workers=2)")
    report(rates, "raydsconv uint8 batches")
    print(f"\n{len(ours)} samples, tar of the original JPEGs, decode + RandomResizedCrop(224)")
    report(tar_rates, "DataLoader tar decode + crop")
    return 0


def report(rates: dict[str, list[float]], baseline: str) -> None:
    base = statistics.median(rates[baseline])
    print(f"{'path':<36}{'images/s':>10}{'ratio':>9}")
    for name, values in rates.items():
        print(f"{name:<36}{statistics.median(values):>10.0f}{statistics.median(values) / base:>9.2f}")


if __name__ == "__main__":
    sys.exit(main())
