"""Reading converted datasets: torch Datasets over any format (no Ray needed)."""

from raydsconv.reading.dataset import (
    DenseHDF5Reader,
    DenseIpcReader,
    DenseMemmapReader,
    DenseParquetReader,
    DenseTarReader,
    HDF5Reader,
    IpcReader,
    MemmapReader,
    ParquetReader,
    ShardedDataset,
    TarReader,
    collate,
    open_dataset,
)
from raydsconv.reading.sampler import ShardAwareSampler

__all__ = ["DenseHDF5Reader", "DenseIpcReader", "DenseMemmapReader", "DenseParquetReader", "DenseTarReader",
           "HDF5Reader", "IpcReader", "MemmapReader", "ParquetReader", "ShardAwareSampler", "ShardedDataset",
           "TarReader", "collate", "open_dataset"]
