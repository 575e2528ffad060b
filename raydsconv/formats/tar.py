"""tar: per shard, ``samples-XXXXX.tar`` in the WebDataset layout. Each sample is adjacent members:
``{key}.{ext}`` (the original image bytes, ext from the detected format), a member per field of the
target kind, and ``{key}.json`` (source path, class name, size). Fields: class labels ``{key}.cls``
(the label as text), masks ``{key}.mask.{ext}`` (the mask file's bytes), other array fields
``{key}.{name}.npy``; unlabeled images none. ``key`` is the sample's global input number,
zero-padded to 9 digits. Members are written deterministically (mtime 0, owner root) so the same
input gives the same bytes.

The random-access reader never scans a tar: the byte offset and size of each image (and field)
member are recorded in the index at write time (class labels are the index's ``label``), and read
back with ``os.pread`` (no shared file position, so forked DataLoader workers cannot disturb one
another)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydsconv.formats.base import Format, ShardReader, ShardWriter
from raydsconv.manifest import Manifest
from raydsconv.targets import Field

KEY_DIGITS = 9
BLOCK = tarfile.BLOCKSIZE  # a member's header, and the unit its data is padded to


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def sample_key(candidate: int) -> str:
    return f"{candidate:0{KEY_DIGITS}d}"


class TarShardWriter(ShardWriter):
    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        super().__init__(root, shard, params, classes, expected_rows=expected_rows)
        self.tar = tarfile.open(fileobj=self.create("samples", "samples", ".tar"), mode="w",
                                format=tarfile.USTAR_FORMAT)
        self.placement: dict[str, list[int]] = {"data_offset": [], "data_size": []}
        for item in _placed(self.fields):
            self.placement.update({f"{item.name}_offset": [], f"{item.name}_size": []})

    def _add_member(self, name: str, data: bytes) -> int:
        """Append one member; return the offset of its data in the file."""
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        header_size = len(info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors))
        offset = self.tar.offset + header_size
        self.tar.addfile(info, io.BytesIO(data))
        self.tar.members.clear()  # tarfile keeps every member's TarInfo; a writer never needs them again
        return offset

    def _add_placed(self, name: str, data: bytes, column: str) -> None:
        """A member whose place the index records, for reading without scanning the tar."""
        self.placement[f"{column}_offset"].append(self._add_member(name, data))
        self.placement[f"{column}_size"].append(len(data))

    def add(self, batch: dict[str, np.ndarray]) -> None:
        for i in range(len(batch["label"])):
            key = sample_key(int(batch["candidate"][i]))
            self._add_placed(f"{key}.{batch['extension'][i]}", batch["data"][i], "data")
            for item in self.fields:
                value = batch[item.data_column][i]
                if item.indexed:  # a class label, as WebDataset's .cls: text
                    self._add_member(f"{key}.{item.member_suffix}", str(int(value)).encode())
                elif item.encoded:
                    self._add_placed(f"{key}.{item.member_suffix}.{batch[item.extension_column][i]}", value, item.name)
                else:
                    self._add_placed(f"{key}.{item.member_suffix}.npy", _npy_bytes(value, item), item.name)
            description = {"path": str(batch["path"][i]),
                           **self.target.describe({item.name: batch[item.data_column][i] for item in self.fields},
                                                  self.classes),
                           "width": int(batch["width"][i]), "height": int(batch["height"][i])}
            self._add_member(f"{key}.json", json.dumps(description).encode())

    def finish(self) -> None:
        self.tar.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the half-written file is discarded anyway
            self.tar.close()
        super().abort()

    def index_columns(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(values, dtype=np.int64) for name, values in self.placement.items()}


class TarShardReader(ShardReader):
    def __init__(self, root: Path, manifest: Manifest):
        super().__init__(root, manifest)
        import pyarrow.parquet as pq

        placed = ["data_offset", "data_size", *(f"{item.name}_{what}" for item in _placed(self.fields)
                                                 for what in ("offset", "size"))]
        index = pq.read_table(self.root / manifest.index_file, columns=["label", *placed])
        self._index = {name: index.column(name).to_numpy() for name in index.column_names}
        self._starts = np.concatenate([[0], np.cumsum([s.num_samples for s in manifest.shards])])

    def _descriptor(self, shard: int) -> int:
        """The shard's file, opened and walked (``check``) on first use, kept while recently used."""
        return self.open_shards.get(shard, lambda: self._open(shard), close=os.close)

    def _open(self, shard: int) -> int:
        descriptor = os.open(self.root / self.file_name(shard, "samples"), os.O_RDONLY)
        try:
            self._walk(shard, descriptor)
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _member(self, shard: int, sample: int, column: str) -> bytes:
        size, offset = int(self._index[f"{column}_size"][sample]), int(self._index[f"{column}_offset"][sample])
        return os.pread(self._descriptor(shard), size, offset)

    def check(self, shard: int) -> np.ndarray | None:
        return self._walk(shard, self._descriptor(shard))

    def _walk(self, shard: int, descriptor: int) -> np.ndarray | None:
        """Walk the shard's member headers (a few small reads per sample): every sample's members
        contiguous and where the index places them, nothing after the manifest's count; the labels of
        the ``.cls`` members must be the index's (readers take labels from the index) and are returned."""
        walk = _MemberWalk(descriptor, lambda problem: self.corrupt(shard, "samples", problem))
        labels = []
        for sample in range(int(self._starts[shard]), int(self._starts[shard + 1])):
            image = walk.next_member(int(self._index["data_offset"][sample]), int(self._index["data_size"][sample]))
            key = image.name.split(".", 1)[0]
            for item in self.fields:
                if item.indexed:
                    labels.append(walk.label(key))
                    if labels[-1] != int(self._index["label"][sample]):
                        raise walk.fail(f"member {key}.{item.member_suffix} holds label {labels[-1]}, "
                                        f"the index {int(self._index['label'][sample])}")
                else:
                    walk.next_member(int(self._index[f"{item.name}_offset"][sample]),
                                     int(self._index[f"{item.name}_size"][sample]), key)
            walk.next_member(None, None, key)  # the .json
        walk.end(int(self._starts[shard + 1] - self._starts[shard]))
        return None if self.class_field() is None else np.asarray(labels, dtype=np.int64)

    def read(self, shard: int, row: int) -> tuple[bytes, dict[str, Any]]:
        sample = int(self._starts[shard]) + row
        values: dict[str, Any] = {}
        for item in self.fields:
            if item.indexed:
                values[item.name] = int(self._index["label"][sample])
            elif item.encoded:
                values[item.name] = self._member(shard, sample, item.name)
            else:
                values[item.name] = np.load(io.BytesIO(self._member(shard, sample, item.name)))
        return self._member(shard, sample, "data"), values


