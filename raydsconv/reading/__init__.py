"""Reading converted datasets: a core without torch or Ray (``core``, ``decoders``) and adapters over
it: the torch Dataset (``dataset``), the Ray datasource (``ray_iteration``), the sampler. Names are
resolved on first use, so that importing the core imports neither torch nor Ray."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    **dict.fromkeys(["DenseHDF5Reader", "DenseIpcReader", "DenseMemmapReader", "DenseParquetReader", "DenseTarReader",
                     "HDF5Reader", "Hdf5Reader", "IpcReader", "MemmapReader", "ParquetReader", "ShardedDataset", "TarReader",
                     "collate", "open_dataset"], "raydsconv.reading.dataset"),
    "ShardAwareSampler": "raydsconv.reading.sampler",
    "DatasetReader": "raydsconv.reading.core",
    "Decoder": "raydsconv.reading.decoders",
    "register_decoder": "raydsconv.reading.decoders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'raydsconv.reading' has no attribute {name!r}")
    return getattr(import_module(module), name)
