"""raydsconv: convert image datasets into sharded ML-ready files with Ray Data, read them back fast.

Importing this package (and reading converted data) never imports Ray; only conversion does.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it; resolved on first use so that `import raydsconv`
# stays light (no Ray, no torch until a reader or converter is touched).
_EXPORTS = {
    "convert": "raydsconv.conversion",
    "ConversionReport": "raydsconv.conversion",
    "ConverterFixedSize": "raydsconv.converters",
    "ConverterFlexibleSize": "raydsconv.converters",
    "MemmapConverter": "raydsconv.converters",
    "HDF5Converter": "raydsconv.converters",
    "Hdf5Converter": "raydsconv.converters",
    "ParquetConverter": "raydsconv.converters",
    "IpcConverter": "raydsconv.converters",
    "TarConverter": "raydsconv.converters",
    "DenseMemmapConverter": "raydsconv.converters",
    "DenseHDF5Converter": "raydsconv.converters",
    "DenseParquetConverter": "raydsconv.converters",
    "DenseIpcConverter": "raydsconv.converters",
    "DenseTarConverter": "raydsconv.converters",
    "SegmentationFolder": "raydsconv.sources.segmentation",
    "open_dataset": "raydsconv.reading.dataset",
    "collate": "raydsconv.reading.dataset",
    "ShardAwareSampler": "raydsconv.reading.sampler",
    "read_ray": "raydsconv.reading.ray_iteration",
    "ShardedDataset": "raydsconv.reading.dataset",
    "MemmapReader": "raydsconv.reading.dataset",
    "HDF5Reader": "raydsconv.reading.dataset",
    "Hdf5Reader": "raydsconv.reading.dataset",
    "ParquetReader": "raydsconv.reading.dataset",
    "IpcReader": "raydsconv.reading.dataset",
    "TarReader": "raydsconv.reading.dataset",
    "DenseMemmapReader": "raydsconv.reading.dataset",
    "DenseHDF5Reader": "raydsconv.reading.dataset",
    "DenseParquetReader": "raydsconv.reading.dataset",
    "DenseIpcReader": "raydsconv.reading.dataset",
    "DenseTarReader": "raydsconv.reading.dataset",
    "ImageSpec": "raydsconv.images",
    "ResizeAndConvert": "raydsconv.images",
    "Manifest": "raydsconv.manifest",
    "verify": "raydsconv.verification",
    "migrate": "raydsconv.migration",
    "VerifyReport": "raydsconv.verification",
    "CorruptDatasetError": "raydsconv.errors",
    "RaydsconvError": "raydsconv.errors",
    "InvalidArgumentError": "raydsconv.errors",
    "ManifestError": "raydsconv.errors",
    "ConversionError": "raydsconv.errors",
    "OutputWriteError": "raydsconv.errors",
    "ClusterUnreachableError": "raydsconv.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from raydsconv.conversion import ConversionReport, convert
    from raydsconv.converters import (
        ConverterFixedSize,
        ConverterFlexibleSize,
        DenseHDF5Converter,
        DenseIpcConverter,
        DenseMemmapConverter,
        DenseParquetConverter,
        DenseTarConverter,
        HDF5Converter,
        Hdf5Converter,
        IpcConverter,
        MemmapConverter,
        ParquetConverter,
        TarConverter,
    )
    from raydsconv.errors import ConversionError, CorruptDatasetError, InvalidArgumentError, ManifestError, RaydsconvError
    from raydsconv.images import ImageSpec, ResizeAndConvert
    from raydsconv.manifest import Manifest
    from raydsconv.migration import migrate
    from raydsconv.verification import VerifyReport, verify
    from raydsconv.sources.segmentation import SegmentationFolder
    from raydsconv.reading.ray_iteration import read_ray
    from raydsconv.reading.sampler import ShardAwareSampler
    from raydsconv.reading.dataset import (
        DenseHDF5Reader,
        DenseIpcReader,
        DenseMemmapReader,
        DenseParquetReader,
        DenseTarReader,
        HDF5Reader,
        Hdf5Reader,
        IpcReader,
        MemmapReader,
        ParquetReader,
        ShardedDataset,
        TarReader,
        collate,
        open_dataset,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raydsconv' has no attribute {name!r}")
    return getattr(import_module(module), name)
