"""The torch Dataset over a converted dataset: a thin adapter over the reading core
(``raydsconv.reading.core.DatasetReader``: manifest, shards, batched fetch) and a decoder
(``raydsconv.reading.decoders``: stored pixels or files -> PIL, numpy, tensor, bytes).

The manifest is read at construction (cheap: no shard is opened); shards are opened lazily in each
process that reads, so a Dataset pickles small and never shares file handles or memory maps across
a fork.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from raydsconv.errors import InvalidArgumentError, ManifestError
from raydsconv.formats.base import DEFAULT_MAX_OPEN_SHARDS
from raydsconv.manifest import Manifest
from raydsconv.predecessor import ShardCounts
from raydsconv.reading.core import DatasetReader
from raydsconv.reading.decoders import DECODERS, Stored, make_decoder
from raydsconv.targets import Mask, TargetKind

OUTPUTS = tuple(DECODERS)


class ShardedDataset(Dataset):
    """``ds[i] -> (image, target)`` over a dataset written by raydsconv, the target as its target kind
    gives it (``raydsconv.targets``): an int label (``class``), a mask (``mask``), ...; for unlabeled
    images (``none``) the image alone, so that a DataLoader batches images as it batches tensors.

    Args:
        dataset_path: the dataset directory (the output folder, holding the shards).
        transform: applied to the image, as with torchvision's ImageFolder.
        target_transform: applied to the label (or the mask).
        transforms: instead of those two, one callable ``(image, target) -> (image, target)``, as
            torchvision's ``VOCSegmentation`` takes: for geometric augmentation of image and mask
            together (e.g. ``torchvision.transforms.v2``, which resizes masks with nearest).
        output: what an image is: ``"pil"`` (default, as ImageFolder gives), ``"numpy"``
            (H, W, C) uint8, ``"tensor"`` (C, H, W) uint8 ``torch.Tensor`` (ready for
            ``torchvision.transforms.v2`` or the GPU), ``"bytes"`` (the stored file, flexible
            formats only, e.g. for ``torchvision.io.decode_jpeg(..., device="cuda")``), or the name
            of a decoder you registered (``raydsconv.reading.decoders.register_decoder``).
            A mask comes in the same kind: a PIL image of its values (mode L, I;16 or RGB), an
            (H, W[, 3]) array, a ``torchvision.tv_tensors.Mask`` ((H, W), or (3, H, W) for RGB
            masks; uint16 masks as int32), or its stored PNG bytes.
        draft: flexible formats, opt-in: ``(height, width)`` your transform needs at least. JPEGs
            are then decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale that is still that
            large — several times faster for big images, and slightly different pixels.
        verify: check every file's sha256 (and everything ``raydsconv.verify()`` checks) before the
            first read; raises CorruptDatasetError listing what is wrong. Without it, opening checks
            only what is cheap: the manifest, each file's size, the index's row count; each shard's
            headers are checked against the manifest when a process first reads from it, and labels
            against the class count as they are read.
        max_open_shards: shards each reading process keeps open at once (memory maps, file
            handles); the least recently used is closed first. Bounds the open files of every worker.

    DataLoader fetches whole batches through ``__getitems__``: for fixed-size formats the rows of
    a batch are read shard by shard, one read per contiguous run. With ``output="numpy"`` or
    ``"tensor"`` and no transform, pass ``collate_fn=raydsconv.collate`` to get the batch as the
    one array it was read into, without stacking the samples again.

    The predecessor's attributes are there for its users' scripts: ``len`` (samples),
    ``images_per_file``, ``total_num_arrays`` (shards), ``len_last_array`` (samples of the last
    shard, 0 when it is full), ``shape`` ((height, width); None for flexible formats), ``mode``,
    ``class_to_idx``, and ``worker_init_fn``.
    """

    format_name: ClassVar[str | None] = None  # subclasses pin a format; None accepts any

    def __init__(
        self,
        dataset_path: str | os.PathLike | DatasetReader,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        *,
        transforms: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        output: str = "pil",
        draft: tuple[int, int] | None = None,
        verify: bool = False,
        max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
        format: str | None = None,
    ):
        if transforms is not None and (transform is not None or target_transform is not None):
            raise InvalidArgumentError("give transforms, or transform/target_transform, not both")
        if isinstance(dataset_path, DatasetReader):  # from open_dataset: the manifest is read once
            self.reader = dataset_path
        else:
            self.reader = DatasetReader(dataset_path, format=format or self.format_name, verify=verify,
                                        max_open_shards=max_open_shards)
        if self.format_name is not None and self.manifest.format != self.format_name:
            raise ManifestError(f"{self.reader.root}: holds format {self.manifest.format!r}, not {self.format_name!r}; "
                                "use raydsconv.open_dataset() to pick the right reader")
        if not self.target.returns_target and (target_transform is not None or transforms is not None):
            raise InvalidArgumentError(f"{self.reader.root}: samples of kind {self.target.name!r} have no target; "
                                       "give transform, not target_transform or transforms")
        self.transform = transform
        self.target_transform = target_transform
        self.transforms = transforms
        self.output = output
        self.draft = None if draft is None else (int(draft[0]), int(draft[1]))
        if isinstance(self.target, Mask) and self.draft is not None:
            raise InvalidArgumentError("draft is not available for a dataset with masks: the image would come "
                                       "out smaller than its mask")
        mask_spec = self.target.spec if isinstance(self.target, Mask) else None
        self.decoder = make_decoder(output, Stored(self.reader.fixed_size, self.reader.mode, mask_spec, self.draft),
                                    self.manifest.format)

    @property
    def dataset_path(self) -> Path:
        return self.reader.root

    @property
    def manifest(self) -> Manifest:
        return self.reader.manifest

    @property
    def classes(self) -> list[str]:
        return self.reader.classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return self.reader.class_to_idx

    @property
    def mode(self) -> str | None:
        return self.reader.mode

    @property
    def target(self) -> TargetKind:
        """What each sample carries besides its image (``raydsconv.targets``)."""
        return self.reader.target

    @property
    def dense(self) -> bool:
        """Whether samples have a mask (segmentation), the predecessor's word."""
        return self.reader.dense

    def __len__(self) -> int:
        return len(self.reader)

    # The predecessor's attributes (see raydsconv.predecessor)
    @property
    def len(self) -> int:
        return len(self.reader)

    @property
    def images_per_file(self) -> int:
        return ShardCounts.of_manifest(self.manifest).images_per_file

    @property
    def total_num_arrays(self) -> int:
        return len(self.manifest.shards)

    @property
    def len_last_array(self) -> int:
        return ShardCounts.of_manifest(self.manifest).len_last_array

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) of every stored image (fixed-size formats); None for flexible ones."""
        shape = self.manifest.params.get("shape")
        return (int(shape[0]), int(shape[1])) if shape else None

    @staticmethod
    def worker_init_fn(worker_id: int) -> None:
        """``DataLoader(worker_init_fn=MemmapReader.worker_init_fn)``, as the predecessor's README says,
        keeps working, and is not needed: every process opens its shards itself on its first read
        (fork, spawn, Windows alike), and DataLoader seeds each worker's ``random``, numpy and torch."""

    def locate(self, index: int) -> tuple[int, int]:
        """(shard, row) of sample ``index``."""
        shards, rows = self.reader.locate([index])
        return int(shards[0]), int(rows[0])

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        # an IndexError past the end (from the reader's locate), so that `for x in ds` stops there
        return self._samples([int(index)], stack=False)[0]

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """A whole batch in one call (DataLoader uses it): rows read shard by shard, in runs."""
        return self._samples(indices, stack=True)

    def _samples(self, indices: list[int], stack: bool) -> list[Any]:
        fetched = self.reader.fetch(indices)
        stacked = self._stacked(fetched) if stack else None
        if stacked is not None:
            return stacked
        images = self._decoded(self.decoder.images, fetched.images, indices)
        if not self.target.returns_target:
            return [self.transform(image) if self.transform is not None else image for image in images]
        targets = self._decoded(lambda fields: self.target.targets(fields, self.decoder), fetched.fields, indices)
        return [self._sample(image, target) for image, target in zip(images, targets)]

    def _stacked(self, fetched: Any) -> StackedSamples | None:
        """The batch as read, one array of images (and of masks), when no transform is in the way."""
        if not isinstance(fetched.images, np.ndarray) or self.transform is not None or self.transforms is not None:
            return None
        images = self.decoder.stacked_images(fetched.images)
        if images is None or not self.target.returns_target:
            return None if images is None else StackedSamples(images)
        targets = self.target.stacked(fetched.fields, self.decoder)
        if targets is None or (self.target_transform is not None and not isinstance(targets, list)):
            return None
        if self.target_transform is not None:  # per target, as the unstacked path does
            targets = [self.target_transform(target) for target in targets]
        return StackedSamples(images, targets)

    def _decoded(self, decode: Callable[[Any], list[Any]], batch: Any, indices: list[int]) -> list[Any]:
        """``decode(batch)`` (a batch, or a dict of them); when it fails, the sample to blame is found
        and named."""
        try:
            return decode(batch)
        except Exception:
            shards, rows = self.reader.locate(indices)
            for i in range(len(indices)):
                with self.reader.reading(int(shards[i]), int(rows[i])):
                    decode({name: values[i : i + 1] for name, values in batch.items()} if isinstance(batch, dict)
                           else batch[i : i + 1])
            raise

    def _sample(self, image: Any, target: Any) -> tuple[Any, Any]:
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def read_bytes(self, index: int) -> bytes:
        """The stored bytes of sample ``index``: the original file for flexible-size formats."""
        return self.reader.read_bytes(index)

    def index(self):
        """The per-sample index (pyarrow Table): label, shard, row, source path, size, format."""
        return self.reader.index()

    def source_path(self, index: int) -> str:
        """Path of sample ``index``'s source file, relative to the source root."""
        return self.reader.source_path(index)

    def to_ray(self, *, decode: bool = True):
        """This dataset as a ``ray.data.Dataset`` (see ``raydsconv.read_ray``); needs Ray."""
        from raydsconv.reading.ray_iteration import read_ray

        return read_ray(self.dataset_path, format=self.manifest.format, decode=decode)

    @property
    def source_root(self) -> str | None:
        return self.manifest.source.get("root")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dataset_path)!r}, format={self.manifest.format!r}, samples={len(self)})"


