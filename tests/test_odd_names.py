"""Odd names and links: names that are not UTF-8 convert and are recorded losslessly (text with
``\\xNN`` escapes, exact bytes in ``path_bytes``); webs and loops of symbolic links are walked once."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reference import assert_matches_reference
from torchvision.datasets import ImageFolder

from raydsconv import convert, open_dataset
from raydsconv.formats import FORMATS
from raydsconv.layout import MANIFEST_FILE
from raydsconv.samples import jpeg_bytes, photo_like
from raydsconv.sources import SegmentationFolder
from raydsconv.sources.archive import list_tar_archive
from raydsconv.sources.folder import list_image_folder
from raydsconv.sources.listing import PATH_BYTES, path_text
from raydsconv.sources.segmentation import SegmentationLoader, list_segmentation_folder

SHAPE = (16, 12)
LATIN1 = b"animals/caf\xe9.jpg"  # Latin-1 "café": not UTF-8
LOOKALIKE = b"animals/caf\\xe9.jpg"  # a real backslash: UTF-8, and the same text as LATIN1 once escaped
NOT_AN_IMAGE = b"plants/notes\xe9.txt"


def image_bytes(seed: int, fmt: str = "JPEG") -> bytes:
    image = photo_like(np.random.default_rng(seed), 40, 30)
    if fmt == "JPEG":
        return jpeg_bytes(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def is_utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True


def write(root: Path, relative: bytes, data: bytes) -> None:
    path = os.path.join(os.fsencode(root), relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as file:
        file.write(data)


def read(root: Path, relative: bytes) -> bytes:
    with open(os.path.join(os.fsencode(root), relative), "rb") as file:
        return file.read()


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("odd") / "src"
    write(root, LATIN1, image_bytes(0))
    write(root, LOOKALIKE, image_bytes(1, "PNG"))
    write(root, "animals/café.jpg".encode(), image_bytes(2))
    write(root, b"plants/\xff\xfe.png", image_bytes(3, "PNG"))
    write(root, NOT_AN_IMAGE, b"not an image")
    write(root, b"r\xe9ptiles/x.png", image_bytes(4, "PNG"))  # a class folder whose name is not UTF-8
    return root


def imagefolder_samples(root: Path) -> list[tuple[bytes, int]]:
    """torchvision's listing, as exact relative names."""
    reference = ImageFolder(str(root), is_valid_file=lambda p: True, allow_empty=True)
    return [(os.fsencode(os.path.relpath(path, root)), label) for path, label in reference.samples]


def test_listing_records_text_and_exact_bytes_in_imagefolder_order(odd_folder):
    listing = list_image_folder(odd_folder)
    exact = [b if b is not None else p.encode() for p, b in zip(listing.paths, listing.columns[PATH_BYTES])]
    assert list(zip(exact, listing.labels.tolist())) == imagefolder_samples(odd_folder)
    assert listing.classes == ["animals", "plants", "r\\xe9ptiles"]
    text = dict(zip(exact, listing.paths))
    assert text[LATIN1] == text[LOOKALIKE] == "animals/caf\\xe9.jpg"  # same text, told apart by path_bytes
    assert text["animals/café.jpg".encode()] == "animals/café.jpg"  # UTF-8 names are recorded unchanged
    assert [b for b in listing.columns[PATH_BYTES] if b is not None] == [LATIN1, NOT_AN_IMAGE, b"plants/\xff\xfe.png",
                                                                         b"r\xe9ptiles/x.png"]
    assert all(p.encode() for p in listing.paths)  # valid UTF-8 text everywhere


def test_utf8_names_record_no_bytes(tmp_path):
    write(tmp_path / "src", "clé/naïve.png".encode(), image_bytes(5, "PNG"))
    listing = list_image_folder(tmp_path / "src")
    assert listing.paths == ["clé/naïve.png"] and listing.classes == ["clé"]
    assert PATH_BYTES not in listing.columns


