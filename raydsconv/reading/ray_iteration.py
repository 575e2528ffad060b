"""A converted dataset as a ``ray.data.Dataset`` (columns ``image`` and ``label``, or ``image`` and
``mask`` for dense labels), read in parallel, one read task per shard, through the same ShardReaders
the torch Datasets use.

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
             rows_per_block: int = ROWS_PER_BLOCK):
    """Open a raydsconv dataset as a Ray Dataset. Needs Ray (the torch readers do not)."""
    import ray

    from raydsconv.reading.dataset import open_dataset

    reader = open_dataset(dataset_path, format=format, output="numpy")  # decodes as the torch reader does
    return ray.data.read_datasource(_shard_datasource(reader, decode, rows_per_block))


def _shard_datasource(reader: Any, decode: bool, rows_per_block: int):
    from ray.data.block import BlockAccessor, BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    def read_shard(shard: int) -> Iterator[Any]:
        shard_reader = reader._shard_reader()
        rows = np.arange(reader.manifest.shards[shard].num_samples)
        for start in range(0, len(rows), rows_per_block):
            images, targets = shard_reader.read_rows(shard, rows[start : start + rows_per_block])
            if not isinstance(images, np.ndarray):
                images = _decoded(images, reader._as_output) if decode else _objects(images)
            if reader.dense and not isinstance(targets, np.ndarray):
                targets = _decoded(targets, reader._as_target) if decode else _objects(targets)
            yield BlockAccessor.batch_to_block({"image": images, "mask" if reader.dense else "label": targets})

    class ShardDatasource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return sum(f.bytes for shard in reader.manifest.shards for f in shard.files.values())

        def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                           data_context: Any = None) -> list:
            tasks = []
            for shard in reader.manifest.shards:
                files = tuple(str(reader.dataset_path / f.name) for f in shard.files.values())
                metadata = BlockMetadata(num_rows=shard.num_samples, size_bytes=sum(f.bytes for f in shard.files.values()),
                                         input_files=files, exec_stats=None)
                tasks.append(ReadTask(lambda shard=shard.index: read_shard(shard), metadata,
                                      per_task_row_limit=per_task_row_limit))
            return tasks

        def get_name(self) -> str:
            return f"Raydsconv{reader.manifest.format.capitalize()}"

    return ShardDatasource()


def _decoded(payloads: list[bytes], decode: Any) -> np.ndarray:
    arrays = np.empty(len(payloads), dtype=object)  # ragged: every image keeps its own size
    for i, data in enumerate(payloads):
        arrays[i] = decode(data)
    return arrays


def _objects(payloads: list[bytes]) -> np.ndarray:
    values = np.empty(len(payloads), dtype=object)
    values[:] = payloads
    return values
