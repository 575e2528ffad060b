"""What a format is: a ShardWriter that writes one shard in one process, and a ShardReader that
reads samples back by (shard, row). Formats know nothing of Ray; the pipeline drives the writers."""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from raydsconv.errors import InvalidArgumentError
from raydsconv.layout import partial_path, shard_file_name
from raydsconv.manifest import Manifest, Shard, ShardFile


class OutputFile:
    """One file of a shard being written: a temporary name, hashed as it is written, renamed into place
    by ``commit``, removed by ``abort``. Formats write through it (it is a binary, write-only file
    object) or, for libraries that only take a path (``streamed=False``), let them write ``path``
    and the file is hashed once at commit."""

    def __init__(self, final: Path, root: Path, *, streamed: bool = True):
        self.final = final
        self.root = root
        self.path = partial_path(final)
        self.size = 0
        self._digest = hashlib.sha256()
        self._hashed = streamed  # the digest covers the file as it is: no read-back needed
        self._file: BinaryIO | None = open(self.path, "wb") if streamed else None

    # the file-object protocol that pyarrow, tarfile and numpy need
    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._file.write(view)
        self._digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._file.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:  # numpy's savez checks for it before taking a file object
        raise io.UnsupportedOperation(f"{self.path} is being written")

    def seekable(self) -> bool:
        return False  # writers stream; a header patched in place goes through patch()

    @property
    def closed(self) -> bool:
        return self._file is None or self._file.closed

    def close(self) -> None:
        """Libraries close the files they are given; that does not commit them."""
        if self._file is not None:
            self._file.close()

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written (e.g. a header whose count is only known at the end)."""
        self._file.flush()
        os.pwrite(self._file.fileno(), data, offset)
        self._hashed = False

    def commit(self) -> ShardFile:
        """Close, rename to the final name, and describe the file (size and sha256)."""
        self.close()
        if not self._hashed:  # written by a library through its path, or patched: hash what is there
            self._digest = hashlib.sha256()
            with open(self.path, "rb") as file:
                while chunk := file.read(1 << 22):
                    self._digest.update(chunk)
            self.size = os.path.getsize(self.path)
        os.replace(self.path, self.final)
        return ShardFile(name=self.final.relative_to(self.root).as_posix(), bytes=self.size,
                         sha256=self._digest.hexdigest())

    def abort(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class ShardWriter(ABC):
    """Writes exactly one shard. ``add`` receives the shard's kept samples in order, in batches.

    A batch holds, row-aligned: ``label``, ``candidate`` (global input number), ``path`` (source
    path relative to the source root), ``width``, ``height``, ``source_format``, ``extension``,
    and ``image`` (pixels, fixed-size formats) or ``data`` (the original file bytes, flexible ones).
    With dense labels (``params["dense"]``) it also holds ``mask`` (fixed: resized like ``image``)
    or ``mask_data`` and ``mask_extension`` (flexible: the mask file's bytes), and ``label`` is -1.

    The base owns the files: a format opens each with ``create`` and writes rows into it; ``close``
    calls ``finish`` (the format's footers) and commits every file, ``abort`` removes them.
    ``expected_rows`` is the shard's number of inputs: its row count unless some are skipped.
    """

    def __init__(self, root: Path, shard: int, params: dict[str, Any], classes: list[str], *,
                 expected_rows: int | None = None):
        self.root = Path(root)
        self.shard = shard
        self.params = params
        self.classes = classes
        self.expected_rows = expected_rows
        self.files: dict[str, OutputFile] = {}

    def create(self, role: str, stem: str, suffix: str, *, streamed: bool = True) -> OutputFile:
        """Open this shard's file of ``role``, e.g. ``create("images", "images", ".npy")``."""
        file = OutputFile(self.root / shard_file_name(stem, self.shard, suffix), self.root, streamed=streamed)
        self.files[role] = file
        return file

    @abstractmethod
    def add(self, batch: dict[str, np.ndarray]) -> None:
        """Append a batch of rows, in order."""

    def finish(self) -> None:
        """Write what the format still holds (footers, the last rows) and close its writers."""

    def close(self) -> dict[str, ShardFile]:
        """Finish, rename every file into place, and return them by role."""
        self.finish()
        return {role: file.commit() for role, file in self.files.items()}

    def abort(self) -> None:
        """Remove every temporary file after a failure."""
        for file in self.files.values():
            file.abort()

    def index_columns(self) -> dict[str, np.ndarray]:
        """Per-row facts only this format knows (e.g. byte offsets), stored in its index."""
        return {}

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            self.abort()


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
    file_pattern: str = ""  # regex of the names of its shard and dataset-level files (not temporary ones)
    # The format's options: a frozen dataclass whose fields are the options, checked in __post_init__.
    options: type | None = None
    # Called once on the driver after every shard is in place; returns extra params for the manifest.
    finalize: Callable[[Path, list["Shard"], dict[str, Any]], dict[str, Any]] | None = None

    @property
    def fixed_size(self) -> bool:
        return self.kind == "fixed"

    def parse_options(self, given: dict[str, Any]) -> Any:
        """The user's format_options for this format as its typed options (None: it takes none)."""
        if self.options is None:
            if given:
                raise InvalidArgumentError(f"format {self.name!r} takes no options, got {sorted(given)}")
            return None
        unknown = set(given) - {field.name for field in fields(self.options)}
        if unknown:
            raise InvalidArgumentError(f"format {self.name!r} has no option {', '.join(sorted(unknown))}")
        return self.options(**given)

    def roles(self, params: dict[str, Any]) -> tuple[str, ...]:
        """The files every shard of a dataset with these params has."""
        return (self.dense_file_roles or ()) if params.get("dense") else self.file_roles
