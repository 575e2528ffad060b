"""The folder source lists what torchvision's ImageFolder would, with the same labels."""

from __future__ import annotations

import os

import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources import list_source
from raydsconv.sources.folder import list_image_folder


def decodes(path: str) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


def test_order_and_labels_equal_torchvision_imagefolder(small_folder):
    listing = list_image_folder(small_folder)
    reference = ImageFolder(str(small_folder), is_valid_file=lambda p: True, allow_empty=True)
    assert listing.classes == reference.classes
    assert "empty_class" in listing.classes  # an empty class keeps its index
    visible = [(os.path.relpath(p, small_folder), label) for p, label in reference.samples
               if not os.path.basename(p).startswith(".")]
    assert list(zip(listing.paths, listing.labels.tolist())) == visible


def test_symlinked_files_and_folders_are_followed(tmp_path, small_folder):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    os.symlink(small_folder / "class_0", root / "b")
    os.symlink(small_folder / "class_1" / "im_1.jpg", root / "a" / "link.jpg")
    os.symlink(root / "a", root / "a" / "loop")  # a cycle must not hang the walk
    os.symlink(tmp_path / "missing.jpg", root / "a" / "broken.jpg")
    listing = list_image_folder(root)
    assert listing.classes == ["a", "b"]
    assert "a/link.jpg" in listing.paths
    assert sum(1 for p in listing.paths if p.startswith("b/")) == 6
    assert [(s.path, s.reason) for s in listing.skipped] == [("a/broken.jpg", "broken symbolic link")]


def test_two_links_to_one_folder_walk_it_once(tmp_path, small_folder):
    """ImageFolder lists such a folder twice; here it is walked once, through the first link in sorted order."""
    root = tmp_path / "root"
    (root / "cls").mkdir(parents=True)
    for name in ("x", "y"):
        os.symlink(small_folder / "class_1", root / "cls" / name)
    listing = list_image_folder(root)
    reference = ImageFolder(str(root), is_valid_file=lambda p: True)
    expected = [os.path.relpath(p, root) for p, _ in reference.samples]
    assert listing.paths == [p for p in expected if not p.startswith("cls/y/")]
    assert sum(p.startswith("cls/x/") for p in listing.paths) == 6


def test_source_errors_name_the_path(tmp_path):
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        list_source(tmp_path / "nope")
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        list_source(tmp_path / "file.jpg")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidArgumentError, match="no class sub-folders"):
        list_source(tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(InvalidArgumentError, match="contains no files"):
        list_source(tmp_path / "empty")
