"""memmap: per shard, ``images-XXXXX.npy`` (N, H, W, C) uint8 — (N, H, W) for single-channel modes —
and ``labels-XXXXX.npy`` (N,) int64. Real .npy files: ``np.load(path, mmap_mode="r")`` opens them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from raydsconv.formats.base import (
    Format,
    ShardReader,
    ShardWriter,
    commit_file,
    contiguous_runs,
    partial_path,
    shard_file_name,
)
from raydsconv.manifest import Manifest, ShardFile


class NpyAppender:
    """Streams rows into a .npy whose final row count is only known at the end.

    numpy pads .npy headers so the first dimension can grow to 21 digits in place; we write the
    header for 0 rows, append raw rows, then rewrite the header with the real count.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self.file: BinaryIO = open(path, "wb")
        self.header_size = self._write_header()

    def _write_header(self) -> int:
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows, *self.row_shape)}
        np.lib.format.write_array_header_1_0(self.file, header)
        return self.file.tell()

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"{self.path}: rows of {rows.dtype}{rows.shape[1:]} do not fit {self.dtype}{self.row_shape}")
        self.file.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def finish(self) -> None:
        self.file.seek(0)
        if self._write_header() != self.header_size:
            raise RuntimeError(f"{self.path}: .npy header changed size; cannot finalise in place")
        self.file.close()

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def image_row_shape(params: dict[str, Any]) -> tuple[int, ...]:
    height, width = params["shape"]
    channels = params["channels"]
    return (height, width) if channels == 1 else (height, width, channels)


class MemmapShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str]):
        super().__init__(root, shard, params, classes)
        self.images_path = self.root / shard_file_name("images", shard, ".npy")
        self.labels_path = self.root / shard_file_name("labels", shard, ".npy")
        self.images = NpyAppender(partial_path(self.images_path), np.uint8, image_row_shape(params))
        self.labels = NpyAppender(partial_path(self.labels_path), np.int64, ())

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.images.append(batch["image"])
        self.labels.append(batch["label"].astype(np.int64, copy=False))

    def close(self) -> dict[str, ShardFile]:
        files = {}
        for role, appender, final in (("images", self.images, self.images_path), ("labels", self.labels, self.labels_path)):
            appender.finish()
            files[role] = commit_file(appender.path, final, self.root)
        return files

    def abort(self) -> None:
        self.images.discard()
        self.labels.discard()


class MemmapShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        self._images: dict[int, np.ndarray] = {}
        self._labels: dict[int, np.ndarray] = {}

    def images(self, shard: int) -> np.ndarray:
        """The shard's image array, memory-mapped read-only (opened on first use)."""
        if shard not in self._images:
            name = self.manifest.shards[shard].files["images"].name
            self._images[shard] = np.load(self.root / name, mmap_mode="r")
        return self._images[shard]

    def labels(self, shard: int) -> np.ndarray:
        if shard not in self._labels:
            name = self.manifest.shards[shard].files["labels"].name
            self._labels[shard] = np.load(self.root / name)
        return self._labels[shard]

    def read(self, shard: int, row: int) -> tuple[np.ndarray, int]:
        return np.array(self.images(shard)[row]), int(self.labels(shard)[row])

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.images(shard)
        out = np.empty((len(rows), *images.shape[1:]), dtype=images.dtype)
        position = 0
        for start, stop in contiguous_runs(rows):
            out[position : position + stop - start] = images[start:stop]
            position += stop - start
        return out, self.labels(shard)[rows]


MEMMAP = Format(
    name="memmap",
    kind="fixed",
    writer=MemmapShardWriter,
    reader=MemmapShardReader,
    file_roles=("images", "labels"),
    required_params=("shape", "mode", "channels"),
    file_pattern=r"\.?(images|labels)-\d+\.npy(\.partial)?",
)
