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
from raydsconv.layout import FORMATS_NAME
from raydsconv.manifest import Manifest, load_manifest
from raydsconv.masks import MaskSpec, mask_array, mask_image


OUTPUTS = ("pil", "numpy", "tensor", "bytes")


class ShardedDataset(Dataset):
    """``ds[i] -> (image, label)`` over a dataset written by raydsconv; ``(image, mask)`` for one
    with dense labels.

    Args:
        dataset_path: the dataset directory (the one holding ``manifest.json``).
        transform: applied to the image, as with torchvision's ImageFolder.
        target_transform: applied to the label (or the mask).
        transforms: instead of those two, one callable ``(image, target) -> (image, target)``, as
            torchvision's ``VOCSegmentation`` takes: for geometric augmentation of image and mask
            together (e.g. ``torchvision.transforms.v2``, which resizes masks with nearest).
        output: what an image is: ``"pil"`` (default, as ImageFolder gives), ``"numpy"``
            (H, W, C) uint8, ``"tensor"`` (C, H, W) uint8 ``torch.Tensor`` (ready for
            ``torchvision.transforms.v2`` or the GPU), or ``"bytes"`` (the stored file, flexible
            formats only, e.g. for ``torchvision.io.decode_jpeg(..., device="cuda")``).
            A mask comes in the same kind: a PIL image of its values (mode L, I;16 or RGB), an
            (H, W[, 3]) array, a ``torchvision.tv_tensors.Mask`` ((H, W), or (3, H, W) for RGB
            masks; uint16 masks as int32), or its stored PNG bytes.
        draft: flexible formats, opt-in: ``(height, width)`` your transform needs at least. JPEGs
            are then decoded by libjpeg at the smallest 1/2, 1/4 or 1/8 scale that is still that
            large — several times faster for big images, and slightly different pixels.

    DataLoader fetches whole batches through ``__getitems__``: for fixed-size formats the rows of
    a batch are read shard by shard, one read per contiguous run. With ``output="numpy"`` or
    ``"tensor"`` and no transform, pass ``collate_fn=raydsconv.collate`` to get the batch as the
    one array it was read into, without stacking the samples again.
    """

    format_name: ClassVar[str | None] = None  # subclasses pin a format; None accepts any
    dense_only: ClassVar[bool] = False  # the Dense* readers accept only datasets with masks

    def __init__(
        self,
        dataset_path: str | os.PathLike,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        *,
        transforms: Callable[[Any, Any], tuple[Any, Any]] | None = None,
        output: str = "pil",
        draft: tuple[int, int] | None = None,
    ):
        if transforms is not None and (transform is not None or target_transform is not None):
            raise InvalidArgumentError("give transforms, or transform/target_transform, not both")
        self.dataset_path = Path(dataset_path)
        self.transform = transform
        self.target_transform = target_transform
        self.transforms = transforms
        self.output = output
        self.draft = None if draft is None else (int(draft[0]), int(draft[1]))
        self.manifest: Manifest = load_manifest(self.dataset_path)
        if self.format_name is not None and self.manifest.format != self.format_name:
            raise ManifestError(
                f"{self.dataset_path}: holds format {self.manifest.format!r}, not {self.format_name!r}; "
                "use raydsconv.open_dataset() to pick the right reader"
            )
        if self.dense_only and not self.dense:
            raise ManifestError(f"{self.dataset_path}: holds class labels, not masks; use "
                                f"{type(self).__name__.removeprefix('Dense')} or raydsconv.open_dataset()")
        self._format = _checked_format(self.dataset_path, self.manifest)
        if output not in OUTPUTS or (output == "bytes" and self._format.fixed_size):
            choices = OUTPUTS[:-1] if self._format.fixed_size else OUTPUTS
            raise InvalidArgumentError(f"output must be one of {', '.join(choices)} for format "
                                       f"{self._format.name!r}, got {output!r}")
        if self.dense and self.draft is not None:
            raise InvalidArgumentError("draft is not available for a dataset with masks: the image would come "
                                       "out smaller than its mask")
        self._mask_spec = MaskSpec(self.manifest.params["mask_mode"]) if self.dense else None
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

    @property
    def dense(self) -> bool:
        """Whether samples have a mask (segmentation) rather than a class label."""
        return bool(self.manifest.params.get("dense"))

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
        payload, target = self._shard_reader().read(*self.locate(int(index)))
        return self._sample(self._as_output(payload), self._as_target(target))

    def __getitems__(self, indices: list[int]) -> list[tuple[Any, Any]]:
        """A whole batch in one call (DataLoader uses it): rows read shard by shard, in runs."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and not (-len(self) <= indices.min() and indices.max() < len(self)):
            raise IndexError(f"sample indices out of range for a dataset of {len(self)} samples")
        indices %= max(len(self), 1)
        shards = np.searchsorted(self._shard_ends, indices, side="right")
        rows = indices - np.concatenate([[0], self._shard_ends])[shards]
        reader = self._shard_reader()
        gathered_images = _Gathered(len(indices))  # fixed-size formats: one (N, H, W[, C]) array
        gathered_targets = _Gathered(len(indices))  # labels, or masks
        for shard in np.unique(shards):
            positions = np.flatnonzero(shards == shard)
            positions = positions[np.argsort(rows[positions], kind="stable")]
            read_images, read_targets = reader.read_rows(int(shard), rows[positions])
            gathered_images.put(positions, read_images)
            gathered_targets.put(positions, read_targets)
        images, targets = gathered_images.values, gathered_targets.values
        plain = self.transform is None and self.transforms is None and (self.target_transform is None or not self.dense)
        if isinstance(images, np.ndarray) and self.output in ("numpy", "tensor") and plain:
            return self._stacked(images, targets)
        return [self._sample(self._as_output(image), self._as_target(target)) for image, target in zip(images, targets)]

    def _stacked(self, pixels: np.ndarray, targets: np.ndarray) -> "StackedSamples":
        images: Any = torch.from_numpy(pixels)
        if self.output == "tensor":
            images = _channels_first(images, batched=True)
        else:
            images = images.numpy()
        if self.dense:
            return StackedSamples(images, self._as_target(targets))
        labels = [int(label) if self.target_transform is None else self.target_transform(int(label)) for label in targets]
        return StackedSamples(images, labels)

    def _as_output(self, payload: Any) -> Any:
        if self.output == "bytes":
            return payload
        if self._format.fixed_size:
            pixels = payload
            if self.output == "pil":
                return Image.fromarray(pixels, self.mode)
        else:
            image = decode_rgb(payload, self.draft, orient=self.dense)
            if self.output == "pil":
                return image
            pixels = np.asarray(image)
        if self.output == "numpy":
            return pixels
        return _channels_first(torch.from_numpy(np.ascontiguousarray(pixels)))

    def _as_target(self, target: Any) -> Any:
        """A label as an int; a mask (stored pixels or file bytes) in the kind ``output`` asks for."""
        if not self.dense:
            return int(target)
        if self.output == "bytes":
            return target
        # Stored masks were checked at conversion: no size limit of ours when reading them back.
        mask = target if isinstance(target, np.ndarray) else mask_array(target, self._mask_spec, max_pixels=None)
        if self.output == "pil":
            return mask_image(mask)
        if self.output == "numpy":
            return mask
        from torchvision import tv_tensors

        tensor = torch.from_numpy(mask.astype(np.int32) if mask.dtype == np.uint16 else np.ascontiguousarray(mask))
        return tv_tensors.Mask(tensor.movedim(-1, -3) if self._mask_spec.channels == 3 else tensor)

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
    """A batch read into one array: a list of (image, target) like any batch (so the default collate
    works), which also keeps the arrays so that ``raydsconv.collate`` need not stack them again."""

    def __init__(self, images: Any, targets: Any):
        super().__init__(zip(images, targets))
        self.images = images
        self.targets = targets  # a list of labels, or the masks as one array or tensor


def collate(batch: list[tuple[Any, Any]]) -> Any:
    """DataLoader ``collate_fn``: a StackedSamples batch as (images, targets) without another copy;
    anything else as torch's ``default_collate`` does."""
    from torch.utils.data import default_collate

    if isinstance(batch, StackedSamples):
        return _as_tensor(batch.images), (default_collate(batch.targets) if isinstance(batch.targets, list)
                                          else _as_tensor(batch.targets))
    return default_collate(batch)


