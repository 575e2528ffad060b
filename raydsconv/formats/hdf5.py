"""hdf5: per shard, ``images-XXXXX.h5`` with datasets ``images`` (N, H, W[, C]) uint8, chunked one
image per chunk so a random read touches one chunk, and ``labels`` (N,) int64 — or with dense
labels ``masks`` (N, H, W[, 3]), chunked like the images. Optional compression (``gzip`` or
``lzf``). ``dataset.h5`` stitches all shards into one virtual ``images`` and ``labels`` (or
``masks``) array, so h5py or HDFView users see the whole dataset as one array."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.formats.base import Format, ShardReader, ShardWriter, contiguous_runs
from raydsconv.formats.memmap import image_row_shape, target_layout
from raydsconv.layout import partial_path
from raydsconv.manifest import Manifest, Shard

VIRTUAL_DATASET = "dataset.h5"
COMPRESSIONS = (None, "gzip", "lzf")


@dataclass(frozen=True)
class Hdf5Options:
    compression: str | None = None  # gzip or lzf

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise InvalidArgumentError(f"hdf5 compression must be one of gzip, lzf or None, got {self.compression!r}")


class HDF5ShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        import h5py

        super().__init__(root, shard, params, classes, expected_rows=expected_rows)
        # libhdf5 writes through its own file driver, seeking back: the file is hashed at commit.
        output = self.create("images", "images", ".h5", streamed=False)
        self.file = h5py.File(output.path, "w", libver="latest")
        row_shape = image_row_shape(params)
        self.images = self.file.create_dataset(
            "images", shape=(0, *row_shape), maxshape=(None, *row_shape), chunks=(1, *row_shape),
            dtype=np.uint8, compression=params.get("compression"),
        )
        self.target_role, dtype, target_shape = target_layout(params)
        self.targets = self.file.create_dataset(
            self.target_role, shape=(0, *target_shape), maxshape=(None, *target_shape),
            chunks=(1, *target_shape) if target_shape else (4096,), dtype=dtype,
            compression=params.get("compression") if target_shape else None,  # labels: tiny, kept plain
        )
        self.file.attrs["mode"] = params["mode"]
        self.rows = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        count = len(batch["label"])
        self.images.resize(self.rows + count, axis=0)
        self.targets.resize(self.rows + count, axis=0)
        self.images[self.rows :] = batch["image"]
        self.targets[self.rows :] = batch["mask"] if self.target_role == "masks" else batch["label"]
        self.rows += count

    def finish(self) -> None:
        self.file.close()

    def abort(self) -> None:
        if self.file.id.valid:
            self.file.close()
        super().abort()


class HDF5ShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        self._shards: dict[int, tuple[Any, Any, Any]] = {}  # shard -> (file, images, labels or masks)

    def _shard(self, shard: int) -> tuple[Any, Any, Any]:
        if shard not in self._shards:
            import h5py

            file = h5py.File(self.root / self.manifest.shards[shard].files["images"].name, "r")
            # Dataset lookups cost as much as a small read: keep the handles, and the labels in memory.
            targets = file["masks"] if self.dense else file["labels"][()]
            self._shards[shard] = (file, file["images"], targets)
        return self._shards[shard]

    def read(self, shard: int, row: int) -> tuple[np.ndarray, Any]:
        _, images, targets = self._shard(shard)
        return images[row], (targets[row] if self.dense else int(targets[row]))

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, images, targets = self._shard(shard)
        return _read_runs(images, rows), (_read_runs(targets, rows) if self.dense else targets[rows])


def _read_runs(dataset: Any, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for sorted rows: one read per contiguous run, straight into the result."""
    out = np.empty((len(rows), *dataset.shape[1:]), dtype=dataset.dtype)
    position = 0
    for start, stop in contiguous_runs(rows):
        dataset.read_direct(out, np.s_[start:stop], np.s_[position : position + stop - start])
        position += stop - start
    return out


def write_virtual_dataset(root: Path, shards: list[Shard], params: dict[str, Any]) -> dict[str, Any]:
    """The top-level file whose ``images``/``labels`` map onto every shard, in sample order."""
    import h5py

    row_shape = image_row_shape(params)
    target_role, target_dtype, target_shape = target_layout(params)
    temporary = partial_path(root / VIRTUAL_DATASET)
    with h5py.File(temporary, "w", libver="latest") as file:
        _virtual_dataset(file, "images", np.dtype(np.uint8), row_shape, shards)
        _virtual_dataset(file, target_role, target_dtype, target_shape, shards)
    os.replace(temporary, root / VIRTUAL_DATASET)
    return {"virtual_dataset": VIRTUAL_DATASET}


def _virtual_dataset(file: Any, name: str, dtype: np.dtype, row_shape: tuple[int, ...], shards: list[Shard]) -> None:
    """One virtual dataset stitching ``name`` of every shard file. Built with h5py's low-level API
    because only there can the creation time be left out, which keeps the file's bytes the same
    from one run to the next (h5py's VirtualLayout records it)."""
    from h5py import h5d, h5p, h5s, h5t

    total = sum(shard.num_samples for shard in shards)
    properties = h5p.create(h5p.DATASET_CREATE)
    properties.set_obj_track_times(False)
    space = h5s.create_simple((total, *row_shape))
    start = 0
    for shard in shards:
        count = shard.num_samples
        if count:
            space.select_hyperslab((start, *(0,) * len(row_shape)), (count, *row_shape))
            source = "./" + shard.files["images"].name  # relative: resolved beside dataset.h5
            properties.set_virtual(space, source.encode(), name.encode(), h5s.create_simple((count, *row_shape)))
        start += count
    h5d.create(file.id, name.encode(), h5t.py_create(dtype), h5s.create_simple((total, *row_shape)),
               dcpl=properties).close()


HDF5 = Format(
    name="hdf5",
    kind="fixed",
    writer=HDF5ShardWriter,
    reader=HDF5ShardReader,
    file_roles=("images",),
    dense_file_roles=("images",),
    required_params=("shape", "mode", "channels"),
    file_pattern=r"images-\d+\.h5|dataset\.h5",
    options=Hdf5Options,
    finalize=write_virtual_dataset,
)
