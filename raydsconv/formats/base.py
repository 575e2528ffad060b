"""What a format is: a ShardWriter that writes one shard in one process, and a ShardReader that
reads samples back by (shard, row). Formats know nothing of Ray; the pipeline drives the writers."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydsconv.manifest import Manifest, Shard, ShardFile


def shard_file_name(stem: str, shard: int, suffix: str) -> str:
    """Deterministic names, e.g. images-00042.npy; the manifest lists them, readers never listdir."""
    return f"{stem}-{shard:05d}{suffix}"


def partial_path(final: Path) -> Path:
    """Where a shard file is written before it is renamed into place."""
    return final.with_name(f".{final.name}.partial")


def commit_file(temporary: Path, final: Path, root: Path) -> ShardFile:
    """Checksum a finished temporary file and rename it to its final name."""
    digest = hashlib.sha256()
    with open(temporary, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    size = temporary.stat().st_size
    os.replace(temporary, final)
    return ShardFile(name=final.relative_to(root).as_posix(), bytes=size, sha256=digest.hexdigest())


class ShardWriter(ABC):
    """Writes exactly one shard. ``add`` receives the shard's kept samples in order, in batches.

    A batch holds, row-aligned: ``label``, ``candidate`` (global input number), ``path`` (source
    path relative to the source root), ``width``, ``height``, ``source_format``, ``extension``,
    and ``image`` (pixels, fixed-size formats) or ``data`` (the original file bytes, flexible ones).
    With dense labels (``params["dense"]``) it also holds ``mask`` (fixed: resized like ``image``)
    or ``mask_data`` and ``mask_extension`` (flexible: the mask file's bytes), and ``label`` is -1.
    """

    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str]):
        self.root = Path(root)
        self.shard = shard
        self.params = params
        self.classes = classes

    @abstractmethod
    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch of rows, in order."""

    @abstractmethod
    def close(self) -> dict[str, ShardFile]:
        """Finish, rename every file into place, and return them by role."""

    @abstractmethod
    def abort(self) -> None:
        """Remove temporary files after a failure."""

    def index_columns(self) -> dict[str, np.ndarray]:
        """Per-row facts only this format knows (e.g. byte offsets), stored in its index."""
        return {}


class ShardReader(ABC):
    """Reads samples of one dataset; created lazily inside each worker process."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest
        self.dense = bool(manifest.params.get("dense"))

    @abstractmethod
    def read(self, shard: int, row: int) -> tuple[Any, Any]:
        """Return (image, target): the image as pixels (fixed-size formats) or encoded bytes (flexible
        ones); the target a label, or with dense labels the mask as pixels or encoded bytes."""

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[Any, Any]:
        """Several rows of one shard, ``rows`` sorted: images stacked into one array for fixed-size
        formats (formats override this to read contiguous runs at once), a list of bytes for
        flexible ones; targets as an array of labels, or the masks as images are."""
        samples = [self.read(shard, int(row)) for row in rows]
        return _collected([image for image, _ in samples]), _collected([target for _, target in samples])


def _collected(values: list[Any]) -> Any:
    """Per-row values as read_rows returns them: arrays stacked, bytes as a list, labels an array."""
    if values and isinstance(values[0], np.ndarray):
        return np.stack(values)
    if values and isinstance(values[0], bytes):
        return values
    return np.asarray(values, dtype=np.int64)


def contiguous_runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """Sorted row numbers as [start, stop) runs: one read per run instead of one per row."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks)] if len(rows) else []


@dataclass(frozen=True)
class Format:
    name: str
    kind: str  # "fixed" (decoded pixels of one shape) or "flexible" (original bytes)
    writer: type[ShardWriter]
    reader: type[ShardReader]
    file_roles: tuple[str, ...]  # the files every shard has, by role
    dense_file_roles: tuple[str, ...] | None = None  # the same with dense labels; None: no masks
    required_params: tuple[str, ...] = ()
    file_pattern: str = ""  # regex of every file name a shard may leave, partial ones included
    # Validates the user's format_options for this format; returns the params to record.
    check_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    # Called once on the driver after every shard is in place; returns extra params for the manifest.
    finalize: Callable[[Path, list["Shard"], dict[str, Any]], dict[str, Any]] | None = None

    @property
    def fixed_size(self) -> bool:
        return self.kind == "fixed"

    def roles(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The files every shard of a dataset with these params has."""
        return (self.dense_file_roles or ()) if params.get("dense") else self.file_roles