class StackedSamples(list):
    """A batch read into one array: a list of (image, target) like any batch (so the default collate
    works), or of images alone for unlabeled samples, which also keeps the arrays so that
    ``raydsconv.collate`` need not stack them again."""

    def __init__(self, images: Any, targets: Any = None):
        super().__init__(images if targets is None else zip(images, targets))
        self.images = images
        self.targets = targets  # a list of labels, the masks as one array or tensor; None: no targets


def collate(batch: list[Any]) -> Any:
    """DataLoader ``collate_fn``: a StackedSamples batch as (images, targets), or images alone,
    without another copy; anything else as torch's ``default_collate`` does."""
    from torch.utils.data import default_collate

    if isinstance(batch, StackedSamples):
        if batch.targets is None:
            return _as_tensor(batch.images)
        return _as_tensor(batch.images), (default_collate(batch.targets) if isinstance(batch.targets, list)
                                          else _as_tensor(batch.targets))
    return default_collate(batch)


def _as_tensor(values: Any) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(values)


class MemmapReader(ShardedDataset):
    """Reads a ``memmap`` dataset (the predecessor's name and signature)."""

    format_name = "memmap"


class HDF5Reader(ShardedDataset):
    """Reads an ``hdf5`` dataset."""

    format_name = "hdf5"