def stored_paths(root: Path, fmt: str) -> list[str] | None:
    """The source paths a flexible format keeps in its own shards, in sample order."""
    names = [next(iter(s["files"].values()))["name"] for s in json.loads((root / MANIFEST_FILE).read_text())["shards"]]
    if fmt == "parquet":
        return [p for name in names for p in pq.read_table(root / name).column("path").to_pylist()]
    if fmt == "ipc":
        return [p for name in names for p in pa.ipc.open_file(root / name).read_all().column("path").to_pylist()]
    if fmt == "tar":
        paths = []
        for name in names:
            with tarfile.open(root / name) as tar:
                paths += [json.load(tar.extractfile(m))["path"] for m in tar.getmembers() if m.name.endswith(".json")]
        return paths
    return None


@pytest.mark.usefixtures("ray_session")
def test_odd_names_convert_in_every_format(odd_folder, tmp_path):
    report = convert(odd_folder, tmp_path / "out", format=sorted(FORMATS), shape=SHAPE, images_per_file=2,
                     progress=False)
    report.summary().encode("utf-8")  # printable as it is
    expected = [(name, label) for name, label in imagefolder_samples(odd_folder) if name != NOT_AN_IMAGE]
    texts = [path_text(os.fsdecode(name)) for name, _ in expected]
    for fmt in sorted(FORMATS):
        dataset = open_dataset(tmp_path / "out", format=fmt)
        assert len(dataset) == len(expected), fmt
        for i, (name, label) in enumerate(expected):
            image, target = dataset[i]
            assert target == label, (fmt, name)
            assert os.fsencode(dataset.source_path(i)) == name, fmt
            if dataset.reader.fixed_size:
                assert_matches_reference(np.asarray(image), read(odd_folder, name), SHAPE, what=f"{fmt} {name}")
            else:
                assert dataset.read_bytes(i) == read(odd_folder, name), (fmt, name)
        index = dataset.index()
        assert index.column("path").to_pylist() == texts
        assert index.column(PATH_BYTES).to_pylist() == [None if is_utf8(name) else name for name, _ in expected]
        assert stored_paths(dataset.dataset_path, fmt) in (None, texts)
        manifest = json.loads((dataset.dataset_path / MANIFEST_FILE).read_text())
        assert [s["path"] for s in manifest["skipped"]] == ["plants/notes\\xe9.txt"]
        assert "r\\xe9ptiles" in manifest["classes"]


