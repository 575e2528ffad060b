"""Map-style torch Datasets over a converted dataset, for any DataLoader (fork or spawn workers).

The manifest is read at construction (cheap: no shard is opened); the format's ShardReader is
created lazily in each process that reads, so a Dataset pickles small and never shares file
handles or memory maps across a fork.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from raydsconv.errors import ManifestError, UnsupportedFormatError
from raydsconv.formats import Format, ShardReader, get_format
from raydsconv.manifest import FORMATS_NAME, Manifest, load_manifest


class ShardedDataset(Dataset):
    """``ds[i] -> (image, label)`` over a dataset written by raydsconv.

    Args:
        dataset_path: the dataset directory (the one holding ``manifest.json``).
        transform: applied to the PIL image, as with torchvision's ImageFolder.
        target_transform: applied to the label.
    """

    format_name: ClassVar[str | None] = None  # subclasses pin a format; None accepts any

    def __init__(
        self,
        dataset_path: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
    ):
        self.dataset_path = Path(dataset_path)
        self.transform = transform
        self.target_transform = target_transform
        self.manifest: Manifest = load_manifest(self.dataset_path)
        if self.format_name is not None and self.manifest.format != self.format_name:
            raise ManifestError(
                f"{self.dataset_path}: holds format {self.manifest.format!r}, not {self.format_name!r}; "
                "use raydsconv.open_dataset() to pick the right reader"
            )
        self._format = _checked_format(self.dataset_path, self.manifest)
        # Sample i lives in the shard whose cumulative count first exceeds i.
        self._shard_ends = np.cumsum([shard.num_samples for shard in self.manifest.shards])
        self._reader: ShardReader | None = None
        self._reader_pid: int | None = None
        self._index = None

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.manifest.class_to_idx

    @property
    def mode(self) -> str | None:
        return self.manifest.params.get("mode")

    def __len__(self) -> int:
        return self.manifest.num_samples

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, row) of sample ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for a dataset of {len(self)} samples")
        index %= len(self)
        shard = int(np.searchsorted(self._shard_ends, index, side="right"))
        start = int(self._shard_ends[shard - 1]) if shard else 0
        return shard, index - start

    def _shard_reader(self) -> ShardReader:
        if self._reader is None or self._reader_pid != os.getpid():
            self._reader = self._format.reader(self.dataset_path, self.manifest)
            self._reader_pid = os.getpid()
        return self._reader

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        payload, label = self._shard_reader().read(*self.locate(int(index)))
        if self._format.fixed_size:
            image: Any = Image.fromarray(payload, self.mode)
        else:  # as torchvision's ImageFolder loads a file, without its copy when already RGB
            image = Image.open(io.BytesIO(payload))
            image = image.convert("RGB") if image.mode != "RGB" else image
        target: Any = label
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def read_bytes(self, index: int) -> bytes:
        """The stored bytes of sample ``index``: the original file for flexible-size formats."""
        if self._format.fixed_size:
            raise TypeError(f"format {self._format.name!r} stores decoded pixels, not file bytes")
        return self._shard_reader().read(*self.locate(int(index)))[0]

    def index(self):
        """The per-sample index (pyarrow Table): label, shard, row, source path, size, format."""
        if self._index is None:
            import pyarrow.parquet as pq

            self._index = pq.read_table(self.dataset_path / self.manifest.index_file)
        return self._index

    def source_path(self, index: int) -> str:
        """Path of sample ``index``'s source file, relative to the source root."""
        return self.index().column("path")[index].as_py()

    @property
    def source_root(self) -> str | None:
        return self.manifest.source.get("root")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = state["_reader_pid"] = state["_index"] = None  # reopened in the worker
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dataset_path)!r}, format={self.manifest.format!r}, samples={len(self)})"


def _checked_format(root: Path, manifest: Manifest) -> Format:
    """The manifest's format, checked against what its reader needs, so that a damaged manifest
    fails here with the file named, not later inside a DataLoader worker."""
    where = root / "manifest.json"
    try:
        fmt = get_format(manifest.format)
    except UnsupportedFormatError as error:
        raise ManifestError(f"{where}: {error}") from None
    missing = [name for name in fmt.required_params if name not in manifest.params]
    if missing:
        raise ManifestError(f"{where}: params lack {', '.join(missing)}, which format {fmt.name!r} needs")
    for shard in manifest.shards:
        roles = [role for role in fmt.file_roles if role not in shard.files]
        if roles:
            raise ManifestError(f"{where}: shard {shard.index} lacks its {', '.join(roles)} file")
    return fmt


class MemmapReader(ShardedDataset):
    """Reads a ``memmap`` dataset (the predecessor's name and signature)."""

    format_name = "memmap"


class HDF5Reader(ShardedDataset):
    """Reads an ``hdf5`` dataset."""

    format_name = "hdf5"


class ParquetReader(ShardedDataset):
    """Reads a ``parquet`` dataset; images come back as RGB PIL images, as from ImageFolder."""

    format_name = "parquet"


class IpcReader(ShardedDataset):
    """Reads an ``ipc`` (Arrow IPC) dataset through memory maps."""

    format_name = "ipc"


class TarReader(ShardedDataset):
    """Reads a ``tar`` (WebDataset layout) dataset by recorded offsets, with ``pread``."""

    format_name = "tar"


_READERS: dict[str, type[ShardedDataset]] = {
    reader.format_name: reader for reader in (MemmapReader, HDF5Reader, ParquetReader, IpcReader, TarReader)
}


def open_dataset(
    dataset_path: str | os.PathLike,
    transform: Callable[[Any], Any] | None = None,
    target_transform: Callable[[Any], Any] | None = None,
    *,
    format: str | None = None,
) -> ShardedDataset:
    """Open any dataset written by raydsconv with the reader its manifest names.

    For the output of a several-formats conversion, ``format`` picks one of them.
    """
    root = Path(dataset_path)
    listing = root / FORMATS_NAME
    if listing.is_file():
        folders = json.loads(listing.read_text())["formats"]
        if format not in folders:
            raise ManifestError(f"{root} holds several formats ({', '.join(folders)}); pass format=<one of them>")
        root = root / folders[format]
    manifest = load_manifest(root, check_files=False)
    if format is not None and manifest.format != format:
        raise ManifestError(f"{root} holds format {manifest.format!r}, not {format!r}")
    reader = _READERS.get(manifest.format, ShardedDataset)
    return reader(root, transform=transform, target_transform=target_transform)
