"""Tar archives as the source: same samples, labels and bytes as the extracted folder."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from raydsconv import InvalidArgumentError, TarConverter, convert, open_dataset
from raydsconv.layout import MANIFEST_FILE
from raydsconv.samples import write_tar_of_tars
from raydsconv.sources.archive import list_tar_archive
from raydsconv.sources.folder import list_image_folder

pytestmark = pytest.mark.usefixtures("ray_session")


def shards_of(path: Path) -> list:
    return [sorted((f["name"], f["sha256"]) for f in s["files"].values())
            for s in json.loads((path / MANIFEST_FILE).read_text())["shards"]]


@pytest.fixture(scope="module")
def folder_tar(small_folder, tmp_path_factory) -> Path:
    archive = tmp_path_factory.mktemp("tar") / "train.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(small_folder, arcname="data/train")
    return archive


@pytest.fixture(scope="module")
def tar_of_tars(small_folder, tmp_path_factory) -> Path:
    """ImageNet's training layout: one tar per class inside the archive."""
    return write_tar_of_tars(small_folder, tmp_path_factory.mktemp("imagenet") / "ILSVRC_train.tar")


def test_listing_equals_the_folder(folder_tar, tar_of_tars, small_folder):
    folder = list_image_folder(small_folder)
    for listing in (list_tar_archive(folder_tar, "data/train"), list_tar_archive(tar_of_tars)):
        assert listing.classes == folder.classes  # the empty class folder keeps its index too
        assert listing.paths == folder.paths
        assert listing.labels.tolist() == folder.labels.tolist()


@pytest.mark.parametrize("fmt", ["memmap", "tar"])
def test_conversion_equals_the_folder_conversion(folder_tar, tar_of_tars, small_folder, tmp_path, fmt):
    convert(small_folder, tmp_path / "folder", format=fmt, shape=(12, 12), images_per_file=9, progress=False)
    convert(folder_tar, tmp_path / "tar", format=fmt, shape=(12, 12), images_per_file=9, root_in_archive="data/train",
            progress=False)
    convert(tar_of_tars, tmp_path / "tars", format=fmt, shape=(12, 12), images_per_file=9, progress=False)
    assert shards_of(tmp_path / "tar") == shards_of(tmp_path / "folder") == shards_of(tmp_path / "tars")
    assert open_dataset(tmp_path / "tars").classes == open_dataset(tmp_path / "folder").classes


def test_predecessor_converter_takes_root_in_archive(folder_tar, tmp_path):
    report = TarConverter(folder_tar, tmp_path / "ds", 10, 4, 2, root_in_archive="data/train").convert()
    assert report.num_samples == len(open_dataset(tmp_path / "ds"))


def test_hostile_and_broken_archives_are_refused(tmp_path, small_folder):
    image = (small_folder / "class_0" / "im_1.jpg").read_bytes()
    for name in ("../evil.jpg", "/abs/evil.jpg", "cls/../../evil.jpg"):
        archive = tmp_path / "hostile.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(image)
            tar.addfile(info, io.BytesIO(image))
        with pytest.raises(InvalidArgumentError, match="absolute or '..' path"):
            convert(archive, tmp_path / "out", shape=(8, 8), progress=False)
        assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "out").exists()
    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(small_folder / "class_0", arcname="class_0")
    data = whole.read_bytes()
    (tmp_path / "truncated.tar").write_bytes(data[: 512 * 3 + 100])
    with pytest.raises(InvalidArgumentError, match="truncated or corrupt"):
        convert(tmp_path / "truncated.tar", tmp_path / "out2", shape=(8, 8), progress=False)
    gz = tmp_path / "folder.tar.gz"
    with tarfile.open(gz, "w:gz") as tar:
        tar.add(small_folder / "class_0", arcname="class_0")
    with pytest.raises(InvalidArgumentError, match="not an uncompressed tar"):
        convert(gz, tmp_path / "out3", shape=(8, 8), progress=False)


def test_a_damaged_class_archive_is_refused(tar_of_tars, tmp_path):
    with tarfile.open(tar_of_tars) as outer:
        members = [(info, outer.extractfile(info).read()) for info in outer]
    broken = tmp_path / "broken.tar"
    with tarfile.open(broken, "w") as tar:
        for info, data in members:
            data = data[: 512 * 3 + 100] if info.name == "class_1.tar" else data
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InvalidArgumentError, match="class archive class_1.tar is truncated or corrupt"):
        list_tar_archive(broken)
