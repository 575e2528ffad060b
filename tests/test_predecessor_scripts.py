"""The predecessor's (hpc_pytorch_loader) users' scripts run unchanged: its converter keywords
(dist, rank, num_replicas, num_workers=0), ResizeAndConvert(shape=...), Hdf5Reader,
Reader.worker_init_fn, the attributes its scripts read, and its VOC recipe's mistake caught at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder, VOCSegmentation
from torchvision.transforms import Compose

import raydsconv
from raydsconv import InvalidArgumentError, ResizeAndConvert
from raydsconv.predecessor import ShardCounts
from raydsconv.samples import photo_like, write_image_folder, write_segmentation_folder

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """9 JPEGs in 3 classes: with 4 images per file, shards of 4, 4 and 1, nothing skipped."""
    root = tmp_path_factory.mktemp("predecessor") / "train"
    write_image_folder(root, num_images=9, num_classes=3, sizes=((40, 30), (30, 40)))
    return root


@pytest.fixture
def run_shards_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every call of the pipeline (which still runs)."""
    import raydsconv.pipeline

    calls, run_shards = [], raydsconv.pipeline.run_shards

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return run_shards(*args, **kwargs)

    monkeypatch.setattr(raydsconv.pipeline, "run_shards", spy)
    return calls


def predecessor_attributes(obj) -> dict:
    return {name: getattr(obj, name) for name in
            ("len", "images_per_file", "total_num_arrays", "len_last_array", "shape", "class_to_idx")}


def test_dist_false_and_num_workers_0_convert_with_one_task_and_exact_labels(folder, tmp_path, run_shards_calls):
    # The predecessor's examples: positional arguments, num_workers=0 (their default), dist=False.
    converter = raydsconv.MemmapConverter(folder, tmp_path / "ds", 4, 3, 0, (10, 12), "L", dist=False)
    report = converter.convert()
    assert [call["concurrency"] for call in run_shards_calls] == [1]  # 0 workers: one task at a time
    assert report.num_samples == 9 and not report.skipped
    reader = raydsconv.MemmapReader(tmp_path / "ds")
    assert [int(label) for _, label in reader] == ImageFolder(str(folder)).targets
    assert reader[0][0].size == (12, 10)


def test_num_workers_must_still_be_a_count(folder, tmp_path):
    with pytest.raises(InvalidArgumentError, match="num_workers must be a non-negative integer, got -1"):
        raydsconv.convert(folder, tmp_path / "ds", shape=(8, 8), num_workers=-1)
    assert not (tmp_path / "ds").exists()


