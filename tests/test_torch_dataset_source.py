"""Any map-style torch Dataset as the source: labels and pixels (or bytes) round-trip."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import FakeData

from raydsconv import InvalidArgumentError, MemmapConverter, ResizeAndConvert, convert, open_dataset

pytestmark = pytest.mark.usefixtures("ray_session")


class ArrayDataset(Dataset):
    """Items are (H, W, 3) uint8 numpy arrays; the dataset names its classes."""

    classes = ["cat", "dog"]

    def __init__(self, count: int = 9):
        rng = np.random.default_rng(0)
        self.images = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], index % 2


class TensorPairs(Dataset):
    """TensorDataset-style: (C, H, W) uint8 tensors and tensor targets, no class names."""

    def __init__(self):
        generator = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (7, 3, 10, 10), dtype=torch.uint8, generator=generator)
        self.targets = torch.tensor([0, 4, 1, 4, 2, 0, 3])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


def test_fake_data_to_memmap_and_parquet(tmp_path):
    source = FakeData(size=10, image_size=(3, 20, 30), num_classes=3, random_offset=5)
    report = convert(source, tmp_path / "ds", format="memmap,parquet", shape=(20, 30), images_per_file=4,
                     progress=False)
    assert report.num_samples == 10 and not report.skipped
    fixed = open_dataset(tmp_path / "ds", format="memmap", output="numpy")
    flexible = open_dataset(tmp_path / "ds", format="parquet", output="numpy")
    for i in range(10):
        image, target = source[i]
        assert fixed[i][1] == flexible[i][1] == int(target)
        assert np.array_equal(fixed[i][0], np.asarray(image))  # same size: no resampling, exact
        assert np.array_equal(flexible[i][0], np.asarray(image))  # lossless PNG
        assert Image.open(io.BytesIO(open_dataset(tmp_path / "ds", format="parquet").read_bytes(i))).format == "PNG"
    assert fixed.classes == ["0", "1", "2"][: max(fixed[i][1] for i in range(10)) + 1]


def test_arrays_with_class_names_and_the_predecessor_converter(tmp_path):
    source = ArrayDataset()
    MemmapConverter(input_data=source, output_path=tmp_path / "ds", images_per_file=4, batch_size=3,
                    num_workers=2, shape=(12, 16), im_mode="RGB").convert()
    dataset = open_dataset(tmp_path / "ds", output="numpy")
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 9
    assert all(np.array_equal(dataset[i][0], source.images[i]) and dataset[i][1] == i % 2 for i in range(9))
    assert dataset.source_path(4) == "4"


def test_tensor_pairs_resized_like_a_folder_and_tar(tmp_path):
    source = TensorPairs()
    convert(source, tmp_path / "fixed", shape=(5, 8), mode="L", progress=False)
    convert(source, tmp_path / "tar", format="tar", progress=False)
    fixed, tar = open_dataset(tmp_path / "fixed", output="numpy"), open_dataset(tmp_path / "tar", output="numpy")
    resize = ResizeAndConvert(size=(5, 8), mode="L")
    for i in range(len(source)):
        pil = Image.fromarray(source.images[i].permute(1, 2, 0).numpy())
        assert np.array_equal(fixed[i][0], np.asarray(resize(pil)))
        assert np.array_equal(tar[i][0], source.images[i].permute(1, 2, 0).numpy())
        assert fixed[i][1] == tar[i][1] == int(source.targets[i])
    assert fixed.classes == ["0", "1", "2", "3", "4"]


def test_a_dataset_wrapped_with_resize_and_convert_is_accepted(tmp_path):
    source = FakeData(size=4, image_size=(3, 40, 50), transform=ResizeAndConvert(size=(8, 10), mode="RGB"))
    convert(source, tmp_path / "ds", shape=(8, 10), progress=False)
    dataset = open_dataset(tmp_path / "ds", output="numpy")
    assert all(np.array_equal(dataset[i][0], np.asarray(source[i][0])) for i in range(4))


def test_bad_items_are_skipped_with_a_reason(tmp_path):
    class Mixed(ArrayDataset):
        def __getitem__(self, index):
            if index == 2:
                return "not an image", 0
            if index == 5:
                return self.images[index], "label"
            if index == 7:
                return self.images[index], 2  # the dataset names only 2 classes
            return super().__getitem__(index)

    report = convert(Mixed(), tmp_path / "ds", shape=(12, 16), progress=False)
    assert {s.path for s in report.skipped} == {"2", "5", "7"}
    assert "not one of the dataset's 2 classes" in {s.path: s.reason for s in report.skipped}["7"]
    assert report.num_samples == 6


def test_unpicklable_datasets_get_a_clear_error(tmp_path):
    class Locked(ArrayDataset):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    with pytest.raises(InvalidArgumentError, match="cannot be sent to Ray workers"):
        convert(Locked(), tmp_path / "ds", shape=(12, 16), progress=False)
