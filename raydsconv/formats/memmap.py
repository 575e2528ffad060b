"""memmap: per shard, ``images-XXXXX.npy`` (N, H, W, C) uint8 — (N, H, W) for single-channel modes —
and a file per field of the target kind, ``{stored_name}-XXXXX.npy`` (N, *shape) of its dtype: class
labels ``labels-XXXXX.npy`` (N,) int64, masks ``masks-XXXXX.npy`` (N, H, W[, 3]) uint8 (uint16 for
mask_mode "I;16"), nothing for unlabeled images. Real .npy files: ``np.load(path, mmap_mode="r")``
opens them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from raydsconv.formats.base import Format, OutputFile, ShardReader, ShardWriter, contiguous_runs


class NpyAppender:
    """Streams rows into a .npy whose final row count is only known at the end.

    numpy pads .npy headers so the first dimension can grow to 21 digits in place. The header is
    written for ``expected_rows`` (the shard's inputs: right unless some are skipped), rows are
    appended, and a header with the real count is patched in only when it differs.
    """

    def __init__(self, file: OutputFile, dtype: np.dtype, row_shape: tuple[int, ...], expected_rows: int = 0):
        self.file = file
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.expected_rows = expected_rows
        self.rows = 0
        header = self._header(expected_rows)
        self.file.write(header)
        self.header_size = len(header)

    def _header(self, rows: int) -> bytes:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                      "fortran_order": False, "shape": (rows, *self.row_shape)})
        return header.getvalue()

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"{self.file.final}: rows of {rows.dtype}{rows.shape[1:]} do not fit {self.dtype}{self.row_shape}")
        self.file.write(np.ascontiguousarray(rows).data)
        self.rows += len(rows)

    def finish(self) -> None:
        if self.rows != self.expected_rows:
            header = self._header(self.rows)
            if len(header) != self.header_size:
                raise RuntimeError(f"{self.file.final}: .npy header changed size; cannot finalise in place")
            self.file.patch(0, header)


def image_row_shape(params: dict[str, Any]) -> tuple[int, ...]:
    height, width = params["shape"]
    channels = params["channels"]
    return (height, width) if channels == 1 else (height, width, channels)


class MemmapShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        super().__init__(root, shard, params, classes, expected_rows=expected_rows)
        rows = expected_rows or 0
        self.appenders = {"image": NpyAppender(self.create("images", "images", ".npy"), np.uint8,
                                               image_row_shape(params), rows)}
        for item in self.fields:
            file = self.create(item.file_stem, item.file_stem, ".npy")
            self.appenders[item.name] = NpyAppender(file, item.numpy_dtype, item.shape, rows)

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for column, appender in self.appenders.items():
            appender.append(batch[column].astype(appender.dtype, copy=False))

    def finish(self) -> None:
        for appender in self.appenders.values():
            appender.finish()


class MemmapShardReader(ShardReader):
    def _array(self, role: str, shard: int) -> np.ndarray:
        return self.open_shards.get((role, shard), lambda: self._open(role, shard))

    def _open(self, role: str, shard: int) -> np.ndarray:
        """A shard's file, memory-mapped read-only (scalar fields read whole: they are small), checked
        against the manifest's count, shape and dtype. Closed by dropping it (numpy unmaps it)."""
        path = self.root / self.file_name(shard, role)
        dtype, row_shape = self._layout(role)
        try:
            array = np.load(path) if not row_shape and role != "images" else np.load(path, mmap_mode="r")
        except (OSError, ValueError, EOFError) as error:
            raise self.corrupt(shard, role, f"not a readable .npy file ({error})") from None
        if array.dtype != dtype or array.shape[1:] != row_shape:
            raise self.corrupt(shard, role, f"holds {array.dtype}{list(array.shape[1:])} rows, the manifest "
                                            f"says {dtype}{list(row_shape)}")
        self.check_rows(shard, role, len(array))
        return array

    def _layout(self, role: str) -> tuple[np.dtype, tuple[int, ...]]:
        if role == "images":
            return np.dtype(np.uint8), image_row_shape(self.manifest.params)
        item = next(item for item in self.fields if item.file_stem == role)
        return item.numpy_dtype, tuple(item.shape)

    def check(self, shard: int) -> np.ndarray | None:
        self._array("images", shard)
        for item in self.fields:
            self._array(item.file_stem, shard)
        labels = self.class_field()
        return None if labels is None else self._array(labels.file_stem, shard)

    def read(self, shard: int, row: int) -> tuple[np.ndarray, dict[str, Any]]:
        image = np.array(self._array("images", shard)[row])
        return image, {item.name: np.array(self._array(item.file_stem, shard)[row]) for item in self.fields}

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        return (_gather(self._array("images", shard), rows),
                {item.name: _gather(self._array(item.file_stem, shard), rows) for item in self.fields})


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
    file_roles=("images",),
    field_files=True,
    required_params=("shape", "mode", "channels"),
    file_pattern=r"[a-z][a-z0-9_]*-\d{5,}\.npy",  # images, and a file per field (labels, masks, ...)
)
