"""The sample table a source produces: what the pipeline converts, in the order it is stored.

Paths are recorded as text (index, manifest, shards' ``path`` columns and ``.json`` members).
A name that is not valid UTF-8 (``os`` and ``tarfile`` give its odd bytes as surrogate escapes)
is recorded with each odd byte written ``\\xNN``, Python's ``backslashreplace``; every UTF-8 name
is recorded unchanged. That text is not reversible on its own (a file may really be named
``caf\\xe9.jpg``), so the exact bytes of such names travel beside it in a ``path_bytes`` column
(``mask_path_bytes`` for masks): loaders open that, and ``index.parquet`` keeps it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import numpy as np


@dataclass(frozen=True)
class Skipped:
    """An input that did not become a sample: its path (relative to the source root) and why."""

    path: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}

    def as_text(self) -> "Skipped":
        """With its path (and any path in its reason) as recorded text, see ``path_text``."""
        return Skipped(path_text(self.path), path_text(self.reason))


class Loader(Protocol):
    """Reads one candidate inside a worker. ``row`` holds the candidate's ``path`` and the listing's
    ``columns``. Returns the encoded file bytes, or for in-memory sources an ``(image, target)``
    pair (image: PIL image, HxW[xC] array or CxHxW tensor). Shipped to each worker once. A loader
    with a true ``thread_safe`` attribute is read by several threads at once; others one at a time."""

    def read(self, row: dict[str, Any]) -> Any: ...


@dataclass
class Listing:
    """Candidates in storage order. Candidate ``i`` goes to shard ``i // images_per_file``."""

    classes: list[str]
    paths: list[str]  # relative to the source root, "/"-separated, as text (see path_text)
    labels: np.ndarray  # int64, one per path
    loader: Loader
    description: dict[str, Any]  # recorded in the manifest as the source
    skipped: list[Skipped] = field(default_factory=list)  # found while listing (not regular files)
    # per-candidate extras for the loader, e.g. PATH_BYTES when a name is not UTF-8
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    labels_from_items: bool = False  # labels are only known once a worker reads the item
    # Changes when the source does (files added, removed, resized or touched): a conversion of a changed
    # source is never resumed. Empty: the source cannot tell (it is then trusted).
    fingerprint: str = ""

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.paths):
            raise ValueError("a listing needs exactly one label per path")

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)


def files_fingerprint(root: str, relative_paths: Iterable[str], skipped: Iterable[Skipped] = ()) -> str:
    """sha256 over each file's path, size and modification time (one stat each), and over the inputs
    skipped while listing: what changes when files are added, removed, replaced or edited. Paths are
    the real ones (a name that is not UTF-8 hashes as its bytes)."""
    digest = hashlib.sha256()

    def add(line: str) -> None:
        digest.update(line.encode("utf-8", "surrogateescape"))

    for path in relative_paths:
        try:
            status = os.stat(os.path.join(root, path))
            add(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n")
        except OSError:
            add(f"{path}\0unreadable\n")
    for item in skipped:
        add(f"{item.path}\0skipped\0{item.reason}\n")
    return digest.hexdigest()


PATH_BYTES = "path_bytes"  # the listing column (and index column) of exact names


def path_text(path: str) -> str:
    """``path`` as recorded: unchanged if it is UTF-8, else each byte that is not written ``\\xNN``."""
    return _exact(path).decode("utf-8", "backslashreplace")


def recorded_paths(paths: list[str]) -> tuple[list[str], np.ndarray | None]:
    """``paths`` as text, and when some are not UTF-8, their exact bytes (None where the text is
    exact) for a ``*_bytes`` column; else None, and the listing has no such column."""
    if all(map(str.isascii, paths)):  # the usual case, and fast: isascii is O(1)
        return paths, None
    odd = [i for i, path in enumerate(paths) if not _is_utf8(path)]
    if not odd:
        return paths, None
    texts, exact = list(paths), np.full(len(paths), None, dtype=object)
    for i in odd:
        texts[i], exact[i] = path_text(paths[i]), _exact(paths[i])
    return texts, exact


def exact_name(row: dict[str, Any], column: str = "path") -> str:
    """The name a loader opens: from the exact bytes when the listing recorded them, else the text."""
    exact = row.get(f"{column}_bytes")
    return os.fsdecode(bytes(exact)) if exact else row[column]


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # surrogate escapes: bytes that were not UTF-8
        return False
    return True


def _exact(text: str) -> bytes:
    """The bytes of a name as the OS has them (surrogate escapes back to their bytes)."""
    return os.fsencode(text)
