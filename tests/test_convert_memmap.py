"""Folder -> memmap through the Ray pipeline, and back through the reader."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from reference import assert_matches_reference
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import PILToTensor

import raydsconv
from raydsconv import ConversionError, InvalidArgumentError, ManifestError, MemmapReader, convert, open_dataset
from raydsconv.layout import INDEX_FILE, MANIFEST_FILE, META_DIR
from raydsconv.sources.folder import list_image_folder

pytestmark = pytest.mark.usefixtures("ray_session")


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def converted(small_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("out") / "ds"
    report = convert(small_folder, output, shape=(24, 40), images_per_file=7, progress=False)
    return report, output


def test_round_trip_pixels_labels_and_paths(converted, small_folder):
    report, output = converted
    listing = list_image_folder(small_folder)
    dataset = MemmapReader(output)
    expected_skipped = {"odd/empty.jpg", "odd/random_bytes.png", "odd/readme.txt", "odd/truncated.jpg"}
    assert {s.path for s in report.skipped} == expected_skipped
    kept = [(p, label) for p, label in zip(listing.paths, listing.labels.tolist()) if p not in expected_skipped]
    assert len(dataset) == report.num_samples == len(kept)
    assert dataset.classes == listing.classes
    assert dataset.class_to_idx == {name: i for i, name in enumerate(listing.classes)}
    for i, (path, label) in enumerate(kept):
        image, target = dataset[i]
        assert (dataset.source_path(i), target) == (path, label)
        assert image.size == (40, 24) and image.mode == "RGB"
        assert_matches_reference(np.asarray(image), (small_folder / path).read_bytes(), (24, 40), what=path)


def test_shards_are_real_npy_files_and_manifest_describes_them(converted):
    report, output = converted
    manifest = json.loads((output / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 3 and manifest["format"] == "memmap"
    assert manifest["plan"]["image"]["shape"] == [24, 40] and manifest["plan"]["images_per_file"] == 7
    assert manifest["params"]["shape"] == [24, 40] and manifest["params"]["mode"] == "RGB"
    assert manifest["num_samples"] == report.num_samples
    assert {s["path"] for s in manifest["skipped"]} == {s.path for s in report.skipped}
    assert all(s["reason"] for s in manifest["skipped"])
    assert manifest["source"]["kind"] == "folder"
    # 7 inputs per shard: a skipped input makes its shard shorter, never moves samples across shards.
    total_inputs = report.num_candidates
    assert len(manifest["shards"]) == -(-total_inputs // 7)
    for shard in manifest["shards"]:
        images = np.load(output / shard["files"]["images"]["name"], mmap_mode="r")
        labels = np.load(output / shard["files"]["labels"]["name"])
        assert images.shape == (shard["num_samples"], 24, 40, 3) and images.dtype == np.uint8
        assert labels.shape == (shard["num_samples"],) and labels.dtype == np.int64
        for role, f in shard["files"].items():
            data = (output / f["name"]).read_bytes()
            assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    index = pq.read_table(output / INDEX_FILE).to_pydict()
    assert len(index["path"]) == report.num_samples
    assert index["label"] == [open_dataset(output)[i][1] for i in range(report.num_samples)]
    exif = index["path"].index("odd/exif_rotated.jpg")
    assert (index["width"][exif], index["height"][exif], index["source_format"][exif]) == (64, 96, "JPEG")
    assert index["source_format"][index["path"].index("odd/png_named.JPEG")] == "PNG"
    assert [p.name for p in output.glob(".*")] == [META_DIR], "temporary files left behind"


@pytest.mark.parametrize("policy", ["crop", "pad"])
@pytest.mark.parametrize("shape, mode", [((16, 16), "RGB"), ((12, 20), "L")])
def test_resize_policies_and_modes_round_trip(small_folder, tmp_path, policy, shape, mode):
    report = convert(small_folder, tmp_path / "ds", shape=shape, mode=mode, resize=policy,
                     images_per_file=50, progress=False)
    dataset = open_dataset(tmp_path / "ds")
    assert len(dataset) == report.num_samples
    for i in range(len(dataset)):
        image, _ = dataset[i]
        assert image.mode == mode
        path = dataset.source_path(i)
        assert_matches_reference(np.asarray(image), (small_folder / path).read_bytes(), shape, mode, policy, path)


def test_output_is_byte_identical_whatever_the_parallelism(small_folder, tmp_path):
    convert(small_folder, tmp_path / "one", shape=(16, 16), images_per_file=5, num_workers=1, batch_size=3, progress=False)
    convert(small_folder, tmp_path / "two", shape=(16, 16), images_per_file=5, num_workers=2, batch_size=64, progress=False)
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_different_shard_sizes_store_the_same_samples(small_folder, tmp_path):
    small = convert(small_folder, tmp_path / "a", shape=(16, 16), images_per_file=1, progress=False)
    large = convert(small_folder, tmp_path / "b", shape=(16, 16), images_per_file=1000, progress=False)
    a, b = open_dataset(tmp_path / "a"), open_dataset(tmp_path / "b")
    assert small.num_shards == small.num_candidates and large.num_shards == 1
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a.source_path(i) == b.source_path(i)
        assert a[i][1] == b[i][1]
        assert np.array_equal(np.asarray(a[i][0]), np.asarray(b[i][0]))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_with_two_workers(converted, context):
    _, output = converted
    dataset = MemmapReader(output, transform=PILToTensor())
    direct = [dataset[i] for i in range(len(dataset))]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, multiprocessing_context=context)
    images, labels = [], []
    for batch_images, batch_labels in loader:
        images.extend(batch_images)
        labels.extend(batch_labels.tolist())
    assert labels == [label for _, label in direct]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, (b, _) in zip(images, direct))


def test_reader_pickles_small_and_reopens_lazily(converted):
    _, output = converted
    dataset = MemmapReader(output)
    assert dataset.reader._reader is None  # nothing is opened at construction
    dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone.reader._reader is None
    assert np.array_equal(np.asarray(clone[3][0]), np.asarray(dataset[3][0]))
    assert len(pickle.dumps(dataset)) < 20_000
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_non_empty_output_is_refused_unless_overwrite(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, shape=(8, 8), progress=False)
    with pytest.raises(InvalidArgumentError, match=r"not empty: .*image.shape: \[6, 6\] now, \[8, 8\] in the output"):
        convert(small_folder, output, shape=(6, 6), progress=False)
    convert(small_folder, output, shape=(6, 6), overwrite=True, progress=False)
    assert open_dataset(output)[0][0].size == (6, 6)
    # A folder with files raydsconv did not write is never deleted, overwrite or not.
    (output / MANIFEST_FILE).unlink()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(InvalidArgumentError, match="did not write"):
        convert(small_folder, output, shape=(8, 8), overwrite=True, progress=False)
    assert (output / "notes.txt").read_text() == "mine"


def test_strict_mode_names_the_bad_file_and_writes_no_manifest(small_folder, tmp_path):
    with pytest.raises(ConversionError, match=r"odd/(empty|random_bytes|readme|truncated)"):
        convert(small_folder, tmp_path / "ds", shape=(8, 8), strict=True, progress=False)
    assert not (tmp_path / "ds" / MANIFEST_FILE).exists()
    # What strict mode left behind is ours, so a plain overwrite cleans it up.
    convert(small_folder, tmp_path / "ds", shape=(8, 8), overwrite=True, progress=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"shape": None}, "shape"),
        ({"shape": (0, 8)}, "shape"),
        ({"shape": (8, 8), "mode": "XYZ"}, "mode"),
        ({"shape": (8, 8), "images_per_file": 0}, "images_per_file"),
        ({"shape": (8, 8), "format": "zarr"}, "unknown format"),
    ],
)
def test_bad_arguments_fail_before_any_work(small_folder, tmp_path, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        convert(small_folder, tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


def test_output_inside_source_is_refused(small_folder):
    with pytest.raises(InvalidArgumentError, match="inside the source"):
        convert(small_folder, small_folder / "class_0" / "out", shape=(8, 8))


def test_damaged_manifests_are_refused_with_the_file_named(converted, tmp_path):
    _, output = converted
    copy = shutil.copytree(output, tmp_path / "copy")
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ManifestError, match=r"manifest.json: format_version 99 is not supported"):
        open_dataset(copy)
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "zarr"}))
    with pytest.raises(ManifestError, match=r"manifest.json: unknown format 'zarr'"):
        open_dataset(copy)
    with pytest.raises(ManifestError, match=r"holds format 'zarr', not 'memmap'"):
        MemmapReader(copy)
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "params": {}}))
    with pytest.raises(ManifestError, match=r"manifest.json: params lack shape"):
        open_dataset(copy)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    (copy / manifest["shards"][1]["files"]["images"]["name"]).unlink()
    with pytest.raises(ManifestError, match=r"images-00001.npy: is missing"):
        MemmapReader(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ManifestError, match="no manifest"):
        open_dataset(copy)


def test_predecessor_converter_api(small_folder, tmp_path):
    report = raydsconv.MemmapConverter(small_folder, tmp_path / "ds", 4, 3, 2, (10, 12), "L").convert()
    dataset = MemmapReader(tmp_path / "ds")
    assert len(dataset) == report.num_samples and dataset[0][0].size == (12, 10)


def test_a_single_shard_is_prepared_on_every_cpu_with_the_same_bytes(small_folder, tmp_path, ray_session):
    """One shard, two CPUs: its task takes both and prepares its batches on two threads."""
    from raydsconv.images import ImageSpec
    from raydsconv.pipeline import _threads_per_task, candidate_table, shard_rows
    from raydsconv.prepare import Preparation
    from raydsconv.shards import ShardJob, in_batches, prepared_in_threads

    assert _threads_per_task(1, None) == 2 and _threads_per_task(2, None) == 1 and _threads_per_task(1, 1) == 1
    assert _threads_per_task(1, 64) == 2  # never more than a node has: such a task could not be scheduled
    convert(small_folder, tmp_path / "spread", shape=(16, 16), images_per_file=1000, batch_size=4, progress=False)
    convert(small_folder, tmp_path / "alone", shape=(16, 16), images_per_file=1000, num_workers=1, progress=False)
    assert tree_digest(tmp_path / "spread") == tree_digest(tmp_path / "alone")

    listing = list_image_folder(small_folder)
    job = ShardJob(targets=(), preparation=Preparation(ImageSpec(shape=(16, 16)), keep_bytes=False), classes=[],
                   strict=False, batch_size=4, records=tmp_path)
    rows = shard_rows(candidate_table(listing, 1000), 0, 1000)
    alone = [job.prepare(batch, listing.loader) for batch in in_batches(rows, 4)]
    threads = set()

    def prepare(batch):
        threads.add(threading.get_ident())
        time.sleep(0.02)  # both threads busy at once, however fast the machine
        return job.prepare(batch, listing.loader)

    spread = list(prepared_in_threads(rows, 4, 2, prepare))
    assert len(spread) > len(alone) // 2 and len(threads) == 2  # smaller batches, so that both threads get some
    assert np.array_equal(np.concatenate([b["image"] for b in spread]), np.concatenate([b["image"] for b in alone]))
    assert [r for b in spread for r in b["reason"]] == [r for b in alone for r in b["reason"]]


def test_on_a_ray_raydsconv_started_ray_data_runs_without_its_two_actors(small_folder, tmp_path, ray_session):
    """A Ray that raydsconv started has no autoscaler: Ray Data is told the nodes' resources, not
    made to wait for its autoscaling coordinator, and its stats actor is not started. Same bytes."""
    from ray.data._internal import stats
    from ray.data._internal.cluster_autoscaler import rate_based_cluster_autoscaler

    from raydsconv import cluster

    original = rate_based_cluster_autoscaler.DefaultAutoscalingCoordinator
    with cluster.fixed_size_data():  # a Ray someone else started: Ray Data as it is
        assert rate_based_cluster_autoscaler.DefaultAutoscalingCoordinator is original
    convert(small_folder, tmp_path / "as-is", shape=(16, 16), images_per_file=4, progress=False)

    cluster.mark_fixed_size()
    try:
        with cluster.fixed_size_data():
            coordinator = rate_based_cluster_autoscaler.DefaultAutoscalingCoordinator("requester")
            assert coordinator.get_reserved_resources() == {
                node["NodeID"]: node["Resources"] for node in ray_session.nodes() if node["Alive"]}
            assert stats.get_or_create_stats_actor().register_dataset.remote("anything") is None
        assert rate_based_cluster_autoscaler.DefaultAutoscalingCoordinator is original
        convert(small_folder, tmp_path / "fixed", shape=(16, 16), images_per_file=4, progress=False)
    finally:
        cluster._FIXED_SIZE.clear()
    assert tree_digest(tmp_path / "fixed") == tree_digest(tmp_path / "as-is")


def test_many_more_shards_than_cpus_go_several_to_a_task_with_the_same_bytes(small_folder, tmp_path, ray_session,
                                                                               monkeypatch):
    """2 CPUs, 37 one-image shards: 8 tasks (4 per CPU) write them, as a task per shard would."""
    from raydsconv import pipeline

    blocks = []
    data_range = ray_session.data.range
    monkeypatch.setattr(ray_session.data, "range", lambda n, **kw: blocks.append((n, kw)) or data_range(n, **kw))
    report = convert(small_folder, tmp_path / "grouped", shape=(8, 8), images_per_file=1, progress=False)
    assert report.num_shards == 37 and blocks == [(37, {"override_num_blocks": 8})]
    monkeypatch.setattr(pipeline, "TASKS_PER_SLOT", 1000)
    convert(small_folder, tmp_path / "alone", shape=(8, 8), images_per_file=1, progress=False)
    assert blocks[1] == (37, {"override_num_blocks": 37})
    assert tree_digest(tmp_path / "grouped") == tree_digest(tmp_path / "alone")
