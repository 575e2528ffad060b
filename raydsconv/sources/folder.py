"""An ImageNet-style folder: one sub-folder per class, images anywhere below it.

Order and labels follow torchvision's ``ImageFolder(allow_empty=True)``: classes are the sorted
immediate sub-folders; within a class, directories are visited in sorted path order (as
``sorted(os.walk(class_dir, followlinks=True))`` does) and file names are sorted. Unlike
ImageFolder, every regular file is a candidate whatever its extension: whether it is an image is
decided by decoding it in a worker, not by its name. Hidden files (".name") are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.listing import Listing, Skipped, files_fingerprint


@dataclass(frozen=True)
class FolderLoader:
    root: str

    def read(self, row: dict) -> bytes:
        with open(os.path.join(self.root, row["path"]), "rb") as file:
            return file.read()


def find_classes(root: Path) -> list[str]:
    """Sorted names of the immediate sub-folders (symlinks to folders count), as torchvision does."""
    with os.scandir(root) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir())


def list_image_folder(root: str | os.PathLike) -> Listing:
    root = Path(root).absolute()
    classes = find_classes(root)
    if not classes:
        raise InvalidArgumentError(
            f"source folder {str(root)!r} has no class sub-folders; expected ROOT/<class>/<image>"
        )
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[Skipped] = []
    for label, class_name in enumerate(classes):
        for directory, files, odd in walk_files(root / class_name):
            relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
            paths.extend(f"{relative_dir}/{name}" for name in files)
            labels.extend([label] * len(files))
            skipped.extend(Skipped(f"{relative_dir}/{name}", reason) for name, reason in odd)
    if not paths:
        raise InvalidArgumentError(f"source folder {str(root)!r} contains no files below its class folders")
    return Listing(
        classes=classes,
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        loader=FolderLoader(str(root)),
        description={"kind": "folder", "root": str(root), "num_candidates": len(paths)},
        skipped=skipped,
        fingerprint=files_fingerprint(str(root), paths, skipped),
    )


def walk_files(top: Path):
    """Yield (directory, sorted regular file names, [(odd name, reason)]) in sorted directory order.

    One ``scandir`` per directory and no per-file stat (d_type answers is_file), except for
    symlinks. Symlinked directories are followed like ``os.walk(followlinks=True)``, but a link
    back to one of its own ancestors (a loop) is not entered again.
    """
    found: list[tuple[str, list[str], list[tuple[str, str]]]] = []
    _walk_into(str(top), frozenset(), found)
    found.sort(key=lambda item: item[0])
    yield from found


def _walk_into(directory: str, ancestors: frozenset, found: list) -> None:
    try:
        status = os.stat(directory)
    except OSError:
        return
    key = (status.st_dev, status.st_ino)
    if key in ancestors:
        return
    files, odd, subdirectories = [], [], []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():
                    subdirectories.append(entry.path)  # hidden folders too, as torchvision walks them
                elif entry.name.startswith("."):
                    continue
                elif entry.is_file():
                    files.append(entry.name)
                else:
                    odd.append((entry.name, _why_not_regular(entry)))
    except OSError as error:
        odd.append((".", f"cannot list directory: {error.strerror}"))
    found.append((directory, sorted(files), sorted(odd)))
    for subdirectory in subdirectories:
        _walk_into(subdirectory, ancestors | {key}, found)


def _why_not_regular(entry: os.DirEntry) -> str:
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "broken symbolic link"
    return "not a regular file"
