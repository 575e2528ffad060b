"""A segmentation folder: images and their masks side by side, matched by name.

    ROOT/images/<name>.<ext>     ROOT/masks/<name>.<ext>       (also in sub-folders: a/b.jpg <-> a/b.png)

Pascal VOC's own layout is recognised too (``JPEGImages`` and ``SegmentationClass``), and a split
file (VOC's ``ImageSets/Segmentation/train.txt``: one name per line, no extension) picks the samples.
Samples are in sorted path order. An image without a mask, or a mask without an image, is recorded
as skipped with the reason; hidden files are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.folder import walk_files
from raydsconv.sources.listing import PATH_BYTES, Listing, Skipped, exact_name, files_fingerprint, recorded_paths

# (images, masks) folder names tried in this order when none are given
KNOWN_LAYOUTS = (("images", "masks"), ("JPEGImages", "SegmentationClass"))


@dataclass(frozen=True)
class SegmentationFolder:
    """Pass as the source of ``convert`` to choose the folders or a split; a plain path given with
    ``dense=True`` means ``SegmentationFolder(path)``.

    Args:
        root: the folder holding the image and mask folders.
        images, masks: their names below ``root`` (default: ``images``/``masks``, or VOC's
            ``JPEGImages``/``SegmentationClass``, whichever exists).
        split: a text file naming the samples to take, one per line, without extension (a relative
            path is tried from the working directory, then from ``root``); default: every image.
        classes: names of the mask values (class 0, 1, ...), recorded in the manifest.
    """

    root: str | os.PathLike
    images: str | None = None
    masks: str | None = None
    split: str | os.PathLike | None = None
    classes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SegmentationLoader:
    root: str
    thread_safe: ClassVar[bool] = True  # opens (or preads) its file on every read

    def read(self, row: dict) -> tuple[bytes, bytes]:
        with open(os.path.join(self.root, exact_name(row)), "rb") as image:
            with open(os.path.join(self.root, exact_name(row, "mask_path")), "rb") as mask:
                return image.read(), mask.read()


def list_segmentation_folder(source: SegmentationFolder) -> Listing:
    root = Path(source.root).absolute()
    images_dir, masks_dir = _folders(root, source)
    images, skipped = _files_by_name(root, images_dir)
    masks, odd_masks = _files_by_name(root, masks_dir)
    skipped += odd_masks
    wanted = _split_names(root, source.split) if source.split is not None else None
    paths, mask_paths = [], []
    for name, image in sorted(images.items(), key=lambda item: item[1]):
        if wanted is not None and name not in wanted:
            continue
        if len(image) > 1:
            skipped.append(Skipped(image[0], f"several images named {name!r}: {', '.join(image)}"))
        elif name not in masks:
            skipped.append(Skipped(image[0], f"no mask {masks_dir}/{name}.* for this image"))
        elif len(masks[name]) > 1:
            skipped.append(Skipped(image[0], f"several masks for this image: {', '.join(masks[name])}"))
        else:
            paths.append(image[0])
            mask_paths.append(masks[name][0])
    if wanted is None:
        skipped += [Skipped(mask[0], "mask without an image") for name, mask in masks.items() if name not in images]
    else:
        skipped += [Skipped(f"{source.split}: {name}", "listed in the split but no image has this name")
                    for name in sorted(wanted - set(images))]
    if not paths:
        raise InvalidArgumentError(f"segmentation folder {str(root)!r} has no image with a mask in "
                                   f"{images_dir}/ and {masks_dir}/")
    texts, exact = recorded_paths(paths)  # names that are not UTF-8: see raydsconv.sources.listing
    mask_texts, mask_exact = recorded_paths(mask_paths)
    columns = {"mask_path": np.asarray(mask_texts, dtype=object), PATH_BYTES: exact, "mask_path_bytes": mask_exact}
    return Listing(
        classes=[str(name) for name in source.classes],
        paths=texts,
        labels=np.full(len(paths), -1, dtype=np.int64),  # dense: the mask is the label
        loader=SegmentationLoader(str(root)),
        description={"kind": "segmentation_folder", "root": str(root), "images": images_dir, "masks": masks_dir,
                     "split": None if source.split is None else str(source.split), "num_candidates": len(paths)},
        skipped=sorted((item.as_text() for item in skipped), key=lambda s: s.path),
        columns={name: values for name, values in columns.items() if values is not None},
        fingerprint=files_fingerprint(str(root), [*paths, *mask_paths], skipped),
    )


def _folders(root: Path, source: SegmentationFolder) -> tuple[str, str]:
    if (source.images is None) != (source.masks is None):
        raise InvalidArgumentError("give both images= and masks= folder names, or neither")
    layouts = [(source.images, source.masks)] if source.images is not None else KNOWN_LAYOUTS
    for images, masks in layouts:
        if (root / images).is_dir() and (root / masks).is_dir():
            return images, masks
    expected = " or ".join(f"{images}/ and {masks}/" for images, masks in layouts)
    raise InvalidArgumentError(f"segmentation folder {str(root)!r} lacks {expected}")


def _files_by_name(root: Path, folder: str) -> tuple[dict[str, list[str]], list[Skipped]]:
    """Files below ``root/folder`` by name without extension, relative to that folder; odd entries."""
    found: dict[str, list[str]] = {}
    odd: list[Skipped] = []
    for directory, files, strange in walk_files(root / folder):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        inside = os.path.relpath(directory, root / folder).replace(os.sep, "/")
        for file_name in files:
            stem = os.path.splitext(file_name)[0]
            found.setdefault(stem if inside == "." else f"{inside}/{stem}", []).append(f"{relative}/{file_name}")
        odd.extend(Skipped(f"{relative}/{file_name}", reason) for file_name, reason in strange)
    return found, odd


def _split_names(root: Path, split: str | os.PathLike) -> set[str]:
    path = Path(split) if Path(split).is_file() else root / split
    try:
        return {line.strip() for line in path.read_text().splitlines() if line.strip()}
    except OSError as error:
        raise InvalidArgumentError(f"cannot read split file {str(path)!r}: {error.strerror}") from None
