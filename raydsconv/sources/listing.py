"""The sample table a source produces: what the pipeline converts, in the order it is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.paths):
            raise ValueError("a listing needs exactly one label per path")

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def __len__(self) -> int:
        return len(self.paths)
