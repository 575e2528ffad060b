"""Reading converted datasets: torch Datasets over any format (no Ray needed)."""

from raydsconv.reading.dataset import MemmapReader, ShardedDataset, open_dataset

__all__ = ["MemmapReader", "ShardedDataset", "open_dataset"]
