"""The GPU decoding recipe for flexible formats, checked and timed on a CUDA machine:

    python benchmarks/gpu_decode.py DATASET [--format tar]

Reads the stored JPEG bytes with `output="bytes"` through a DataLoader (workers only read; no CPU
decode), decodes each batch on the GPU with `torchvision.io.decode_jpeg(device="cuda")`, and
compares pixels with Pillow's CPU decode. Needs no Ray (the device machines have none).
"""

from __future__ import annotations

import argparse
import io
import sys
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.io import decode_jpeg

import raydsconv


def as_list(batch):
    return batch


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("--format")
    args = parser.parse_args()
    dataset = raydsconv.open_dataset(args.dataset, format=args.format, output="bytes")
    jpeg = [i for i in range(len(dataset)) if dataset.index().column("source_format")[i].as_py() == "JPEG"]
    print(f"{len(jpeg)} JPEGs of {len(dataset)} samples; torch {torch.__version__}, {torch.cuda.get_device_name()}")
    subset = torch.utils.data.Subset(dataset, jpeg)
    loader = DataLoader(subset, batch_size=64, num_workers=4, collate_fn=as_list)

    worst, total_diff, pixels = 0, 0, 0
    for batch in loader:  # correctness, and warm-up of the GPU decoder
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data, _ in batch]
        decoded = decode_jpeg(encoded, device="cuda")
        for (data, _), image in zip(batch, decoded):
            cpu = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            diff = np.abs(image.permute(1, 2, 0).cpu().numpy().astype(int) - cpu)
            worst, total_diff, pixels = max(worst, int(diff.max())), total_diff + int(diff.sum()), pixels + diff.size
    torch.cuda.synchronize()
    for name, device in (("GPU decode_jpeg(device='cuda')", "cuda"), ("CPU Pillow, 1 process", None)):
        started, count = time.perf_counter(), 0
        for batch in loader:
            if device:
                decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d, _ in batch], device=device)
            else:
                for data, _ in batch:
                    Image.open(io.BytesIO(data)).convert("RGB").load()
            count += len(batch)
        torch.cuda.synchronize()
        print(f"{name:<34}{count / (time.perf_counter() - started):>8.0f} images/s")
    print(f"|GPU - Pillow| over all pixels: mean {total_diff / pixels:.3f}, max {worst} (of 255)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