def _as_tensor(values: Any) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(values)


def _channels_first(pixels: torch.Tensor, batched: bool = False) -> torch.Tensor:
    """(…, H, W, C) -> (…, C, H, W); single-channel (…, H, W) -> (…, 1, H, W)."""
    if pixels.dim() == (4 if batched else 3):
        return pixels.movedim(-1, -3)
    return pixels.unsqueeze(-3)


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
        roles = [role for role in fmt.roles(manifest.params) if role not in shard.files]
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


class DenseMemmapReader(MemmapReader):
    """Reads a ``memmap`` dataset with masks: ``(image, mask)`` (the predecessor's name)."""

    dense_only = True


class DenseHDF5Reader(HDF5Reader):
    """Reads an ``hdf5`` dataset with masks: ``(image, mask)``."""

    dense_only = True


class DenseParquetReader(ParquetReader):
    """Reads a ``parquet`` dataset with masks: ``(image, mask)``."""

    dense_only = True


class DenseIpcReader(IpcReader):
    """Reads an ``ipc`` dataset with masks: ``(image, mask)`` (the predecessor's name)."""

    dense_only = True


class DenseTarReader(TarReader):
    """Reads a ``tar`` dataset with masks: ``(image, mask)``."""

    dense_only = True


_READERS: dict[tuple[str, bool], type[ShardedDataset]] = {
    (reader.format_name, reader.dense_only): reader
    for reader in (MemmapReader, HDF5Reader, ParquetReader, IpcReader, TarReader, DenseMemmapReader,
                   DenseHDF5Reader, DenseParquetReader, DenseIpcReader, DenseTarReader)
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
    reader = _READERS.get((manifest.format, bool(manifest.params.get("dense"))), ShardedDataset)
    return reader(root, transform=transform, target_transform=target_transform, transforms=transforms,
                  output=output, draft=draft)
