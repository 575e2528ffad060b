"""The sample table a source produces: what the pipeline converts, in the order it is stored."""

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


class Loader(Protocol):
    """Reads one candidate inside a worker. ``row`` holds the candidate's ``path`` and the listing's
    ``columns``. Returns the encoded file bytes, or for in-memory sources an ``(image, target)``
    pair (image: PIL image, HxW[xC] array or CxHxW tensor). Shipped to each worker once."""

    def read(self, row: dict[str, Any]) -> Any: ...


@dataclass
class Listing:
    """Candidates in storage order. Candidate ``i`` goes to shard ``i // images_per_file``."""

    classes: list[str]
    paths: list[str]  # relative to the source root, "/"-separated
    labels: np.ndarray  # int64, one per path
    loader: Loader
    description: dict[str, Any]  # recorded in the manifest as the source
    skipped: list[Skipped] = field(default_factory=list)  # found while listing (not regular files)
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # per-candidate extras for the loader
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
    skipped while listing: what changes when files are added, removed, replaced or edited."""
    digest = hashlib.sha256()
    for path in relative_paths:
        try:
            status = os.stat(os.path.join(root, path))
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0unreadable\n".encode())
    for item in skipped:
        digest.update(f"{item.path}\0skipped\0{item.reason}\n".encode())
    return digest.hexdigest()