def _placed(fields: tuple[Field, ...]) -> list[Field]:
    """The fields whose members the index places (class labels are read from the index itself)."""
    return [item for item in fields if not item.indexed]


def _npy_bytes(value: np.ndarray, item: Field) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(value, dtype=item.dtype).reshape(item.shape), allow_pickle=False)
    return buffer.getvalue()


class _MemberWalk:
    """Reads a tar's member headers in order, each where the previous one ended."""

    def __init__(self, descriptor: int, error: Callable[[str], Exception]):
        self.descriptor = descriptor
        self.fail = error
        self.position = 0

    def _header(self) -> tarfile.TarInfo:
        block = os.pread(self.descriptor, BLOCK, self.position)
        try:
            return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as error:
            raise self.fail(f"no valid member header at byte {self.position} ({error})") from None

    def next_member(self, data_offset: int | None, size: int | None, key: str | None = None) -> tarfile.TarInfo:
        """The next member, checked against where (and how large) the index says it is."""
        member = self._header()
        start = self.position + BLOCK
        if data_offset is not None and (start != data_offset or member.size != size):
            raise self.fail(f"member {member.name} has {member.size} bytes at byte {start}; the index places "
                            f"{size} bytes at byte {data_offset}")
        if key is not None and not member.name.startswith(key + "."):
            raise self.fail(f"member {member.name} follows {key}'s members: not of the same sample")
        self.position = start + _padded(member.size)
        return member

    def label(self, key: str) -> int:
        member = self.next_member(None, None, key)
        text = os.pread(self.descriptor, member.size, self.position - _padded(member.size))
        try:
            return int(text)
        except ValueError:
            raise self.fail(f"member {member.name} holds {text[:20]!r}, not a label") from None

    def end(self, count: int) -> None:
        if os.pread(self.descriptor, BLOCK, self.position).strip(b"\0"):
            raise self.fail(f"holds members beyond the manifest's {count} samples")


TAR = Format(
    name="tar",
    kind="flexible",
    writer=TarShardWriter,
    reader=TarShardReader,
    file_roles=("samples",),
    file_pattern=r"samples-\d+\.tar",
)