def latin1_tar(path: Path, members: dict[str, bytes]) -> Path:
    """A tar whose member names are Latin-1 bytes (GNU format: no UTF-8 pax names)."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.usefixtures("ray_session")
def test_tar_with_latin1_member_names(tmp_path):
    members = {"cls/café.jpg": image_bytes(6), "cls/plain.jpg": image_bytes(7), "cl\xe9s/ok.png": image_bytes(8, "PNG")}
    archive = latin1_tar(tmp_path / "latin1.tar", members)
    for name, data in members.items():  # the same tree extracted, names as Latin-1 bytes
        write(tmp_path / "folder", name.encode("latin-1"), data)
    listing, folder = list_tar_archive(archive), list_image_folder(tmp_path / "folder")
    assert listing.paths == folder.paths == ["cls/caf\\xe9.jpg", "cls/plain.jpg", "cl\\xe9s/ok.png"]
    assert listing.classes == folder.classes and listing.labels.tolist() == folder.labels.tolist()
    assert listing.columns[PATH_BYTES].tolist() == folder.columns[PATH_BYTES].tolist()

    convert(archive, tmp_path / "out", format=["memmap", "tar"], shape=SHAPE, images_per_file=2, progress=False)
    for fmt in ("memmap", "tar"):
        dataset = open_dataset(tmp_path / "out", format=fmt)
        assert len(dataset) == 3
        for i in range(3):
            name = os.fsencode(dataset.source_path(i))
            data = members[name.decode("latin-1")]
            if fmt == "tar":
                assert dataset.read_bytes(i) == data
            else:
                assert_matches_reference(np.asarray(dataset[i][0]), data, SHAPE, what=str(name))
        assert sorted(os.fsencode(dataset.source_path(i)) for i in range(3)) == sorted(
            name.encode("latin-1") for name in members)


def test_segmentation_folder_with_odd_names(tmp_path):
    image, mask = image_bytes(9, "PNG"), image_bytes(10, "PNG")
    write(tmp_path, b"images/caf\xe9.png", image)
    write(tmp_path, b"masks/caf\xe9.png", mask)
    listing = list_segmentation_folder(SegmentationFolder(tmp_path))
    assert listing.paths == ["images/caf\\xe9.png"]
    assert listing.columns["mask_path"].tolist() == ["masks/caf\\xe9.png"]
    row = {"path": listing.paths[0], **{name: values[0] for name, values in listing.columns.items()}}
    assert SegmentationLoader(str(tmp_path)).read(row) == (image, mask)


def write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, "PNG"))


def test_class_folders_linking_to_each_other_list_each_image_once(tmp_path):
    """The issue's web: 8 class folders, each with one image and links to the other 7 (it listed 109 600)."""
    root = tmp_path / "web"
    for i in range(8):
        write_png(root / f"c{i}" / "img.png", i)
    for i in range(8):
        for j in range(8):
            if i != j:
                os.symlink(root / f"c{j}", root / f"c{i}" / f"to_c{j}")
    listing = list_image_folder(root)
    assert listing.paths == [f"c{i}/img.png" for i in range(8)]
    assert listing.labels.tolist() == list(range(8))
    assert listing.skipped == []


def test_a_web_of_links_inside_one_class_is_walked_once(tmp_path):
    root = tmp_path / "web"
    for i in range(8):
        write_png(root / "cls" / f"f{i}" / "img.png", i)
    for i in range(8):
        for j in range(8):
            if i != j:
                os.symlink(root / "cls" / f"f{j}", root / "cls" / f"f{i}" / f"to_f{j}")
    assert list_image_folder(root).paths == [f"cls/f{i}/img.png" for i in range(8)]


def test_links_to_ancestors_terminate(tmp_path):
    root = tmp_path / "root"
    write_png(root / "cls" / "a.png", 0)
    write_png(root / "cls" / "sub" / "b.png", 1)
    os.symlink(root / "cls", root / "cls" / "sub" / "up")  # to the class folder
    os.symlink(root, root / "cls" / "sub" / "top")  # to the root
    os.symlink(".", root / "cls" / "sub" / "self")  # to itself
    listing = list_image_folder(root)
    assert listing.paths == ["cls/a.png", "cls/sub/b.png"]


def test_a_class_folder_linking_to_another_class_folder_stays_empty(tmp_path):
    root = tmp_path / "root"
    write_png(root / "cat" / "a.png", 0)
    os.symlink(root / "cat", root / "kitten")
    listing = list_image_folder(root)
    assert listing.classes == ["cat", "kitten"]  # the alias keeps its index
    assert listing.paths == ["cat/a.png"] and listing.labels.tolist() == [0]
    assert [(s.path, s.reason) for s in listing.skipped] == [
        ("kitten", "the same folder as class 'cat' (a symbolic link): its files are listed once, in class 'cat'")]


def test_symlinked_files_still_count(tmp_path):
    root = tmp_path / "root"
    write_png(tmp_path / "elsewhere" / "x.png", 0)
    (root / "cls").mkdir(parents=True)
    os.symlink(tmp_path / "elsewhere" / "x.png", root / "cls" / "x.png")
    os.symlink(tmp_path / "elsewhere" / "x.png", root / "cls" / "y.png")  # two links to one file: two samples
    assert list_image_folder(root).paths == ["cls/x.png", "cls/y.png"]
