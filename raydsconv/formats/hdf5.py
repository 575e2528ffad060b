"""hdf5: per shard, ``images-XXXXX.h5`` with datasets ``images`` (N, H, W[, C]) uint8, chunked one
image per chunk so a random read touches one chunk, and ``labels`` (N,) int64. Optional
compression (``gzip`` or ``lzf``). ``dataset.h5`` stitches all shards into one virtual ``images``
and ``labels`` array, so h5py or HDFView users see the whole dataset as one array."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.formats.base import (
    Format,
    ShardReader,
    ShardWriter,
    commit_file,
    contiguous_runs,
    partial_path,
    shard_file_name,
)
from raydsconv.formats.memmap import image_row_shape
from raydsconv.manifest import Manifest, Shard, ShardFile

VIRTUAL_DATASET = "dataset.h5"
COMPRESSIONS = (None, "gzip", "lzf")


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    compression = options.get("compression")
    if compression not in COMPRESSIONS:
        raise InvalidArgumentError(f"hdf5 compression must be one of gzip, lzf or None, got {compression!r}")
    return {"compression": compression}


class HDF5ShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str]):
        import h5py

        super().__init__(root, shard, params, classes)
        self.final = self.root / shard_file_name("images", shard, ".h5")
        self.temporary = partial_path(self.final)
        self.file = h5py.File(self.temporary, "w", libver="latest")
        row_shape = image_row_shape(params)
        self.images = self.file.create_dataset(
            "images", shape=(0, *row_shape), maxshape=(None, *row_shape), chunks=(1, *row_shape),
            dtype=np.uint8, compression=params.get("compression"),
        )
        self.labels = self.file.create_dataset("labels", shape=(0,), maxshape=(None,), chunks=(4096,), dtype=np.int64)
        self.file.attrs["mode"] = params["mode"]
        self.rows = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        count = len(batch["label"])
        self.images.resize(self.rows + count, axis=0)
        self.labels.resize(self.rows + count, axis=0)
        self.images[self.rows :] = batch["image"]
        self.labels[self.rows :] = batch["label"]
        self.rows += count

    def close(self) -> dict[str, ShardFile]:
        self.file.close()
        return {"images": commit_file(self.temporary, self.final, self.root)}

    def abort(self) -> None:
        if self.file.id.valid:
            self.file.close()
        self.temporary.unlink(missing_ok=True)


class HDF5ShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        self._shards: dict[int, tuple[Any, Any, np.ndarray]] = {}  # shard -> (file, images, labels)

    def _shard(self, shard: int) -> tuple[Any, Any, np.ndarray]:
        if shard not in self._shards:
            import h5py

            file = h5py.File(self.root / self.manifest.shards[shard].files["images"].name, "r")
            # Dataset lookups cost as much as a small read: keep the handles, and the labels in memory.
            self._shards[shard] = (file, file["images"], file["labels"][()])
        return self._shards[shard]

    def read(self, shard: int, row: int) -> tuple[np.ndarray, int]:
        _, images, labels = self._shard(shard)
        return images[row], int(labels[row])

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, images, labels = self._shard(shard)
        out = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
        position = 0
        for start, stop in contiguous_runs(rows):
            images.read_direct(out, np.s_[start:stop], np.s_[position : position + stop - start])
            position += stop - start
        return out, labels[rows]


def write_virtual_dataset(root: Path, shards: list[Shard], params: dict[str, Any]) -> dict[str, Any]:
    """The top-level file whose ``images``/``labels`` map onto every shard, in sample order."""
    import h5py

    row_shape = image_row_shape(params)
    total = sum(shard.num_samples for shard in shards)
    images = h5py.VirtualLayout(shape=(total, *row_shape), dtype=np.uint8)
    labels = h5py.VirtualLayout(shape=(total,), dtype=np.int64)
    start = 0
    for shard in shards:
        count = shard.num_samples
        if count:
            name = "./" + shard.files["images"].name  # relative: resolved beside dataset.h5
            images[start : start + count] = h5py.VirtualSource(name, "images", shape=(count, *row_shape))
            labels[start : start + count] = h5py.VirtualSource(name, "labels", shape=(count,))
        start += count
    temporary = partial_path(root / VIRTUAL_DATASET)
    with h5py.File(temporary, "w", libver="latest") as file:
        file.create_virtual_dataset("images", images)
        file.create_virtual_dataset("labels", labels)
    temporary.replace(root / VIRTUAL_DATASET)
    return {"virtual_dataset": VIRTUAL_DATASET}


HDF5 = Format(
    name="hdf5",
    kind="fixed",
    writer=HDF5ShardWriter,
    reader=HDF5ShardReader,
    file_roles=("images",),
    required_params=("shape", "mode", "channels"),
    file_pattern=r"\.?images-\d+\.h5(\.partial)?|\.?dataset\.h5(\.partial)?",
    check_options=check_options,
    finalize=write_virtual_dataset,
)
