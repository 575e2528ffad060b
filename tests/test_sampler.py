"""ShardAwareSampler: equal, disjoint, covering, deterministic, resumable; and real DDP reading."""

from __future__ import annotations

import itertools
import json
from collections import Counter
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DataLoader, DistributedSampler

from raydsconv import InvalidArgumentError, ShardAwareSampler, convert, open_dataset

SHARDINGS = [[5], [3, 3, 3], [1, 7, 2, 4], [10] * 5, [2], [0, 4, 0, 3]]


def ranks(sizes, replicas, **options):
    return [list(ShardAwareSampler(shard_sizes=sizes, num_replicas=replicas, rank=r, **options))
            for r in range(replicas)]


@pytest.mark.parametrize("sizes, replicas, drop_last, shuffle, block_size",
                         list(itertools.product(SHARDINGS, [1, 2, 3, 8], [False, True], [True, False], [1, 4, 1000])))
def test_equal_counts_cover_and_disjoint(sizes, replicas, drop_last, shuffle, block_size):
    total = sum(sizes)
    parts = ranks(sizes, replicas, drop_last=drop_last, shuffle=shuffle, block_size=block_size, seed=7)
    lengths = {len(part) for part in parts}
    assert len(lengths) == 1  # every rank the same number of samples
    joined = [i for part in parts for i in part]
    if drop_last:
        assert len(joined) == total // replicas * replicas and len(set(joined)) == len(joined)
    else:
        assert set(joined) == set(range(total)) and len(joined) == -(-total // replicas) * replicas
        # padding repeats as few samples as needed, no sample more than the padding allows
        assert max(np.bincount(joined, minlength=total)) <= 1 + -(-replicas // max(total, 1))
    assert parts == ranks(sizes, replicas, drop_last=drop_last, shuffle=shuffle, block_size=block_size, seed=7)


def test_epochs_and_seeds_change_the_order_and_shards_stay_local():
    sizes = [100] * 20
    sampler = ShardAwareSampler(shard_sizes=sizes, num_replicas=4, rank=1, seed=0, block_size=1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(ShardAwareSampler(shard_sizes=sizes, num_replicas=4, rank=1, seed=1, block_size=1)) != first
    # block_size=1 mixes within a shard only: a rank reads whole shards of its own (20 / 4 = 5)
    assert len({index // 100 for index in first}) == 5
    assert len({index // 100 for index in first[:100]}) == 1


@pytest.mark.parametrize("replicas", [1, 3])
def test_resume_continues_at_the_next_unseen_sample(replicas):
    sizes = [4, 9, 3, 6]
    for rank in range(replicas):
        full = list(ShardAwareSampler(shard_sizes=sizes, num_replicas=replicas, rank=rank, seed=5, block_size=5))
        for consumed in range(len(full) + 1):
            sampler = ShardAwareSampler(shard_sizes=sizes, num_replicas=replicas, rank=rank, seed=5, block_size=5)
            seen = list(itertools.islice(iter(sampler), consumed))
            state = sampler.state_dict()
            resumed = ShardAwareSampler(shard_sizes=sizes, num_replicas=replicas, rank=rank, seed=5, block_size=5)
            resumed.load_state_dict(json.loads(json.dumps(state)))
            assert len(resumed) == len(full) - consumed
            assert seen + list(resumed) == full
            assert list(resumed) == full  # the epoch after the resumed one starts from the beginning


def test_resume_refuses_a_different_setup():
    state = ShardAwareSampler(shard_sizes=[3, 3], num_replicas=2, rank=0).state_dict()
    with pytest.raises(InvalidArgumentError, match="num_replicas"):
        ShardAwareSampler(shard_sizes=[3, 3], num_replicas=3, rank=0).load_state_dict(state)
    with pytest.raises(InvalidArgumentError, match="rank 2"):
        ShardAwareSampler(shard_sizes=[3], num_replicas=2, rank=2)


@pytest.fixture(scope="module")
def dataset_path(small_folder, tmp_path_factory, ray_session):
    path = tmp_path_factory.mktemp("sampler") / "ds"
    convert(small_folder, path, shape=(8, 8), images_per_file=5, progress=False)
    return path


def test_same_order_whatever_the_number_of_workers(dataset_path):
    dataset = open_dataset(dataset_path, output="numpy")
    orders = []
    for workers in (0, 2):
        sampler = ShardAwareSampler(dataset, num_replicas=2, rank=1, seed=11)
        loader = DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=workers)
        orders.append([int(label) for _, labels in loader for label in labels])
    expected = [dataset[i][1] for i in ShardAwareSampler(dataset, num_replicas=2, rank=1, seed=11)]
    assert orders[0] == orders[1] == expected


def test_torch_distributed_sampler_works_with_our_readers(dataset_path):
    dataset = open_dataset(dataset_path, output="tensor")
    seen = []
    for rank in range(2):
        loader = DataLoader(dataset, batch_size=4, sampler=DistributedSampler(dataset, num_replicas=2, rank=rank),
                            num_workers=2)
        seen.extend(int(label) for _, labels in loader for label in labels)
    expected = Counter(dataset[i][1] for i in range(len(dataset)))
    assert not expected - Counter(seen)  # every sample read
    assert sum((Counter(seen) - expected).values()) == len(seen) - len(dataset) == len(dataset) % 2


def test_two_process_ddp_reads_disjoint_parts(dataset_path, tmp_path):
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_read.py"), str(dataset_path),
                           str(tmp_path / "rendezvous"), str(result)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = json.loads(result.read_text())
    dataset = open_dataset(dataset_path)
    assert [p["rank"] for p in parts] == [0, 1]
    first, second = (set(p["indices"]) for p in parts)
    assert len(parts[0]["indices"]) == len(parts[1]["indices"])
    assert first | second == set(range(len(dataset)))
    assert len(first & second) <= len(dataset) % 2  # only the padding sample may repeat
    for part in parts:
        assert part["labels"] == [dataset[i][1] for i in part["indices"]]


def test_state_saved_at_the_end_of_an_epoch_resumes_with_the_next_epoch():
    sampler = ShardAwareSampler(shard_sizes=[4, 4], num_replicas=2, rank=0, seed=2)
    list(sampler)
    state = sampler.state_dict()
    resumed = ShardAwareSampler(shard_sizes=[4, 4], num_replicas=2, rank=0, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(state["epoch"] + 1)
    sampler.set_epoch(state["epoch"] + 1)
    assert list(resumed) == list(sampler) and len(list(resumed)) == 4
