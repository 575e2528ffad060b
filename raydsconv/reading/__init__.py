"""Reading converted datasets: torch Datasets over any format (no Ray needed)."""

from raydsconv.reading.dataset import (
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

__all__ = ["HDF5Reader", "IpcReader", "MemmapReader", "ParquetReader", "ShardAwareSampler", "ShardedDataset", "TarReader", "collate", "open_dataset"]
