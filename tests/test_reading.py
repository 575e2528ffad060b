"""Training-side reading: batched fetch, output types, the no-copy collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import raydsconv
from raydsconv import InvalidArgumentError, convert, open_dataset

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def both(small_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("read") / "ds"
    convert(small_folder, root, format="memmap,hdf5,tar", shape=(10, 14), images_per_file=6, progress=False)
    return root


@pytest.mark.parametrize("name", ["memmap", "hdf5", "tar"])
def test_getitems_equals_per_item_access(both, name):
    dataset = open_dataset(both, format=name, output="numpy")
    indices = [5, 0, 17, 6, 7, 8, 30, 5, len(dataset) - 1]
    batch = dataset.__getitems__(indices)
    assert [label for _, label in batch] == [dataset[i][1] for i in indices]
    assert all(np.array_equal(image, dataset[i][0]) for (image, _), i in zip(batch, indices))


@pytest.mark.parametrize("name", ["memmap", "hdf5"])
def test_output_types_of_fixed_formats(both, name):
    pil = open_dataset(both, format=name)[3][0]
    array = open_dataset(both, format=name, output="numpy")[3][0]
    tensor = open_dataset(both, format=name, output="tensor")[3][0]
    assert pil.size == (14, 10)
    assert array.shape == (10, 14, 3) and array.dtype == np.uint8
    assert tensor.shape == (3, 10, 14) and tensor.dtype == torch.uint8
    assert np.array_equal(np.asarray(pil), array) and np.array_equal(tensor.permute(1, 2, 0).numpy(), array)
    with pytest.raises(InvalidArgumentError, match="output"):
        open_dataset(both, format=name, output="bytes")


def test_output_types_of_flexible_formats(both, small_folder):
    dataset = open_dataset(both, format="tar", output="bytes")
    data = dataset[3][0]
    assert data == (small_folder / dataset.source_path(3)).read_bytes()
    array = open_dataset(both, format="tar", output="numpy")[3][0]
    tensor = open_dataset(both, format="tar", output="tensor")[3][0]
    assert array.ndim == 3 and array.shape[2] == 3
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), array)


@pytest.mark.parametrize("output", ["numpy", "tensor"])
def test_collate_returns_the_batch_array_without_restacking(both, output):
    dataset = open_dataset(both, format="memmap", output=output)
    loader = DataLoader(dataset, batch_size=8, shuffle=True, num_workers=2, collate_fn=raydsconv.collate,
                        generator=torch.Generator().manual_seed(0))
    seen = 0
    for images, labels in loader:
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        assert images.shape[1:] == ((10, 14, 3) if output == "numpy" else (3, 10, 14))
        seen += len(labels)
    assert seen == len(dataset)
    # The same batches through the default collate give the same tensors.
    batch = dataset.__getitems__([4, 2, 9])
    images, labels = raydsconv.collate(batch)
    default_images, default_labels = torch.utils.data.default_collate(list(batch))
    assert torch.equal(images, default_images) and torch.equal(labels, default_labels)


def test_unknown_output_is_refused(both):
    with pytest.raises(InvalidArgumentError, match="output must be one of"):
        open_dataset(both, format="memmap", output="jpeg")


def test_draft_decoding_is_opt_in_and_keeps_the_requested_size(tmp_path, ray_session):
    from raydsconv.samples import write_image_folder

    write_image_folder(tmp_path / "src", num_images=2, num_classes=1, sizes=((800, 600),))
    convert(tmp_path / "src", tmp_path / "ds", format="tar", progress=False)
    full = open_dataset(tmp_path / "ds")[0][0]
    small = open_dataset(tmp_path / "ds", draft=(150, 200))[0][0]
    assert full.size == (800, 600)
    assert small.size == (200, 150)  # libjpeg's 1/4 scale: the smallest still >= 200x150
