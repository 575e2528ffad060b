"""ipc: per shard, ``samples-XXXXX.arrow``, an Arrow IPC *file* with record batches of many rows
(``batch_rows``, default 256), read through a memory map with zero copies."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raydsconv.errors import CorruptDatasetError, InvalidArgumentError
from raydsconv.formats.arrow_table import batch_to_table, row_image_and_fields, sample_schema
from raydsconv.formats.base import Format, ShardReader, ShardWriter

DEFAULT_BATCH_ROWS = 256


@dataclass(frozen=True)
class IpcOptions:
    batch_rows: int = DEFAULT_BATCH_ROWS

    def __post_init__(self) -> None:
        rows = self.batch_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows <= 0:
            raise InvalidArgumentError(f"ipc batch_rows must be a positive integer, got {rows!r}")


class IpcShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        super().__init__(root, shard, params, classes, expected_rows=expected_rows)
        self.schema = sample_schema(classes, self.fields)
        self.writer = pa.ipc.new_file(self.create("samples", "samples", ".arrow"), self.schema)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.pending.append(batch_to_table(batch, self.schema, self.fields))
        self.pending_rows += len(batch["label"])
        if self.pending_rows >= self.params["batch_rows"]:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write whole ``batch_rows`` batches (and, at the end, the rest): the layout depends on
        the row count alone, not on how rows arrived."""
        rows = self.params["batch_rows"]
        table = pa.concat_tables(self.pending) if self.pending else None
        start = 0
        while table is not None and (table.num_rows - start >= rows or (final and start < table.num_rows)):
            chunk = table.slice(start, rows).combine_chunks()
            for record_batch in chunk.to_batches(max_chunksize=rows):
                self.writer.write_batch(record_batch)
            start += chunk.num_rows
        self.pending = [table.slice(start)] if table is not None and start < table.num_rows else []
        self.pending_rows = table.num_rows - start if table is not None else 0

    def finish(self) -> None:
        self._flush(final=True)
        self.writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the half-written file is discarded anyway
            self.writer.close()
        super().abort()


class IpcShardReader(ShardReader):
    def _file(self, shard: int) -> tuple[pa.ipc.RecordBatchFileReader, np.ndarray]:
        """(reader, cumulative batch sizes) over a memory map, opened on first use, kept while recently used."""
        opened = self.open_shards.get(shard, lambda: self._open(shard), close=lambda opened: opened[2].close())
        return opened[0], opened[1]

    def _open(self, shard: int) -> tuple[pa.ipc.RecordBatchFileReader, np.ndarray, pa.MemoryMappedFile]:
        source = None
        try:
            source = pa.memory_map(str(self.root / self.file_name(shard, "samples")), "r")
            reader = pa.ipc.open_file(source)
            sizes = [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]
            self.check_rows(shard, "samples", int(sum(sizes)))
        except CorruptDatasetError:
            source.close()
            raise
        except Exception as error:  # pyarrow raises several kinds for a damaged file
            if source is not None:
                source.close()
            raise self.corrupt(shard, "samples", f"not a readable Arrow IPC file ({error})") from None
        return reader, np.cumsum(sizes), source

    def check(self, shard: int) -> np.ndarray | None:
        reader, _ = self._file(shard)
        if self.class_field() is None:
            return None
        labels = [reader.get_batch(b).column("label").to_numpy() for b in range(reader.num_record_batches)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)

    def read(self, shard: int, row: int) -> tuple[bytes, dict[str, Any]]:
        reader, ends = self._file(shard)
        index = int(np.searchsorted(ends, row, side="right"))
        start = int(ends[index - 1]) if index else 0
        return row_image_and_fields(reader.get_batch(index), row - start, self.fields)  # zero-copy view of the map


IPC = Format(
    name="ipc",
    kind="flexible",
    writer=IpcShardWriter,
    reader=IpcShardReader,
    file_roles=("samples",),
    file_pattern=r"samples-\d+\.arrow",
    options=IpcOptions,
)