def test_dist_true_on_one_rank_converts_as_always_and_several_ranks_are_refused_at_construction(folder, tmp_path,
                                                                                                monkeypatch):
    single = raydsconv.ParquetConverter(folder, tmp_path / "one", 4, 2, 0, dist=True, rank=0, num_replicas=1)
    assert (single.dist, single.rank, single.num_replicas) == (True, 0, 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert raydsconv.TarConverter(folder, tmp_path / "two", 4, 2, 0, dist=True).num_replicas == 1
    # dist=False ignores the ranks, as the predecessor did: one whole conversion.
    assert raydsconv.MemmapConverter(folder, tmp_path / "three", 4, 2, 0, (8, 8), dist=False, rank=3,
                                     num_replicas=4).rank == 3

    with pytest.raises(InvalidArgumentError) as refused:
        raydsconv.MemmapConverter(folder, tmp_path / "four", 4, 2, 0, (8, 8), "RGB", dist=True, rank=1, num_replicas=4)
    message = str(refused.value)
    assert "\n" not in message and "dist=True with 4 ranks" in message
    assert "run it once (one process, not one per rank)" in message and "jobs/slurm/convert.sbatch" in message
    monkeypatch.setenv("WORLD_SIZE", "8")  # as torchrun sets it, without a process group
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(InvalidArgumentError, match="dist=True with 8 ranks"):
        raydsconv.HDF5Converter(folder, tmp_path / "five", 4, 2, 0, (8, 8), dist=True)
    with pytest.raises(InvalidArgumentError, match="rank 2 of 1 ranks"):
        raydsconv.IpcConverter(folder, tmp_path / "six", 4, 2, 0, dist=True, rank=2, num_replicas=1)
    assert not any(tmp_path.iterdir())  # nothing was written by any of them


def test_dist_true_with_the_ranks_of_a_slurm_step_is_one_conversion_over_them(folder, tmp_path, monkeypatch):
    # Under `srun -n 2 python convert.py` the step's ranks share one conversion (raydsconv.slurm; run for
    # real in test_slurm.py): dist=True is accepted with those ranks, whatever gave them.
    import raydsconv.slurm

    monkeypatch.setattr(raydsconv.slurm, "_ray_running", lambda: False)  # this test session's Ray aside
    for name, value in {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                        "SLURM_NODEID": "1", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "2"}.items():
        monkeypatch.setenv(name, value)
    for name in ("WORLD_SIZE", "RANK", "RAY_ADDRESS", "RAYDSCONV_SLURM_RANKS"):
        monkeypatch.delenv(name, raising=False)
    given = raydsconv.MemmapConverter(folder, tmp_path / "one", 4, 2, 0, (8, 8), dist=True, rank=1, num_replicas=2)
    assert (given.rank, given.num_replicas) == (1, 2)
    assert (raydsconv.TarConverter(folder, tmp_path / "two", 4, 2, 0, dist=True).num_replicas) == 2  # from SLURM

    with pytest.raises(InvalidArgumentError, match=r"dist=True with 4 ranks; this SLURM step has 2 ranks, this one "
                                                   r"rank 1: pass those, or none"):
        raydsconv.MemmapConverter(folder, tmp_path / "three", 4, 2, 0, (8, 8), dist=True, rank=1, num_replicas=4)
    with pytest.raises(InvalidArgumentError, match="dist=True with 2 ranks: .*under srun -n N"):  # its own cluster
        raydsconv.MemmapConverter(folder, tmp_path / "four", 4, 2, 0, (8, 8), dist=True, address="head:6379")
    monkeypatch.setenv("RAYDSCONV_SLURM_RANKS", "0")  # opted out: each rank would convert everything
    with pytest.raises(InvalidArgumentError, match="dist=True with 2 ranks"):
        raydsconv.MemmapConverter(folder, tmp_path / "five", 4, 2, 0, (8, 8), dist=True)
    assert not any(tmp_path.iterdir())


def test_resize_and_convert_takes_the_predecessors_shape_keyword():
    image = photo_like(np.random.default_rng(3), 40, 30)
    by_shape = ResizeAndConvert(shape=(8, 8), mode="L")(image)
    assert by_shape.mode == "L" and by_shape.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(by_shape), np.asarray(ResizeAndConvert(size=(8, 8), mode="L")(image)))
    # (height, width) as size is, and positional as in the predecessor's README.
    assert ResizeAndConvert(shape=(6, 10), mode="RGB")(image).size == (10, 6)
    np.testing.assert_array_equal(np.asarray(ResizeAndConvert((6, 10), "RGB")(image)),
                                  np.asarray(ResizeAndConvert(shape=(6, 10), mode="RGB")(image)))
    with pytest.raises(InvalidArgumentError, match="size=.* and shape=.*give one of them"):
        ResizeAndConvert(size=(8, 8), shape=(6, 6))
    with pytest.raises(InvalidArgumentError, match="needs size"):
        ResizeAndConvert(mode="L")


def test_hdf5_spelling_attributes_and_worker_init_fn(folder, tmp_path):
    classes = {"class_000": 0, "class_001": 1, "class_002": 2}
    expected = {"len": 9, "images_per_file": 4, "total_num_arrays": 3, "len_last_array": 1, "shape": (12, 10),
                "class_to_idx": classes}
    converter = raydsconv.Hdf5Converter(folder, tmp_path / "ds", 4, 3, 0, (12, 10), "RGB", dist=False)
    assert predecessor_attributes(converter) == expected  # known before convert(), from the source
    assert (converter.length, converter.num_arrays, converter.im_mode) == (9, 3, "RGB")
    converter.convert()
    assert predecessor_attributes(converter) == expected  # and after it, from what was written

    assert raydsconv.Hdf5Reader is raydsconv.HDF5Reader
    reader = raydsconv.Hdf5Reader(tmp_path / "ds")
    assert predecessor_attributes(reader) == expected and reader.mode == "RGB"
    assert [len(reader.reader.shard_range(k)) for k in range(reader.total_num_arrays)] == [4, 4, 1]
    # The predecessor's README passes worker_init_fn; reading works the same with it.
    loader = DataLoader(reader, batch_size=4, num_workers=2, worker_init_fn=raydsconv.Hdf5Reader.worker_init_fn,
                        collate_fn=lambda batch: [label for _, label in batch])
    assert [label for batch in loader for label in batch] == ImageFolder(str(folder)).targets
    assert raydsconv.MemmapReader.worker_init_fn(0) is None


