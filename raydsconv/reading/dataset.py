"""Map-style torch Datasets over a converted dataset, for any DataLoader (fork or spawn workers).

The manifest is read at construction (cheap: no shard is opened); the format's ShardReader is
created lazily in each process that reads, so a Dataset pickles small and never shares file
handles or memory maps across a fork.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from raydsconv.errors import InvalidArgumentError, ManifestError, UnsupportedFormatError
from raydsconv.formats import Format, ShardReader, get_format
from raydsconv.images import decode_rgb
from raydsconv.manifest import FORMATS_NAME, Manifest, load_manifest


OUTPUTS = ("pil", "numpy", "tensor", "bytes")


class ShardedDataset(Dataset):
    """``ds[i] -> (image, label)`` over a dataset written by raydsconv.

    Args:
        dataset_path: the dataset directory (the one holding ``manifest.json``).
        transform: applied to the image, as with torchvision's ImageFolder.
        target_transform: applied to the label.
        output: what an image is: ``"pil"`` (default, as ImageFolder gives), ``"numpy"``
            (H, W, C) uint8, ``"tensor"`` (C, H, W) uint8 ``torch.Tensor`` (ready for
            ``torchvision.transforms.v2`` or the GPU), or ``"bytes"`` (the stored file, flexible
            formats only, e.g. for ``torchvision.io.decode_jpeg(..., device="cuda")``).
        draft: flexible formats, opt-in: ``(height, width)`` your transform needs at least. JPEGs
            are then decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale that is still that
            large — several times faster for big images, and slightly different pixels.

    DataLoader fetches whole batches through ``__getitems__``: for fixed-size formats the rows of
    a batch are read shard by shard, one read per contiguous run. With ``output="numpy"`` or
    ``"tensor"`` and no transform, pass ``collate_fn=raydsconv.collate`` to get the batch as the
    one array it was read into, without stacking the samples again.
    """

    format_name: ClassVar[str | None] = None  # subclasses pin a format; None accepts any

    def __init__(
        self,
        dataset_path: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        *,
        output: str = "pil",
        draft: tuple[int, int] | None = None,
    ):
        self.dataset_path = Path(dataset_path)
        self.transform = transform
        self.target_transform = target_transform
        self.output = output
        self.draft = None if draft is None else (int(draft[0]), int(draft[1]))
        self.manifest: Manifest = load_manifest(self.dataset_path)
        if self.format_name is not None and self.manifest.format != self.format_name:
            raise ManifestError(
                f"{self.dataset_path}: holds format {self.manifest.format!r}, not {self.format_name!r}; "
                "use raydsconv.open_dataset() to pick the right reader"
            )
        self._format = _checked_format(self.dataset_path, self.manifest)
        if output not in OUTPUTS or (output == "bytes" and self._format.fixed_size):
            choices = OUTPUTS[:-1] if self._format.fixed_size else OUTPUTS
            raise InvalidArgumentError(f"output must be one of {', '.join(choices)} for format "
                                       f"{self._format.name!r}, got {output!r}")
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
            _allow_open_shards(len(self.manifest.shards))
            self._reader = self._format.reader(self.dataset_path, self.manifest)
            self._reader_pid = os.getpid()
        return self._reader

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        payload, label = self._shard_reader().read(*self.locate(int(index)))
        return self._sample(self._as_output(payload), label)

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """A whole batch in one call (DataLoader uses it): rows read shard by shard, in runs."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and not (-len(self) <= indices.min() and indices.max() < len(self)):
            raise IndexError(f"sample indices out of range for a dataset of {len(self)} samples")
        indices %= max(len(self), 1)
        shards = np.searchsorted(self._shard_ends, indices, side="right")
        rows = indices - np.concatenate([[0], self._shard_ends])[shards]
        reader = self._shard_reader()
        payloads: Any = [None] * len(indices)  # fixed-size formats: one (N, H, W[, C]) array
        labels = np.empty(len(indices), dtype=np.int64)
        for shard in np.unique(shards):
            positions = np.flatnonzero(shards == shard)
            positions = positions[np.argsort(rows[positions], kind="stable")]
            read, labels[positions] = reader.read_rows(int(shard), rows[positions])
            if isinstance(read, np.ndarray):
                if isinstance(payloads, list):
                    payloads = np.empty((len(indices), *read.shape[1:]), dtype=read.dtype)
                payloads[positions] = read
            else:
                for position, payload in zip(positions, read):
                    payloads[position] = payload
        if isinstance(payloads, np.ndarray) and self.output in ("numpy", "tensor") and self.transform is None:
            return self._stacked(payloads, labels)
        return [self._sample(self._as_output(payload), int(label)) for payload, label in zip(payloads, labels)]

    def _stacked(self, pixels: np.ndarray, labels: np.ndarray) -> "StackedSamples":
        images: Any = torch.from_numpy(pixels)
        if self.output == "tensor":
            images = images.permute(0, 3, 1, 2) if images.dim() == 4 else images.unsqueeze(1)
        else:
            images = images.numpy()
        targets = [int(label) if self.target_transform is None else self.target_transform(int(label)) for label in labels]
        return StackedSamples(images, targets)

    def _as_output(self, payload: Any) -> Any:
        if self.output == "bytes":
            return payload
        if self._format.fixed_size:
            pixels = payload
            if self.output == "pil":
                return Image.fromarray(pixels, self.mode)
        else:
            image = decode_rgb(payload, self.draft)
            if self.output == "pil":
                return image
            pixels = np.asarray(image)
        if self.output == "numpy":
            return pixels
        tensor = torch.from_numpy(np.ascontiguousarray(pixels))
        return tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor.unsqueeze(0)

    def _sample(self, image: Any, label: int) -> tuple[Any, Any]:
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

    def to_ray(self, *, decode: bool = True):
        """This dataset as a ``ray.data.Dataset`` (see ``raydsconv.read_ray``); needs Ray."""
        from raydsconv.reading.ray_iteration import read_ray

        return read_ray(self.dataset_path, decode=decode)

    @property
    def source_root(self) -> str | None:
        return self.manifest.source.get("root")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_reader"] = state["_reader_pid"] = state["_index"] = None  # reopened in the worker
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dataset_path)!r}, format={self.manifest.format!r}, samples={len(self)})"


def _allow_open_shards(count: int) -> None:
    """Readers keep every shard they touched open (a memory map or handle each); a shuffled epoch
    over ImageNet's ~1300 shards passes the usual soft limit of 1024 descriptors, so raise the soft
    limit towards the hard one when needed."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = count * 2 + 256
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))
    except (ImportError, ValueError, OSError):  # not on POSIX, or not allowed: keep the limit
        pass


class StackedSamples(list):
    """A batch read into one array: a list of (image, label) like any batch (so the default collate
    works), which also keeps the array so that ``raydsconv.collate`` need not stack it again."""

    def __init__(self, images: Any, labels: list[Any]):
        super().__init__(zip(images, labels))
        self.images = images
        self.labels = labels


def collate(batch: list[tuple[Any, Any]]) -> Any:
    """DataLoader ``collate_fn``: a StackedSamples batch as (images, labels) without another copy;
    anything else as torch's ``default_collate`` does."""
    from torch.utils.data import default_collate

    if isinstance(batch, StackedSamples):
        images = batch.images if isinstance(batch.images, torch.Tensor) else torch.from_numpy(batch.images)
        return images, default_collate(batch.labels)
    return default_collate(batch)


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
    output: str = "pil",
    draft: tuple[int, int] | None = None,
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
    return reader(root, transform=transform, target_transform=target_transform, output=output, draft=draft)
