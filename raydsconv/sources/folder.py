"""An ImageNet-style folder: one sub-folder per class, images anywhere below it.

Order and labels follow torchvision's ``ImageFolder(allow_empty=True)``: classes are the sorted
immediate sub-folders; within a class, directories are visited in sorted path order (as
``sorted(os.walk(class_dir, followlinks=True))`` does) and file names are sorted. Unlike
ImageFolder, every regular file is a candidate whatever its extension: whether it is an image is
decided by decoding it in a worker, not by its name. Hidden files (".name") are ignored.

Symbolic links are followed (to files and to folders), but no folder is walked twice: within a
class, a folder reached again, through a loop or another link, is walked once, at its real path if
it lies in the class folder, else by the first link path to it in sorted order; a link to a class
folder is not followed (its files belong to that class), nor one to the root. A class folder that
is a link to an earlier class's folder stays an empty class, with a note in the skipped list. For
a tree where no folder is reached twice this is exactly ImageFolder's listing; a web of links
stays finite (ImageFolder's grows exponentially).

Names are recorded as text (see ``raydsconv.sources.listing``): one that is not UTF-8 with its odd
bytes as ``\\xNN``, and its exact bytes in the ``path_bytes`` column that the loader opens.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.listing import PATH_BYTES, Listing, Skipped, exact_name, files_fingerprint, path_text, recorded_paths


@dataclass(frozen=True)
class FolderLoader:
    root: str
    thread_safe: ClassVar[bool] = True  # opens (or preads) its file on every read

    def read(self, row: dict) -> bytes:
        with open(os.path.join(self.root, exact_name(row)), "rb") as file:
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
    owners = _class_folder_owners(root, classes)
    # links into a class folder are not followed (its files are that class's), nor into the root
    not_followed = frozenset([*owners, _identity(str(root))])
    for label, class_name in enumerate(classes):
        folder = _identity(str(root / class_name))
        owner = owners.get(folder, class_name)
        if owner != class_name:
            skipped.append(Skipped(class_name, f"the same folder as class {owner!r} (a symbolic link): "
                                               f"its files are listed once, in class {owner!r}"))
            continue
        found, odd = relative_files(root, root / class_name, exclude=not_followed)
        paths.extend(found)
        labels.extend([label] * len(found))
        skipped.extend(odd)
    if not paths:
        raise InvalidArgumentError(f"source folder {str(root)!r} contains no files below its class folders")
    texts, exact = recorded_paths(paths)
    return Listing(
        classes=[path_text(name) for name in classes],
        paths=texts,
        labels=np.asarray(labels, dtype=np.int64),
        loader=FolderLoader(str(root)),
        description={"kind": "folder", "root": str(root), "num_candidates": len(paths)},
        skipped=[item.as_text() for item in skipped],
        columns={} if exact is None else {PATH_BYTES: exact},
        fingerprint=files_fingerprint(str(root), paths, skipped),
    )


def _class_folder_owners(root: Path, classes: list[str]) -> dict[tuple[int, int], str]:
    """Each class folder's identity -> the first class that is that folder (links can alias one)."""
    owners: dict[tuple[int, int], str] = {}
    for class_name in classes:
        folder = _identity(str(root / class_name))
        if folder is not None:
            owners.setdefault(folder, class_name)
    return owners


def relative_files(root: Path, top: Path, *, exclude: Container = frozenset()) -> tuple[list[str], list[Skipped]]:
    """The regular files below ``top`` (``walk_files`` order) as "/"-separated paths relative to
    ``root``, and its odd entries as skipped inputs."""
    paths: list[str] = []
    skipped: list[Skipped] = []
    for directory, files, odd in walk_files(top, exclude=exclude):
        relative_dir = os.path.relpath(directory, root).replace(os.sep, "/")
        prefix = "" if relative_dir == "." else f"{relative_dir}/"
        paths.extend(prefix + name for name in files)
        skipped.extend(Skipped(prefix + name, reason) for name, reason in odd)
    return paths, skipped


def walk_files(top: Path, *, exclude: Container = frozenset()):
    """Yield (directory, sorted regular file names, [(odd name, reason)]) in sorted directory order.

    One ``scandir`` per directory and no per-file stat (d_type answers is_file), except for
    symlinks. Symlinked directories are followed, but each directory (st_dev, st_ino) is walked
    once, so loops and webs of links end: the real tree below ``top`` first, so that a directory in
    it keeps its real path, then the links it holds (not into those in ``exclude``), each directory
    by the first path to it in sorted order.
    """
    walked, found, links = set(), [], []
    _walk([str(top)], walked, found, links=links)
    _walk(links, walked, found, exclude=exclude)
    found.sort(key=lambda item: item[0])
    yield from found


def _walk(pending: list[str], walked: set, found: list, *, links: list[str] | None = None,
          exclude: Container = ()) -> None:
    """Walk the directories ``pending`` and below, each identity once, in sorted path order (a heap:
    a child's path sorts after its parent's). With ``links``, symlinked sub-directories are set
    aside there rather than walked."""
    heapq.heapify(pending)
    while pending:
        directory = heapq.heappop(pending)
        key = _identity(directory)
        if key is None or key in walked or key in exclude:
            continue
        walked.add(key)
        files, odd, subdirectories = _scan(directory)
        found.append((directory, files, odd))
        for subdirectory, is_link in subdirectories:
            if is_link and links is not None:
                links.append(subdirectory)
            else:
                heapq.heappush(pending, subdirectory)


def _identity(directory: str) -> tuple[int, int] | None:
    try:
        status = os.stat(directory)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _scan(directory: str) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, bool]]]:
    """A directory's regular files and odd entries (sorted), and its sub-directories: (path, is a link)."""
    files, odd, subdirectories = [], [], []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():
                    subdirectories.append((entry.path, entry.is_symlink()))  # hidden ones too, as torchvision
                elif entry.name.startswith("."):
                    continue
                elif entry.is_file():
                    files.append(entry.name)
                else:
                    odd.append((entry.name, _why_not_regular(entry)))
    except OSError as error:
        odd.append((".", f"cannot list directory: {error.strerror}"))
    return sorted(files), sorted(odd), subdirectories


def _why_not_regular(entry: os.DirEntry) -> str:
    if entry.is_symlink() and not os.path.exists(entry.path):
        return "broken symbolic link"
    return "not a regular file"
