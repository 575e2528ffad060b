"""Reading converted datasets: torch Datasets over any format (no Ray needed)."""

from raydsconv.reading.dataset import (
    HDF5Reader,
    IpcReader,
    MemmapReader,
    ParquetReader,
    ShardedDataset,
    TarReader,
    open_dataset,
)

__all__ = ["HDF5Reader", "IpcReader", "MemmapReader", "ParquetReader", "ShardedDataset", "TarReader", "open_dataset"]
