"""The reading core: one dataset on disk, for every adapter (the torch Dataset, the Ray datasource,
a plain loop). Imports neither torch nor Ray, and pickles small.

The manifest is parsed once, when the reader is made, and checked cheaply (``raydsconv.checks``).
Shards are opened lazily in each process that reads, through the format's ShardReader, at most
``max_open_shards`` at a time. ``fetch`` reads a batch of samples shard by shard, one read per
contiguous run of rows, and returns them as stored (pixels, or encoded bytes); turning them into
PIL images, arrays or tensors is a decoder's job (``raydsconv.reading.decoders``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from raydsconv.checks import check_on_open, labels_outside
from raydsconv.errors import CorruptDatasetError, ManifestError
from raydsconv.formats import Format, ShardReader, get_format
from raydsconv.formats.base import DEFAULT_MAX_OPEN_SHARDS, OpenShards
from raydsconv.layout import FORMATS_NAME, read_formats
from raydsconv.manifest import Manifest, load_manifest
from raydsconv.targets import ClassLabel, Mask, TargetKind, make_known, target_of


def dataset_folder(path: str | os.PathLike, format: str | None = None) -> Path:
    """The folder of one format's dataset: ``path`` itself, or for the output of a several-formats
    conversion the sub-folder of ``format``."""
    root = Path(path)
    try:
        folders = read_formats(root)
    except ValueError as error:
        raise ManifestError(f"{root / FORMATS_NAME}: {error}") from None
    if folders is not None:
        if format not in folders:
            raise ManifestError(f"{root} holds several formats ({', '.join(folders)}); pass format=<one of them>")
        return root / folders[format]
    return root


@dataclass
class Fetched:
    """Samples as stored, in the order asked for: ``images`` one array for fixed-size formats, else
    a list of encoded files; ``fields`` the target kind's stored fields by name, each one array (class
    labels int64, masks' pixels, ...) or a list of encoded files (masks of flexible-size formats).
    The kind (``DatasetReader.target``) makes targets of them."""

    images: Any
    fields: dict[str, Any]


class DatasetReader:
    """Args:
    path: the dataset (the output folder, holding the shards, or the top of a several-formats output
        with ``format``).
    format: expected format; required to pick one of a several-formats output.
    verify: check every file's sha256 (``raydsconv.verify``) before returning.
    max_open_shards: shards each process keeps open at once (memory maps, file handles); the least
        recently used is closed first.
    """

    def __init__(self, path: str | os.PathLike, *, format: str | None = None, verify: bool = False,
                 max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS):
        self.root = dataset_folder(path, format)
        self.manifest: Manifest = load_manifest(self.root, check_files=False)
        if format is not None and self.manifest.format != format:
            raise ManifestError(f"{self.root} holds format {self.manifest.format!r}, not {format!r}")
        check_on_open(self.root, self.manifest)  # the format, every file's size, the index's footer
        if verify:
            from raydsconv.verification import verify as verify_dataset

            verify_dataset(self.root).raise_for_problems()
        self.format: Format = get_format(self.manifest.format)
        self.target: TargetKind = target_of(self.manifest.params)  # an unknown kind fails here, not in a worker
        OpenShards(max_open_shards)  # refuses a limit below 1 here, not in a worker
        self.max_open_shards = max_open_shards
        # Sample i lives in the shard whose cumulative count first exceeds i.
        self._ends = np.cumsum([shard.num_samples for shard in self.manifest.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], self._ends]).astype(np.int64)
        self._reader: ShardReader | None = None
        self._reader_pid: int | None = None
        self._index = None

    # What the dataset holds
    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.manifest.class_to_idx

    @property
    def dense(self) -> bool:
        """Whether samples have a mask (segmentation), the predecessor's word."""
        return isinstance(self.target, Mask)

    @property
    def mode(self) -> str | None:
        return self.manifest.params.get("mode")

    @property
    def fixed_size(self) -> bool:
        return self.format.fixed_size

    def __len__(self) -> int:
        return self.manifest.num_samples

    def shard_range(self, shard: int) -> range:
        """The sample numbers of one shard."""
        return range(int(self._starts[shard]), int(self._starts[shard + 1]))

    # Where samples are
    def locate(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        """(shards, rows) of the samples ``indices`` (negative ones count from the end)."""
        indices = np.asarray(indices, dtype=np.int64)
        outside = (indices < -len(self)) | (indices >= len(self))
        if outside.any():
            raise IndexError(f"sample {int(indices[outside][0])} out of range for a dataset of {len(self)} samples")
        indices = indices % max(len(self), 1)
        shards = np.searchsorted(self._ends, indices, side="right")
        return shards, indices - self._starts[shards]

    def describe(self, shard: int, row: int) -> str:
        """'DATASET: sample N (FILE, row R)', for messages."""
        name = next(iter(self.manifest.shards[shard].files.values())).name
        return f"{self.root}: sample {int(self._starts[shard]) + row} ({name}, row {row})"

    @contextmanager
    def reading(self, shard: int, row: int) -> Iterator[None]:
        """Any failure inside names the dataset, the shard file and the sample."""
        try:
            yield
        except CorruptDatasetError:
            raise
        except Exception as error:
            raise CorruptDatasetError(f"{self.describe(shard, row)} cannot be read: "
                                      f"{type(error).__name__}: {error}") from error

    # Reading
    def shard_reader(self) -> ShardReader:
        """The format's reader of this process (made again after a fork or in a spawned worker)."""
        if self._reader is None or self._reader_pid != os.getpid():
            make_known(self.target)  # this process may have unpickled the kind without importing its module
            reader = self.format.reader(self.root, self.manifest)
            reader.open_shards = OpenShards(self.max_open_shards)
            self._reader, self._reader_pid = reader, os.getpid()
        return self._reader

    def fetch(self, indices: Any) -> Fetched:
        """The samples ``indices`` as stored, in that order: rows read shard by shard, sorted, one read
        per contiguous run; labels checked against the class count."""
        shards, rows = self.locate(indices)
        images = _Gathered(len(shards))
        fields: dict[str, _Gathered] = {}
        for shard in np.unique(shards):
            positions = np.flatnonzero(shards == shard)
            positions = positions[np.argsort(rows[positions], kind="stable")]
            fetched = self.fetch_rows(int(shard), rows[positions])
            images.put(positions, fetched.images)
            for name, values in fetched.fields.items():
                fields.setdefault(name, _Gathered(len(shards))).put(positions, values)
        return Fetched(images.values, {name: gathered.values for name, gathered in fields.items()})

    def fetch_rows(self, shard: int, rows: np.ndarray) -> Fetched:
        """Sorted rows of one shard, as stored."""
        with self.reading(shard, int(rows[0]) if len(rows) else 0):
            images, fields = self.shard_reader().read_rows(shard, rows)
        if isinstance(self.target, ClassLabel):
            fields["label"] = np.asarray(fields["label"], dtype=np.int64)
            self._check_labels(shard, fields["label"], rows)
        return Fetched(images, fields)

    def _check_labels(self, shard: int, labels: np.ndarray, rows: np.ndarray) -> None:
        classes = len(self.manifest.classes)
        bad = labels_outside(labels, classes)
        if len(bad):
            raise CorruptDatasetError(f"{self.describe(shard, int(rows[bad[0]]))}: label {int(labels[bad[0]])} is "
                                      f"outside 0..{classes - 1}; the file is damaged")

    def read_bytes(self, index: int) -> bytes:
        """The stored file of sample ``index`` (flexible-size formats)."""
        if self.fixed_size:
            raise TypeError(f"format {self.format.name!r} stores decoded pixels, not file bytes")
        return self.fetch([index]).images[0]

    def index(self):
        """The per-sample index (pyarrow Table): label, shard, row, source path, size, format."""
        if self._index is None:
            import pyarrow.parquet as pq

            self._index = pq.read_table(self.root / self.manifest.index_file)
        return self._index

    def source_path(self, index: int) -> str:
        """Path of sample ``index``'s source file, relative to the source root, as ``os`` functions
        take it: a name that is not UTF-8 (recorded as text with ``\\xNN`` escapes in the index's
        ``path``) comes from its exact bytes in ``path_bytes``, and ``os.fsencode`` gives them back."""
        table = self.index()
        exact = table.column("path_bytes")[index].as_py() if "path_bytes" in table.column_names else None
        return os.fsdecode(exact) if exact is not None else table.column("path")[index].as_py()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = state["_reader_pid"] = state["_index"] = None  # reopened where it is read
        return state

    def __repr__(self) -> str:
        return f"DatasetReader({str(self.root)!r}, format={self.manifest.format!r}, samples={len(self)})"


class _Gathered:
    """Values of a batch arriving shard by shard: one array when they are arrays, else a list."""

    def __init__(self, count: int):
        self.values: Any = [None] * count

    def put(self, positions: np.ndarray, read: Any) -> None:
        if isinstance(read, np.ndarray):
            if isinstance(self.values, list):
                self.values = np.empty((len(self.values), *read.shape[1:]), dtype=read.dtype)
            self.values[positions] = read
        else:
            for position, value in zip(positions, read):
                self.values[position] = value