def test_attributes_of_flexible_formats_and_of_a_full_last_shard(folder, tmp_path):
    # As the predecessor recorded it: len_last_array is 0 when the last file is full; no shape.
    converter = raydsconv.TarConverter(folder, tmp_path / "ds", 3, 3, 0)
    assert (converter.len, converter.total_num_arrays, converter.len_last_array) == (9, 3, 0)
    assert not hasattr(converter, "shape")
    assert ShardCounts((3, 3, 2), 3).len_last_array == 2 and ShardCounts((3, 3, 3), 3).len_last_array == 0
    assert ShardCounts.planned(10, 4) == ShardCounts((4, 4, 2), 4)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """A generated Pascal VOC 2012 tree, as torchvision's VOCSegmentation reads it (train: 2 samples)."""
    root = tmp_path_factory.mktemp("voc")
    write_segmentation_folder(root / "VOCdevkit" / "VOC2012", num_images=4, layout="voc", num_classes=5)
    return root


def voc_converter(dataset, output: Path, **options):
    # The predecessor's examples/dense_labels/pascal_conversion_test.py, as its users ran it.
    return raydsconv.DenseMemmapConverter(input_data=dataset, output_path=output, images_per_file=1000, batch_size=250,
                                          num_workers=0, dist=False, im_mode="RGB", shape=(256, 256), **options)


@pytest.fixture
def no_pipeline(monkeypatch):
    import raydsconv.pipeline

    def fail(*args, **kwargs):
        raise AssertionError("the conversion started")

    monkeypatch.setattr(raydsconv.pipeline, "run_shards", fail)


@pytest.mark.parametrize("wrap", [lambda t: t, lambda t: Compose([t])], ids=["plain", "compose"])
def test_the_voc_recipe_resizing_masks_as_images_fails_at_once(voc_root, tmp_path, no_pipeline, wrap):
    transform = wrap(ResizeAndConvert(shape=(256, 256), mode="RGB"))
    dataset = VOCSegmentation(root=str(voc_root), year="2012", image_set="train", download=False,
                              transform=transform, target_transform=transform)
    with pytest.raises(InvalidArgumentError) as refused:
        voc_converter(dataset, tmp_path / "voc").convert()
    message = str(refused.value)
    assert "\n" not in message
    assert "VOCSegmentation's target_transform is ResizeAndConvert(size=(256, 256), mode='RGB'" in message
    assert "no mask would be a class map" in message
    assert "give the dataset neither transform nor target_transform" in message and "nearest neighbour" in message
    assert not (tmp_path / "voc").exists()


def test_masks_made_rgb_by_any_target_transform_fail_at_once(voc_root, tmp_path, no_pipeline):
    dataset = VOCSegmentation(root=str(voc_root), year="2012", image_set="train", download=False,
                              target_transform=lambda mask: mask.convert("RGB"))
    with pytest.raises(InvalidArgumentError, match="item 0 of the VOCSegmentation has a mask that is an RGB image, "
                                                   "not a class map .*mask_mode='RGB'"):
        raydsconv.convert(dataset, tmp_path / "voc", shape=(32, 32), dense=True)
    assert not (tmp_path / "voc").exists()


def test_the_voc_recipe_as_the_message_says_converts_every_mask(voc_root, tmp_path):
    dataset = VOCSegmentation(root=str(voc_root), year="2012", image_set="train", download=False)
    report = voc_converter(dataset, tmp_path / "voc", resize="crop").convert()
    assert report.num_samples == len(dataset) == 2 and not report.skipped
    reader = raydsconv.DenseMemmapReader(tmp_path / "voc", output="numpy")
    for i in range(len(dataset)):
        image, mask = reader[i]
        assert image.shape == (256, 256, 3) and mask.shape == (256, 256)
        assert set(np.unique(mask)) <= set(np.unique(np.asarray(dataset[i][1])))  # nearest: no new values
        assert isinstance(dataset[i][1], Image.Image)
