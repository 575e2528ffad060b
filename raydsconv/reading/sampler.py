"""ShardAwareSampler: distributed, shard-local, seeded and resumable sampling for any reader.

Each epoch, shards are put in a seeded random order and grouped into blocks of about
``block_size`` samples; samples are shuffled within each block (MosaicML-style shard-level
shuffling), and each rank takes one contiguous part of that order. So a rank reads mostly whole
shards of its own (locality on parallel filesystems) while batches still mix many shards. Every
rank gets the same number of samples: the order is padded by repeating its start (or cut, with
``drop_last``), as torch's DistributedSampler does. The order depends only on (seed, epoch,
num_replicas) — never on the number of DataLoader workers.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from raydsconv.errors import InvalidArgumentError

DEFAULT_BLOCK_SIZE = 262_144  # samples mixed together, as MosaicML streaming's default shuffle block


class ShardAwareSampler(Sampler[int]):
    """Args:
    dataset: a raydsconv reader (its manifest gives the shard sizes); or pass ``shard_sizes``.
    num_replicas, rank: default to torch.distributed's world size and rank (1 and 0 without it).
    shuffle: shuffle shards and samples each epoch (False: storage order).
    seed: the same seed gives the same order on every rank and every run.
    drop_last: cut the order to a multiple of num_replicas instead of padding it.
    block_size: about how many samples are shuffled together.
    """

    def __init__(
        self,
        dataset: Any = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        block_size: int = DEFAULT_BLOCK_SIZE,
        shard_sizes: Sequence[int] | None = None,
    ):
        if shard_sizes is None:
            shard_sizes = [shard.num_samples for shard in dataset.manifest.shards]
        self.shard_sizes = np.asarray(shard_sizes, dtype=np.int64)
        if num_replicas is None or rank is None:
            world, me = _distributed_world()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise InvalidArgumentError(f"rank {rank} is not in [0, {num_replicas})")
        if block_size < 1:
            raise InvalidArgumentError(f"block_size must be positive, got {block_size}")
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.block_size = shuffle, seed, drop_last, block_size
        total = int(self.shard_sizes.sum())
        self.num_samples = total // num_replicas if drop_last else math.ceil(total / num_replicas)
        self.epoch = 0
        self._resume_at = 0  # samples of this epoch already consumed (after load_state_dict)
        self._yielded = 0

    def global_order(self, epoch: int) -> np.ndarray:
        """Every rank's samples of ``epoch``, rank after rank (padded or cut to equal parts)."""
        rng = np.random.default_rng([self.seed, epoch])
        starts = np.concatenate([[0], np.cumsum(self.shard_sizes)])
        shard_order = rng.permutation(len(self.shard_sizes)) if self.shuffle else np.arange(len(self.shard_sizes))
        parts, block, block_samples = [], [], 0
        for shard in shard_order:
            block.append(np.arange(starts[shard], starts[shard + 1]))
            block_samples += int(self.shard_sizes[shard])
            if block_samples >= self.block_size:
                parts.append(self._mixed(block, rng))
                block, block_samples = [], 0
        if block:
            parts.append(self._mixed(block, rng))
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        wanted = self.num_samples * self.num_replicas
        if len(order) and len(order) < wanted:
            order = np.resize(order, wanted)  # repeats the start, as DistributedSampler pads
        return order[:wanted]

    def _mixed(self, block: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        samples = np.concatenate(block)
        return rng.permutation(samples) if self.shuffle else samples

    def __iter__(self) -> Iterator[int]:
        mine = self.global_order(self.epoch)[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        for index in mine[start:]:
            self._yielded += 1
            yield int(index)

    def __len__(self) -> int:
        return self.num_samples - self._resume_at

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a resumed position belongs to the epoch it was saved in
            self._resume_at = self._yielded = 0
        self.epoch = epoch

    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Where this rank is in the epoch. Pass ``consumed`` (samples your loop has used this
        epoch) when a DataLoader prefetches ahead of the loop; by default, what was yielded."""
        return {"epoch": self.epoch, "consumed": self._yielded if consumed is None else consumed,
                "seed": self.seed, "num_replicas": self.num_replicas, "shuffle": self.shuffle,
                "drop_last": self.drop_last, "block_size": self.block_size,
                "num_samples_total": int(self.shard_sizes.sum())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues the saved epoch at its next unseen sample."""
        for key in ("seed", "num_replicas", "shuffle", "drop_last", "block_size"):
            if state[key] != getattr(self, key):
                raise InvalidArgumentError(f"cannot resume: saved {key}={state[key]!r}, this sampler has {getattr(self, key)!r}")
        if state["num_samples_total"] != int(self.shard_sizes.sum()):
            raise InvalidArgumentError("cannot resume: the saved state belongs to a dataset of another size")
        self.epoch = state["epoch"]
        self._resume_at = int(state["consumed"])


def _distributed_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
