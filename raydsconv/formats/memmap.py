"""memmap: per shard, ``images-XXXXX.npy`` (N, H, W, C) uint8 — (N, H, W) for single-channel modes —
and ``labels-XXXXX.npy`` (N,) int64, or with dense labels ``masks-XXXXX.npy`` (N, H, W[, 3]) of the
mask dtype (uint8, or uint16 for mask_mode "I;16"). Real .npy files: ``np.load(path, mmap_mode="r")``
opens them."""

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
from raydsconv.masks import MaskSpec


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


def target_layout(params: dict[str, Any]) -> tuple[str, np.dtype, tuple[int, ...]]:
    """What is stored beside each image: (role, dtype, row shape) of the labels or the masks."""
    if params.get("dense"):
        spec = MaskSpec(params["mask_mode"], params["mask_pad_value"])
        return "masks", spec.dtype, spec.array_shape(tuple(params["shape"]))
    return "labels", np.dtype(np.int64), ()


class MemmapShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str]):
        super().__init__(root, shard, params, classes)
        self.target_role, dtype, row_shape = target_layout(params)
        self.final = {role: self.root / shard_file_name(role, shard, ".npy") for role in ("images", self.target_role)}
        self.appenders = {
            "images": NpyAppender(partial_path(self.final["images"]), np.uint8, image_row_shape(params)),
            self.target_role: NpyAppender(partial_path(self.final[self.target_role]), dtype, row_shape),
        }

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.appenders["images"].append(batch["image"])
        targets = batch["mask"] if self.target_role == "masks" else batch["label"]
        self.appenders[self.target_role].append(targets.astype(self.appenders[self.target_role].dtype, copy=False))

    def close(self) -> dict[str, ShardFile]:
        files = {}
        for role, appender in self.appenders.items():
            appender.finish()
            files[role] = commit_file(appender.path, self.final[role], self.root)
        return files

    def abort(self) -> None:
        for appender in self.appenders.values():
            appender.discard()


class MemmapShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        self._arrays: dict[tuple[str, int], np.ndarray] = {}

    def _array(self, role: str, shard: int) -> np.ndarray:
        """A shard's file, memory-mapped read-only (labels read whole: they are small), opened on first use."""
        if (role, shard) not in self._arrays:
            path = self.root / self.manifest.shards[shard].files[role].name
            self._arrays[role, shard] = np.load(path) if role == "labels" else np.load(path, mmap_mode="r")
        return self._arrays[role, shard]

    def read(self, shard: int, row: int) -> tuple[np.ndarray, Any]:
        image = np.array(self._array("images", shard)[row])
        if self.dense:
            return image, np.array(self._array("masks", shard)[row])
        return image, int(self._array("labels", shard)[row])

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        targets = self._array("masks" if self.dense else "labels", shard)
        return _gather(self._array("images", shard), rows), _gather(targets, rows)


def _gather(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for sorted rows of a memory map: one copy per contiguous run."""
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    position = 0
    for start, stop in contiguous_runs(rows):
        out[position : position + stop - start] = array[start:stop]
        position += stop - start
    return out


MEMMAP = Format(
    name="memmap",
    kind="fixed",
    writer=MemmapShardWriter,
    reader=MemmapShardReader,
    file_roles=("images", "labels"),
    dense_file_roles=("images", "masks"),
    required_params=("shape", "mode", "channels"),
    file_pattern=r"\.?(images|labels|masks)-\d+\.npy(\.partial)?",
)
