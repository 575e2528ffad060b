"""`raydsconv bench DST`: how fast this dataset reads on this machine's storage, through a
DataLoader with 0..N workers, a few batch sizes and output types, cold (shard files evicted from
the page cache first) and warm; then a recommendation. No Ray involved."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from raydsconv.cluster import available_cpus
from raydsconv.reading.dataset import ShardedDataset, collate, open_dataset

logger = logging.getLogger(__name__)


@dataclass
class Measurement:
    output: str
    batch_size: int
    num_workers: int
    epoch: str  # "cold" (files evicted from the page cache first) or "warm"
    images_per_second: float
    megabytes_per_second: float


def evict_from_page_cache(dataset: ShardedDataset) -> None:
    """Ask the kernel to drop the shard files from its cache, so the next read comes from storage."""
    for shard in dataset.manifest.shards:
        for file in shard.files.values():
            descriptor = os.open(dataset.dataset_path / file.name, os.O_RDONLY)
            try:
                os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(descriptor)


def _as_list(batch: list) -> list:
    return batch


def _collate_for(dataset: ShardedDataset):
    return collate if dataset.output in ("tensor", "numpy") and dataset.reader.fixed_size else _as_list


def measure(dataset: ShardedDataset, *, batch_size: int, num_workers: int, samples: int, seed: int = 0) -> float:
    """Steady-state images/s over ``samples`` shuffled samples: the clock starts at the first
    batch, so worker start-up (paid once per training run) does not count."""
    sampler = RandomSampler(dataset, num_samples=min(samples, len(dataset)),
                            generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=_collate_for(dataset))
    started, count = None, 0
    for batch in loader:
        if started is None:
            started = time.perf_counter()
            continue
        count += len(batch[1]) if isinstance(batch, tuple) else len(batch)
    seconds = time.perf_counter() - started if started is not None else 0.0
    return count / seconds if count and seconds > 0 else float("nan")


def run_bench(path: str | os.PathLike, *, format: str | None = None, batch_sizes: tuple[int, ...] = (64, 256),
              max_workers: int | None = None, samples: int = 2000, outputs: tuple[str, ...] | None = None
              ) -> list[Measurement]:
    probe = open_dataset(path, format=format)
    if outputs is None:
        outputs = ("tensor", "pil") if probe.reader.fixed_size else ("bytes", "tensor")
    bytes_per_sample = sum(f.bytes for s in probe.manifest.shards for f in s.files.values()) / max(len(probe), 1)
    # The clock starts at the first batch: a batch size needs a second one to be measured at all.
    read = min(samples, len(probe))
    too_large = [size for size in batch_sizes if size >= read]
    if too_large:
        logger.warning("batch size%s %s not measured: %d samples make a single batch (the first batch is not timed); "
                       "use smaller batch sizes or more samples", "s" if len(too_large) > 1 else "",
                       ", ".join(map(str, too_large)), read)
    batch_sizes = tuple(size for size in batch_sizes if size < read)
    workers = range(0, (max_workers if max_workers is not None else available_cpus()) + 1)
    results = []
    for output in outputs:
        for batch_size in batch_sizes:
            for num_workers in workers:
                # A fresh reader each time: pages still mapped by an earlier one cannot be evicted.
                dataset = open_dataset(path, format=format, output=output)
                for epoch in ("cold", "warm"):
                    if epoch == "cold":
                        evict_from_page_cache(dataset)
                    rate = measure(dataset, batch_size=batch_size, num_workers=num_workers, samples=samples)
                    results.append(Measurement(output, batch_size, num_workers, epoch, rate,
                                               rate * bytes_per_sample / 1e6))
    return results


def recommendation(results: list[Measurement]) -> str:
    warm = [m for m in results if m.epoch == "warm" and m.images_per_second == m.images_per_second]  # not NaN
    if not warm:
        return "not enough samples to measure: use a larger dataset or smaller --batch-sizes"
    best = max(warm, key=lambda m: m.images_per_second)
    # The fewest workers within 10% of the best leave CPUs to the training loop.
    good = min((m for m in warm if m.output == best.output and m.batch_size == best.batch_size
                and m.images_per_second >= 0.9 * best.images_per_second), key=lambda m: m.num_workers)
    return (f"use output={good.output!r}, num_workers={good.num_workers}, batch_size={good.batch_size}: "
            f"{good.images_per_second:.0f} images/s warm (best seen {best.images_per_second:.0f} with "
            f"{best.num_workers} workers)")


def table(results: list[Measurement]) -> str:
    lines = [f"{'output':<8}{'batch':>6}{'workers':>8}{'epoch':>6}{'images/s':>10}{'MB/s':>8}"]
    for m in results:
        lines.append(f"{m.output:<8}{m.batch_size:>6}{m.num_workers:>8}{m.epoch:>6}"
                     f"{m.images_per_second:>10.0f}{m.megabytes_per_second:>8.1f}")
    return "\n".join(lines)


def plot(results: list[Measurement], file: str | os.PathLike) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from raydsconv.errors import InvalidArgumentError

        raise InvalidArgumentError("--plot needs matplotlib: pip install 'raydsconv[plot]'") from None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for key in sorted({(m.output, m.batch_size, m.epoch) for m in results}):
        points = sorted((m.num_workers, m.images_per_second) for m in results if (m.output, m.batch_size, m.epoch) == key)
        axis.plot(*zip(*points), marker="o", linestyle="-" if key[2] == "warm" else "--",
                  label=f"{key[0]}, batch {key[1]}, {key[2]}")
    axis.set_xlabel("DataLoader num_workers")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.set_ylabel("images/s")
    axis.set_title("raydsconv bench")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(file, dpi=100)
    plt.close(figure)
    return Path(file)


def as_dicts(results: list[Measurement]) -> list[dict[str, Any]]:
    return [asdict(m) for m in results]
