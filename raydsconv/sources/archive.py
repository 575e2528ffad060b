"""A tar archive of an ImageNet-style folder, read in place (never extracted), in the same order
and with the same labels as the extracted folder. Also ImageNet's training archive layout: a tar
whose top-level members are one tar per class (``n01440764.tar``, ...), classes named after them.

The driver scans member headers once; workers then read each image by its byte offset with
``pread``. Only uncompressed tars can be read that way. Member names are never used as paths on
disk, and an archive with absolute or ``..`` member names is refused. A name that is not UTF-8
(e.g. Latin-1) is recorded as text with its odd bytes as ``\\xNN``, and its exact bytes in
``path_bytes`` (see ``raydsconv.sources.listing``).
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.sources.listing import PATH_BYTES, Listing, Skipped, files_fingerprint, path_text, recorded_paths


@dataclass(frozen=True)
class TarMemberLoader:
    archive: str
    thread_safe: ClassVar[bool] = True  # opens (or preads) its file on every read

    def read(self, row: dict) -> bytes:
        descriptor = os.open(self.archive, os.O_RDONLY)
        try:
            return os.pread(descriptor, int(row["size"]), int(row["offset"]))
        finally:
            os.close(descriptor)


@dataclass(frozen=True)
class _Member:
    class_name: str
    directory: str  # "class/sub/dir", for ImageFolder's sorted-walk order
    name: str
    offset: int
    size: int


class _Window:
    """A read-only file view of ``size`` bytes at ``start`` of another file (a tar inside a tar)."""

    def __init__(self, file, start: int, size: int):
        self.file, self.start, self.size, self.position = file, start, size, 0

    def read(self, count: int = -1) -> bytes:
        count = self.size - self.position if count < 0 else min(count, self.size - self.position)
        self.file.seek(self.start + self.position)
        data = self.file.read(count)
        self.position += len(data)
        return data

    def seek(self, position: int, whence: int = 0) -> int:
        self.position = {0: position, 1: self.position + position, 2: self.size + position}[whence]
        return self.position

    def tell(self) -> int:
        return self.position


def list_tar_archive(path: str | os.PathLike, root_in_archive: str | None = None) -> Listing:
    path = Path(path).absolute()
    root = PurePosixPath(root_in_archive.strip("/")) if root_in_archive else None
    members: list[_Member] = []
    skipped: list[Skipped] = []
    class_names: set[str] = set()
    with open(path, "rb") as file:
        archive_size = os.fstat(file.fileno()).st_size
        for info, base in _members(file, path):
            if info.offset_data + info.size > archive_size:
                raise InvalidArgumentError(
                    f"{path}: the archive is truncated or corrupt (member {info.name!r} runs past its end)"
                )
            parts = _relative_parts(info.name, root, path)
            if parts is None or parts[-1].startswith("."):
                continue
            if info.isdir():
                if len(parts) == 1:
                    class_names.add(parts[0])  # an empty class folder still gets its index
                continue
            if len(parts) == 1:
                if info.isfile() and parts[0].endswith(".tar") and base == 0:
                    class_name = parts[0][: -len(".tar")]
                    class_names.add(class_name)
                    members.extend(_nested_members(file, info, class_name, path))
                continue  # files beside the class folders are not samples, as in ImageFolder
            class_names.add(parts[0])
            name = "/".join(parts)
            if not info.isfile():
                skipped.append(Skipped(name, "not a regular file (link or device in the archive)"))
                continue
            members.append(_Member(parts[0], "/".join(parts[:-1]), parts[-1], base + info.offset_data, info.size))
    if not members:
        raise InvalidArgumentError(f"archive {str(path)!r} holds no files below class folders"
                                   + (f" under {root_in_archive!r}" if root else ""))
    classes = sorted(class_names)
    index = {name: i for i, name in enumerate(classes)}
    members.sort(key=lambda m: (index[m.class_name], m.directory, m.name))
    paths, exact = recorded_paths([f"{m.directory}/{m.name}" for m in members])
    return Listing(
        classes=[path_text(name) for name in classes],
        paths=paths,
        labels=np.asarray([index[m.class_name] for m in members], dtype=np.int64),
        loader=TarMemberLoader(str(path)),
        description={"kind": "tar_archive", "root": str(path), "root_in_archive": root_in_archive,
                     "num_candidates": len(members)},
        skipped=[item.as_text() for item in skipped],
        columns={"offset": np.asarray([m.offset for m in members], dtype=np.int64),
                 "size": np.asarray([m.size for m in members], dtype=np.int64),
                 **({} if exact is None else {PATH_BYTES: exact})},  # read by offset; recorded in the index
        fingerprint=files_fingerprint(str(path.parent), [path.name]),  # members follow from the bytes
    )


def _members(file, path: Path):
    """Every member header of the archive, streamed (the TarFile keeps no list of them)."""
    try:
        archive = tarfile.open(fileobj=file, mode="r:")
    except tarfile.ReadError as error:
        raise InvalidArgumentError(
            f"{path}: not an uncompressed tar archive ({error}); raydsconv reads images in place by offset, "
            "so decompress .tar.gz/.tgz first"
        ) from None
    while True:
        try:
            info = archive.next()
        except tarfile.TarError as error:
            raise InvalidArgumentError(f"{path}: the archive is truncated or corrupt ({error})") from None
        if info is None:
            break
        if info.size < 0 or archive.offset <= info.offset:  # tarfile accepts negative sizes
            raise InvalidArgumentError(f"{path}: the archive is corrupt (member {info.name!r} has a bad size)")
        archive.members.clear()
        yield info, 0
    # tarfile takes a cut-off header for the end of the archive: past the last member, a whole
    # archive holds only zero padding.
    file.seek(archive.offset)
    while chunk := file.read(1 << 20):
        if chunk.strip(b"\0"):
            raise InvalidArgumentError(f"{path}: the archive is truncated or corrupt after byte {archive.offset}")


def _relative_parts(name: str, root: PurePosixPath | None, path: Path) -> tuple[str, ...] | None:
    member = PurePosixPath(name)
    if member.is_absolute() or ".." in member.parts:
        raise InvalidArgumentError(
            f"{path}: member {name!r} has an absolute or '..' path; refusing a malformed or hostile archive"
        )
    parts = tuple(part for part in member.parts if part != ".")
    if root is not None:
        if parts[: len(root.parts)] != root.parts:
            return None
        parts = parts[len(root.parts) :]
    return parts or None


def _nested_members(file, outer: tarfile.TarInfo, class_name: str, path: Path) -> list[_Member]:
    members = []
    window = _Window(file, outer.offset_data, outer.size)
    try:
        inner = tarfile.open(fileobj=window, mode="r:")
        for info in inner:
            if info.size < 0 or inner.offset <= info.offset:
                raise InvalidArgumentError(f"{path}: class archive {outer.name} is corrupt (bad member size)")
            member = PurePosixPath(info.name)
            if member.is_absolute() or ".." in member.parts:
                raise InvalidArgumentError(f"{path}: member {outer.name}/{info.name} has an absolute or '..' path")
            if outer.offset_data + info.offset_data + info.size > outer.offset_data + outer.size:
                raise InvalidArgumentError(f"{path}: class archive {outer.name} is truncated or corrupt")
            if info.isfile() and not member.name.startswith("."):
                directory = "/".join((class_name, *member.parts[:-1]))
                members.append(_Member(class_name, directory, member.name, outer.offset_data + info.offset_data, info.size))
        window.seek(inner.offset)
        if window.read().strip(b"\0"):  # a cut-off header reads as the end: only padding may follow
            raise InvalidArgumentError(f"{path}: class archive {outer.name} is truncated or corrupt")
    except tarfile.TarError as error:
        raise InvalidArgumentError(f"{path}: class archive {outer.name} is truncated or corrupt ({error})") from None
    return members
