"""Target kinds: unlabeled images, labels from a table, the predecessor's dense names, and the
multi-label kind of docs/extending.md, run as written, in every format."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import raydsconv
from docs_code import doc_module, forget_module

from raydsconv import convert, open_dataset, verify
from raydsconv.errors import InvalidArgumentError, ManifestError
from raydsconv.formats import FORMATS, get_format, register
from raydsconv.images import ImageSpec, prepare_image, prepare_pil_image
from raydsconv.layout import MANIFEST_FILE
from raydsconv.samples import jpeg_bytes, photo_like

pytestmark = pytest.mark.usefixtures("ray_session")

BUILT_IN = ["memmap", "hdf5", "parquet", "ipc", "tar"]
SHAPE = (12, 16)


def fixed(format_name: str) -> bool:
    return get_format(format_name).fixed_size


def expected_image(data: bytes) -> np.ndarray:
    return prepare_image(data, ImageSpec(shape=SHAPE)).pixels


@pytest.fixture(scope="module")
def flat_folder(tmp_path_factory) -> Path:
    """Images without class folders: at the top, in a sub-folder, and a file that is not an image."""
    root = tmp_path_factory.mktemp("flat") / "photos"
    (root / "day2").mkdir(parents=True)
    rng = np.random.default_rng(4)
    for i, name in enumerate(["a.jpg", "b.jpg", "day2/c.jpg", "day2/d.png", "e.jpg"]):
        image = photo_like(rng, 40 + 4 * i, 30)
        if name.endswith(".png"):
            image.save(root / name)
        else:
            (root / name).write_bytes(jpeg_bytes(image, 90))
    (root / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------- none: unlabeled images


@pytest.mark.parametrize("format_name", BUILT_IN)
def test_unlabeled_images_convert_and_read_back_alone(flat_folder, tmp_path, format_name):
    report = convert(flat_folder, tmp_path / "ds", format=format_name, target="none", shape=SHAPE,
                     images_per_file=2, progress=False)
    assert report.num_samples == 5
    assert [s.path for s in report.skipped] == ["notes.txt"]
    dataset = open_dataset(tmp_path / "ds", output="numpy")
    assert dataset.target.name == "none" and dataset.classes == []
    paths = [dataset.source_path(i) for i in range(len(dataset))]
    assert paths == ["a.jpg", "b.jpg", "e.jpg", "day2/c.jpg", "day2/d.png"]  # as os.walk: files, then folders
    for i, path in enumerate(paths):
        image = dataset[i]  # the image alone, not a pair
        data = (flat_folder / path).read_bytes()
        if fixed(format_name):
            assert np.array_equal(image, expected_image(data))
        else:
            assert dataset.read_bytes(i) == data
            assert image.shape == np.asarray(Image.open(flat_folder / path).convert("RGB")).shape
    assert verify(tmp_path / "ds", deep=True).ok


def test_unlabeled_batches_collate_as_plain_tensors(flat_folder, tmp_path):
    from torch.utils.data import DataLoader

    convert(flat_folder, tmp_path / "ds", target="none", shape=SHAPE, images_per_file=2, progress=False)
    dataset = open_dataset(tmp_path / "ds", output="tensor")
    batches = list(DataLoader(dataset, batch_size=3, num_workers=2))
    assert [tuple(batch.shape) for batch in batches] == [(3, 3, *SHAPE), (2, 3, *SHAPE)]
    with_ours = list(DataLoader(dataset, batch_size=3, collate_fn=raydsconv.collate))
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(batches, with_ours))
    with pytest.raises(InvalidArgumentError, match="no target"):
        open_dataset(tmp_path / "ds", target_transform=int)
    ray_rows = raydsconv.read_ray(tmp_path / "ds").take_all()
    assert [sorted(row) for row in ray_rows] == [["image"]] * 5


def test_unlabeled_from_a_torch_dataset_of_images_alone(tmp_path):
    images = [photo_like(np.random.default_rng(i), 20, 16) for i in range(3)]
    convert(images, tmp_path / "ds", target="none", shape=SHAPE, progress=False)
    dataset = open_dataset(tmp_path / "ds", output="numpy")
    assert len(dataset) == 3 and isinstance(dataset[0], np.ndarray) and dataset[0].shape == (*SHAPE, 3)


def test_cli_target_none(flat_folder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "raydsconv.cli", "convert", str(flat_folder), str(tmp_path / "ds"),
                           "--format", "parquet", "--target", "none", "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    info = subprocess.run([sys.executable, "-m", "raydsconv.cli", "info", str(tmp_path / "ds")],
                          capture_output=True, text=True)
    assert "targets: none" in info.stdout
    assert len(open_dataset(tmp_path / "ds")) == 5


# ---------------------------------------------------------------- labels from a table


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("path", "label")) -> Path:
    path.write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    return path


@pytest.mark.parametrize("format_name", ["memmap", "tar"])
def test_labels_from_a_csv_by_path_and_by_stem(flat_folder, tmp_path, format_name):
    table = write_csv(tmp_path / "labels.csv", [("a.jpg", "dog"), ("day2/c", "cat"), ("day2/d.png", "dog"),
                                                ("e", "bird"), ("gone.jpg", "cat")])
    report = convert(flat_folder, tmp_path / "ds", format=format_name, labels=table, shape=SHAPE, progress=False)
    skipped = {s.path: s.reason for s in report.skipped}
    assert skipped == {"b.jpg": "not in the labels table labels.csv", "notes.txt": "not in the labels table labels.csv",
                       "gone.jpg": "in the labels table labels.csv, but no such file in the source"}
    dataset = open_dataset(tmp_path / "ds")
    assert dataset.classes == ["bird", "cat", "dog"]
    got = {dataset.source_path(i): dataset[i][1] for i in range(len(dataset))}
    assert got == {"a.jpg": 2, "day2/c.jpg": 1, "day2/d.png": 2, "e.jpg": 0}
    assert verify(tmp_path / "ds").ok


def test_labels_from_parquet_with_indices_and_named_columns(flat_folder, tmp_path):
    table = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"ImageId": ["a", "b", "day2/c", "day2/d", "e"], "ClassIndex": [3, 0, 3, 1, 0],
                             "note": ["x"] * 5}), table)
    with pytest.raises(InvalidArgumentError, match=r"labels\.parquet.*which column holds the file names.*ImageId"):
        convert(flat_folder, tmp_path / "ds", labels=table, shape=SHAPE, progress=False)
    convert(flat_folder, tmp_path / "ds", labels=table, label_columns=("ImageId", "ClassIndex"), shape=SHAPE,
            progress=False)
    dataset = open_dataset(tmp_path / "ds")
    assert dataset.classes == ["0", "1", "2", "3"]
    assert [dataset[i][1] for i in range(len(dataset))] == [3, 0, 0, 3, 1]  # a, b, e, day2/c, day2/d


def test_a_csv_keeps_names_that_look_like_numbers(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("0001.jpg", "0002.jpg"):
        (source / name).write_bytes(jpeg_bytes(photo_like(np.random.default_rng(1), 20, 20), 90))
    table = write_csv(tmp_path / "t.csv", [("0001", "1"), ("0002", "0")], header=("id", "class"))
    convert(source, tmp_path / "ds", labels=table, shape=SHAPE, progress=False)
    assert [open_dataset(tmp_path / "ds")[i][1] for i in range(2)] == [1, 0]


def test_labels_table_errors_name_the_table(flat_folder, tmp_path):
    with pytest.raises(InvalidArgumentError, match="missing.csv does not exist"):
        convert(flat_folder, tmp_path / "ds", labels=tmp_path / "missing.csv", shape=SHAPE, progress=False)
    table = write_csv(tmp_path / "t.csv", [("a.jpg", "dog")])
    with pytest.raises(InvalidArgumentError, match="t.csv has no column 'file'; its columns: path, label"):
        convert(flat_folder, tmp_path / "ds", labels=table, label_columns=("file", "label"), shape=SHAPE, progress=False)
    nothing = write_csv(tmp_path / "none.csv", [("zzz.jpg", "dog")])
    with pytest.raises(InvalidArgumentError, match="no file of .* is in the labels table"):
        convert(flat_folder, tmp_path / "ds", labels=nothing, shape=SHAPE, progress=False)
    with pytest.raises(InvalidArgumentError, match="class labels, not targets of kind 'none'"):
        convert(flat_folder, tmp_path / "ds", labels=table, target="none", shape=SHAPE, progress=False)
    assert not (tmp_path / "ds").exists()


def test_cli_labels(flat_folder, tmp_path):
    table = write_csv(tmp_path / "val.csv", [("a.jpg", "x"), ("b.jpg", "y")], header=("file", "cls"))
    done = subprocess.run([sys.executable, "-m", "raydsconv.cli", "convert", str(flat_folder), str(tmp_path / "ds"),
                           "--shape", "12", "16", "--labels", str(table), "--label-columns", "file", "cls",
                           "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    dataset = open_dataset(tmp_path / "ds")
    assert [dataset[i][1] for i in range(len(dataset))] == [0, 1] and dataset.classes == ["x", "y"]


# ---------------------------------------------------------------- the predecessor's dense names


def test_dense_names_are_aliases_and_dense_true_still_means_masks(tmp_path):
    from raydsconv.samples import write_segmentation_folder

    assert raydsconv.DenseMemmapReader is raydsconv.MemmapReader
    assert raydsconv.DenseTarReader is raydsconv.TarReader
    source = tmp_path / "seg"
    write_segmentation_folder(source, num_images=3, sizes=((24, 18),))
    raydsconv.DenseMemmapConverter(source, tmp_path / "a", shape=(18, 24)).convert()
    convert(source, tmp_path / "b", shape=(18, 24), dense=True, progress=False)
    convert(source, tmp_path / "c", shape=(18, 24), target="mask", progress=False)
    manifests = [json.loads((tmp_path / name / MANIFEST_FILE).read_text()) for name in "abc"]
    assert manifests[0]["shards"] == manifests[1]["shards"] == manifests[2]["shards"]
    assert manifests[0]["params"]["dense"] is True
    assert raydsconv.DenseMemmapReader(tmp_path / "a").dense


def test_a_format_that_stores_class_labels_only_refuses_other_kinds(flat_folder, small_folder, tmp_path):
    register(dataclasses.replace(get_format("memmap"), name="labels-only", targets=("class",)))
    try:
        with pytest.raises(InvalidArgumentError, match="format 'labels-only' cannot store targets of kind 'none'"):
            convert(flat_folder, tmp_path / "ds", format="labels-only", target="none", shape=SHAPE, progress=False)
    finally:
        FORMATS.pop("labels-only")


def test_a_dataset_of_an_unknown_kind_names_what_to_import(small_folder, tmp_path):
    convert(small_folder, tmp_path / "ds", shape=SHAPE, progress=False)
    manifest = json.loads((tmp_path / "ds" / MANIFEST_FILE).read_text())
    manifest["params"]["target"] = "bounding_boxes"
    (tmp_path / "ds" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="kind 'bounding_boxes', which is not registered here; import"):
        open_dataset(tmp_path / "ds")


# ---------------------------------------------------------------- the documented multi-label kind


@pytest.fixture(scope="module")
def multilabel():
    from raydsconv.targets import TARGETS

    module = doc_module("_doc_multilabel", "class MultiLabel")
    yield module
    forget_module(module)
    TARGETS.pop("multilabel", None)


class Tagged:
    """A torch-style Dataset of (PIL image, [class indices]); item 4 has a class out of range."""

    classes = ["sky", "tree", "car", "person", "dog"]

    def __init__(self):
        rng = np.random.default_rng(7)
        self.images = [photo_like(rng, 30 + i, 24) for i in range(7)]
        self.tags = [[0, 2], [], [1], [0, 1, 2, 3, 4], [9], [4], [3, 1]]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.tags[index]


@pytest.mark.parametrize("format_name", BUILT_IN)
def test_the_documented_multilabel_kind_in_every_format(multilabel, tmp_path, format_name):
    source = Tagged()
    report = convert(source, tmp_path / "ds", format=format_name, target=multilabel.MultiLabel(5), shape=SHAPE,
                     images_per_file=3, progress=False)
    assert [(s.path, s.reason) for s in report.skipped] == [("4", "class 9 is not one of the 5 classes")]
    kept = [i for i in range(7) if i != 4]
    dataset = open_dataset(tmp_path / "ds", output="numpy")
    assert dataset.target.name == "multilabel" and dataset.classes == Tagged.classes
    for position, item in enumerate(kept):
        image, tags = dataset[position]
        assert tags == sorted(source.tags[item])
        if fixed(format_name):
            assert np.array_equal(image, prepare_pil_image(source.images[item], ImageSpec(shape=SHAPE)).pixels)
        else:
            assert np.array_equal(image, np.asarray(source.images[item]))  # stored as a lossless PNG
    assert verify(tmp_path / "ds", deep=True).ok
    rows = raydsconv.read_ray(tmp_path / "ds").take_all()
    assert [np.flatnonzero(row["labels"]).tolist() for row in rows] == [sorted(source.tags[i]) for i in kept]
    if format_name == "tar":
        with tarfile.open(tmp_path / "ds" / "samples-00000.tar") as archive:
            names = archive.getnames()
            assert names[:3] == ["000000000.png", "000000000.labels.npy", "000000000.json"]
            assert json.load(archive.extractfile("000000000.json"))["labels"] == [0, 2]


def test_the_multilabel_kind_in_the_documented_npz_format_too(multilabel, tmp_path):
    npz = doc_module("_doc_npz_tags", "class NpzShardWriter", lambda code: code.replace('name="npz"', 'name="npz-tags"'))
    try:
        convert(Tagged(), tmp_path / "ds", format="npz-tags", target=multilabel.MultiLabel(5), shape=SHAPE,
                images_per_file=4, progress=False)
        dataset = open_dataset(tmp_path / "ds")
        assert [dataset[i][1] for i in range(len(dataset))] == [[0, 2], [], [1], [0, 1, 2, 3, 4], [4], [1, 3]]
    finally:
        forget_module(npz)
        FORMATS.pop("npz-tags", None)