Hdf5Reader = HDF5Reader  # the predecessor's spelling


class ParquetReader(ShardedDataset):
    """Reads a ``parquet`` dataset; images come back as RGB PIL images, as from ImageFolder."""

    format_name = "parquet"


class IpcReader(ShardedDataset):
    """Reads an ``ipc`` (Arrow IPC) dataset through memory maps."""

    format_name = "ipc"


class TarReader(ShardedDataset):
    """Reads a ``tar`` (WebDataset layout) dataset by recorded offsets, with ``pread``."""

    format_name = "tar"


# The predecessor's names for datasets with masks: every reader reads whatever target kind its dataset has.
DenseMemmapReader = MemmapReader
DenseHDF5Reader = HDF5Reader
DenseParquetReader = ParquetReader
DenseIpcReader = IpcReader
DenseTarReader = TarReader

_READERS: dict[str, type[ShardedDataset]] = {
    reader.format_name: reader for reader in (MemmapReader, HDF5Reader, ParquetReader, IpcReader, TarReader)
}


def open_dataset(
    dataset_path: str | os.PathLike,
    transform: Callable[[Any], Any] | None = None,
    target_transform: Callable[[Any], Any] | None = None,
    *,
    transforms: Callable[[Any, Any], tuple[Any, Any]] | None = None,
    format: str | None = None,
    output: str = "pil",
    draft: tuple[int, int] | None = None,
    verify: bool = False,
    max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS,
) -> ShardedDataset:
    """Open any dataset written by raydsconv with the reader its manifest names.

    For the output of a several-formats conversion, ``format`` picks one of them. ``verify=True``
    checks every file's sha256 first (see ``ShardedDataset``).
    """
    reader = DatasetReader(dataset_path, format=format, verify=verify, max_open_shards=max_open_shards)
    dataset_class = _READERS.get(reader.manifest.format, ShardedDataset)
    return dataset_class(reader, transform=transform, target_transform=target_transform, transforms=transforms,
                         output=output, draft=draft)
