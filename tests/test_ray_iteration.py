"""Converted data as a ray.data.Dataset, for every format."""

from __future__ import annotations

import numpy as np
import pytest

import raydsconv
from raydsconv import convert, open_dataset
from raydsconv.formats import FORMATS


@pytest.fixture(scope="module")
def every_format(small_folder, tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("ray") / "ds"
    convert(small_folder, root, format=sorted(FORMATS), shape=(10, 12), images_per_file=7, progress=False)
    return root


@pytest.fixture
def ordered(ray_session):
    context = ray_session.data.DataContext.get_current()
    saved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    yield
    context.execution_options.preserve_order = saved


@pytest.mark.usefixtures("ordered")
@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_sample_once_in_manifest_order(every_format, name):
    ours = open_dataset(every_format, format=name, output="numpy")
    rows = raydsconv.read_ray(every_format, format=name).take_all()
    assert [int(row["label"]) for row in rows] == [ours[i][1] for i in range(len(ours))]
    assert all(np.array_equal(row["image"], ours[i][0]) for i, row in enumerate(rows))
    if not FORMATS[name].fixed_size:
        raw = raydsconv.read_ray(every_format, format=name, decode=False).take_all()
        assert [bytes(row["image"]) for row in raw] == [ours.read_bytes(i) for i in range(len(ours))]


def test_batches_torch_batches_and_streaming_split(every_format):
    dataset = open_dataset(every_format, format="memmap").to_ray()
    total = sum(len(batch["label"]) for batch in dataset.iter_batches(batch_size=5))
    assert total == len(open_dataset(every_format, format="memmap"))
    batch = next(iter(dataset.iter_torch_batches(batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 10, 12, 3) and str(batch["image"].dtype) == "torch.uint8"
    left, right = dataset.streaming_split(2, equal=False)
    import threading

    counts = [0, 0]

    def consume(which, iterator):
        counts[which] = sum(len(b["label"]) for b in iterator.iter_batches(batch_size=4))

    threads = [threading.Thread(target=consume, args=(i, it)) for i, it in enumerate((left, right))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(counts) == total
