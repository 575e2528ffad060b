"""Run by test_sampler.py: 2 processes, torch.distributed (gloo), each reads its part of a dataset
through ShardAwareSampler + DataLoader; rank 0 writes what every rank read as JSON."""

import json
import sys

import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader


def main(rank: int, dataset_path: str, rendezvous: str, result: str) -> None:
    import raydsconv

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    dataset = raydsconv.open_dataset(dataset_path, output="numpy")
    sampler = raydsconv.ShardAwareSampler(dataset, seed=3)  # rank and world size from torch.distributed
    indices = list(iter(sampler))
    loader = DataLoader(dataset, batch_size=4, sampler=sampler, num_workers=2, collate_fn=raydsconv.collate)
    labels = [int(label) for _, batch_labels in loader for label in batch_labels]
    gathered = [None, None]
    dist.all_gather_object(gathered, {"rank": rank, "indices": indices, "labels": labels})
    if rank == 0:
        with open(result, "w") as file:
            json.dump(gathered, file)
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(main, args=tuple(sys.argv[1:4]), nprocs=2)
