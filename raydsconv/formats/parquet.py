"""parquet: per shard, ``samples-XXXXX.parquet``, one row per sample (see arrow_table for the
columns). Row groups are small (``row_group_size`` rows, default 2) so that a random read decodes
little more than its own sample; readers keep each opened file per worker."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raydsconv.errors import CorruptDatasetError, InvalidArgumentError
from raydsconv.formats.arrow_table import batch_to_table, row_image_and_fields, sample_schema
from raydsconv.formats.base import Format, ShardReader, ShardWriter
from raydsconv.manifest import Manifest

DEFAULT_ROW_GROUP_SIZE = 2


@dataclass(frozen=True)
class ParquetOptions:
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE

    def __post_init__(self) -> None:
        size = self.row_group_size
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidArgumentError(f"parquet row_group_size must be a positive integer, got {size!r}")


class ParquetShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        super().__init__(root, shard, params, classes, expected_rows=expected_rows)
        self.schema = sample_schema(classes, self.fields)
        # Images are already compressed: page compression would cost time and save nothing.
        self.writer = pq.ParquetWriter(self.create("samples", "samples", ".parquet"), self.schema, compression="none",
                                       use_dictionary=["path", "source_format"])
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        # Row groups are cut by row count alone, so the file does not depend on how rows arrive.
        self.pending.append(batch_to_table(batch, self.schema, self.fields))
        self.pending_rows += len(batch["label"])
        size = self.params["row_group_size"]
        if self.pending_rows >= size:
            table = pa.concat_tables(self.pending)
            full = self.pending_rows // size * size
            self.writer.write_table(table.slice(0, full), row_group_size=size)
            self.pending, self.pending_rows = [table.slice(full)], self.pending_rows - full

    def finish(self) -> None:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.params["row_group_size"])
        self.writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the half-written file is discarded anyway
            self.writer.close()
        super().abort()


class ParquetShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        self._cached: tuple[int, int, Any] | None = None  # the last row group read

    def _file(self, shard: int) -> tuple[pq.ParquetFile, np.ndarray]:
        """(file, cumulative row-group sizes), opened on first use, kept while recently used."""
        return self.open_shards.get(shard, lambda: self._open(shard), close=lambda opened: opened[0].close())

    def _open(self, shard: int) -> tuple[pq.ParquetFile, np.ndarray]:
        try:
            file = pq.ParquetFile(self.root / self.file_name(shard, "samples"))
        except Exception as error:  # pyarrow raises several kinds for a damaged file
            raise self.corrupt(shard, "samples", f"not a readable Parquet file ({error})") from None
        sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
        try:
            self.check_rows(shard, "samples", int(sum(sizes)))
        except CorruptDatasetError:
            file.close()
            raise
        return file, np.cumsum(sizes)

    def check(self, shard: int) -> np.ndarray | None:
        file, _ = self._file(shard)
        if self.class_field() is None:
            return None
        try:
            return file.read(columns=["label"]).column("label").to_numpy()
        except Exception as error:
            raise self.corrupt(shard, "samples", f"its labels cannot be read ({error})") from None

    def read(self, shard: int, row: int) -> tuple[bytes, dict[str, Any]]:
        file, ends = self._file(shard)
        group = int(np.searchsorted(ends, row, side="right"))
        if self._cached is None or self._cached[:2] != (shard, group):
            self._cached = (shard, group, file.read_row_group(group, columns=["image", *(item.name for item in self.fields)]))
        start = int(ends[group - 1]) if group else 0
        return row_image_and_fields(self._cached[2], row - start, self.fields)


PARQUET = Format(
    name="parquet",
    kind="flexible",
    writer=ParquetShardWriter,
    reader=ParquetShardReader,
    file_roles=("samples",),
    file_pattern=r"samples-\d+\.parquet",
    options=ParquetOptions,
)
