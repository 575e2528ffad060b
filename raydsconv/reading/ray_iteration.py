"""A converted dataset as a ``ray.data.Dataset`` (columns ``image`` and the target kind's: ``label``,
``mask``, none for unlabeled images, ...), read in parallel, one read task per shard, through the reading core
(``raydsconv.reading.core``) that the torch Dataset uses too.

Fixed-size formats give ``image`` (and ``mask``) as (H, W[, C]) tensors; flexible ones give the
decoded image and mask (``decode=True``, sizes vary) or the stored file bytes (``decode=False``). Works with
``iter_batches``, ``iter_torch_batches`` (needs ``ray[train]``) and ``streaming_split`` for Ray Train.
Rows come in the manifest's order when ``DataContext.execution_options.preserve_order`` is set.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

ROWS_PER_BLOCK = 256


def read_ray(dataset_path: str | os.PathLike, *, format: str | None = None, decode: bool = True,
             rows_per_block: int = ROWS_PER_BLOCK, channels_first: bool = False):
    """Open a raydsconv dataset as a Ray Dataset. Needs Ray (the torch readers do not).

    ``channels_first=True`` gives fixed-size images as (C, H, W), the layout of
    ``open_dataset(output="tensor")`` and of torchvision; the default (H, W, C) is numpy's and PIL's.
    """
    import ray

    from raydsconv.reading.core import DatasetReader

    reader = DatasetReader(dataset_path, format=format)
    # One block stream per shard; without override_num_blocks Ray Data splits each into ~34 small blocks
    # (its default parallelism is 200), and the scheduling of those costs more than the reading.
    return ray.data.read_datasource(_shard_datasource(reader, decode, rows_per_block, channels_first),
                                    override_num_blocks=len(reader.manifest.shards))


def _block(reader: Any, decoder: Any, shard: int, rows: np.ndarray, decode: bool, channels_first: bool) -> dict:
    """One block: a contiguous run of a shard's rows, images as one array where they have one shape."""
    fetched = reader.fetch_rows(shard, rows)
    images = fetched.images
    with reader.reading(shard, int(rows[0])):
        if isinstance(images, np.ndarray):
            if channels_first:
                images = np.ascontiguousarray(np.moveaxis(images, -1, 1) if images.ndim == 4 else images[:, None])
        else:
            images = _objects(decoder.images(images) if decode else images)  # ragged: each keeps its size
        return {"image": images, **reader.target.ray_columns(fetched.fields, decoder, decode)}


def _shard_datasource(reader: Any, decode: bool, rows_per_block: int, channels_first: bool):
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    from raydsconv.reading.decoders import NumpyDecoder, Stored
    from raydsconv.targets import Mask

    mask_spec = reader.target.spec if isinstance(reader.target, Mask) else None
    decoder = NumpyDecoder(Stored(reader.fixed_size, reader.mode, mask_spec))

    def read_shard(shard: int) -> Iterator[Any]:
        rows = np.arange(reader.manifest.shards[shard].num_samples)
        for start in range(0, len(rows), rows_per_block):
            block = _block(reader, decoder, shard, rows[start : start + rows_per_block], decode, channels_first)
            yield BlockAccessor.batch_to_block(block)

    class ShardDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(f.bytes for shard in reader.manifest.shards for f in shard.files.values())

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            tasks = []
            for shard in reader.manifest.shards:
                files = tuple(str(reader.root / f.name) for f in shard.files.values())
                metadata = BlockMetadata(num_rows=shard.num_samples, size_bytes=sum(f.bytes for f in shard.files.values()),
                                         input_files=files, exec_stats=None)
                tasks.append(ReadTask(lambda shard=shard.index: read_shard(shard), metadata,
                                      per_task_row_limit=per_task_row_limit))
            return tasks

        def get_name(self) -> str:
            return f"Raydsconv{reader.manifest.format.capitalize()}"

    return ShardDatasource()


def _objects(payloads: list[bytes]) -> np.ndarray:
    values = np.empty(len(payloads), dtype=object)
    values[:] = payloads
    return values
