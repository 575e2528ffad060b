"""hdf5: per shard, ``images-XXXXX.h5`` with datasets ``images`` (N, H, W[, C]) uint8, chunked one
image per chunk so a random read touches one chunk, and one dataset per field of the target kind,
named by its ``stored_name``: class labels ``labels`` (N,) int64, masks ``masks`` (N, H, W[, 3])
chunked like the images. Optional compression (``gzip`` or ``lzf``). ``dataset.h5`` stitches all
shards into one virtual ``images`` and ``labels`` (or ``masks``, ...) array, so h5py or HDFView
users see the whole dataset as one array."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.formats.base import Format, ShardReader, ShardWriter, contiguous_runs
from raydsconv.formats.memmap import image_row_shape
from raydsconv.layout import write_atomically
from raydsconv.manifest import Manifest, Shard
from raydsconv.targets import stored_fields

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
        # libhdf5 seeks back as it writes: the file is hashed at commit.
        output = self.create("images", "images", ".h5", streamed=False)
        self.disk = _DiskFile(output.path)
        self.file = h5py.File(self.disk, "w", libver="latest")
        row_shape = image_row_shape(params)
        self.images = self.file.create_dataset(
            "images", shape=(0, *row_shape), maxshape=(None, *row_shape), chunks=(1, *row_shape),
            dtype=np.uint8, compression=params.get("compression"),
        )
        self.datasets = {"image": self.images}
        for item in self.fields:
            self.datasets[item.name] = self.file.create_dataset(
                item.file_stem, shape=(0, *item.shape), maxshape=(None, *item.shape),
                chunks=(1, *item.shape) if item.shape else (4096,), dtype=item.numpy_dtype,
                compression=params.get("compression") if item.shape else None,  # scalars: tiny, kept plain
            )
        self.file.attrs["mode"] = params["mode"]
        self.rows = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        count = len(batch["label"])
        for column, dataset in self.datasets.items():
            dataset.resize(self.rows + count, axis=0)
            dataset[self.rows :] = batch[column]
        self.rows += count
        self.disk.check()  # a full disk: stop at once

    def finish(self) -> None:
        self.file.close()
        self.disk.close()
        self.disk.check()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the file is discarded anyway
            if self.file.id.valid:
                self.file.close()
            self.disk.close()
        super().abort()


class _DiskFile:
    """The file libhdf5 writes an HDF5 file through (h5py's "fileobj" driver), which never reports
    a failed write to libhdf5: after one (a full disk), libhdf5 crashes the process (SIGSEGV in
    H5D_close) when the file's datasets are closed, whatever is tried. The first error is kept
    instead and later writes are dropped (the file is discarded); ``check()`` raises it."""

    def __init__(self, path: Path):
        self._file = open(path, "w+b", buffering=0)  # unbuffered: seek() never writes
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            try:
                done += self._file.write(view[done:])  # may write part of it
            except OSError as error:
                self.error = error
        return len(view)

    def truncate(self, size: int | None = None) -> int | None:
        if self.error is None:
            try:
                self._file.truncate(size)
            except OSError as error:
                self.error = error
        return size

    def flush(self) -> None:
        pass  # unbuffered

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


class HDF5ShardReader(ShardReader):
    def _shard(self, shard: int) -> tuple[Any, Any, dict[str, Any]]:
        """(file, images, fields by name) of a shard, opened on first use, kept while recently used."""
        return self.open_shards.get(shard, lambda: self._open(shard), close=lambda opened: opened[0].close())

    def _open(self, shard: int) -> tuple[Any, Any, dict[str, Any]]:
        import h5py

        try:
            file = h5py.File(self.root / self.file_name(shard, "images"), "r")
        except OSError as error:
            raise self.corrupt(shard, "images", f"not a readable HDF5 file ({error})") from None
        try:
            self._check_datasets(file, shard)
            # Dataset lookups cost as much as a small read: keep the handles, and scalars (labels) in memory.
            return file, file["images"], {item.name: file[item.file_stem][()] if not item.shape else file[item.file_stem]
                                          for item in self.fields}
        except BaseException:
            file.close()
            raise

    def _check_datasets(self, file: Any, shard: int) -> None:
        for name, dtype, row_shape in (("images", np.dtype(np.uint8), image_row_shape(self.manifest.params)),
                                       *((item.file_stem, item.numpy_dtype, item.shape) for item in self.fields)):
            dataset = file.get(name)
            if dataset is None or dataset.dtype != dtype or dataset.shape[1:] != row_shape:
                found = "nothing" if dataset is None else f"{dataset.dtype}{list(dataset.shape[1:])} rows"
                raise self.corrupt(shard, "images", f"dataset {name!r} holds {found}, the manifest says "
                                                    f"{dtype}{list(row_shape)}")
            self.check_rows(shard, "images", len(dataset), unit=name)

    def check(self, shard: int) -> np.ndarray | None:
        _, _, fields = self._shard(shard)
        labels = self.class_field()
        return None if labels is None else fields[labels.name]

    def read(self, shard: int, row: int) -> tuple[np.ndarray, dict[str, Any]]:
        _, images, fields = self._shard(shard)
        return images[row], {name: values[row] for name, values in fields.items()}

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        _, images, fields = self._shard(shard)
        return _read_runs(images, rows), {name: values[rows] if isinstance(values, np.ndarray) else _read_runs(values, rows)
                                          for name, values in fields.items()}


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
    fields = stored_fields(params)

    def write(temporary: Path) -> None:
        disk = _DiskFile(temporary)  # a full disk must not crash the driver (see _DiskFile)
        try:
            with h5py.File(disk, "w", libver="latest") as file:
                _virtual_dataset(file, "images", np.dtype(np.uint8), row_shape, shards)
                for item in fields:
                    _virtual_dataset(file, item.file_stem, item.numpy_dtype, item.shape, shards)
        finally:
            disk.close()
        disk.check()

    write_atomically(root / VIRTUAL_DATASET, write)
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


def check_virtual_dataset(root: Path, manifest: Manifest) -> list[tuple[str, str]]:
    """dataset.h5 maps every shard's rows, in order, with the manifest's shapes."""
    import h5py

    fields = stored_fields(manifest.params)
    expected_sources = ["./" + shard.files["images"].name for shard in manifest.shards if shard.num_samples]
    try:
        with h5py.File(root / VIRTUAL_DATASET, "r") as file:
            for name, row_shape in (("images", image_row_shape(manifest.params)),
                                    *((item.file_stem, item.shape) for item in fields)):
                dataset = file.get(name)
                if dataset is None or dataset.shape != (manifest.num_samples, *row_shape):
                    found = "nothing" if dataset is None else f"shape {dataset.shape}"
                    return [(VIRTUAL_DATASET, f"dataset {name!r} holds {found}, the manifest says "
                                              f"{(manifest.num_samples, *row_shape)}")]
                sources = [source.file_name for source in dataset.virtual_sources()] if dataset.is_virtual else []
                if sources != expected_sources:
                    return [(VIRTUAL_DATASET, f"dataset {name!r} does not map the manifest's shards in order")]
    except OSError as error:
        return [(VIRTUAL_DATASET, f"not a readable HDF5 file ({error})")]
    return []


HDF5 = Format(
    name="hdf5",
    kind="fixed",
    writer=HDF5ShardWriter,
    reader=HDF5ShardReader,
    file_roles=("images",),
    required_params=("shape", "mode", "channels"),
    file_pattern=r"images-\d+\.h5|dataset\.h5",
    options=Hdf5Options,
    finalize=write_virtual_dataset,
    dataset_files=(VIRTUAL_DATASET,),
    check_dataset=check_virtual_dataset,
)
