"""What a format is: a ShardWriter that writes one shard in one process, and a ShardReader that
reads samples back by (shard, row). Formats know nothing of Ray; the pipeline drives the writers."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from raydsconv.errors import CorruptDatasetError, InvalidArgumentError, output_error, writing
from raydsconv.layout import partial_path, shard_file_name
from raydsconv.manifest import Manifest, Shard, ShardFile
from raydsconv.targets import Field, TargetKind, stored_fields, target_of


HASH_CHUNK = 1 << 23  # 8 MiB: hashlib releases the GIL for each update, so threads hash files in parallel


def file_sha256(path: Path) -> str:
    """The sha256 of a file's contents, read in large chunks (raises OSError)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


class OutputFile:
    """One file of a shard being written: a temporary name, hashed as it is written, renamed into place
    by ``commit``, removed by ``abort``. Formats write through it (it is a binary, write-only file
    object) or, for libraries that only take a path (``streamed=False``), let them write ``path``
    and the file is hashed once at commit. A failed write (a full disk) raises OutputWriteError
    naming the final file, not the temporary one."""

    def __init__(self, final: Path, root: Path, *, streamed: bool = True):
        self.final = final
        self.root = root
        self.path = partial_path(final)
        self.size = 0
        self._digest = hashlib.sha256()
        self._hashed = streamed  # the digest covers the file as it is: no read-back needed
        self._file: BinaryIO | None = None
        if streamed:
            with writing(final):
                self._file = open(self.path, "wb")

    # the file-object protocol that pyarrow, tarfile and numpy need
    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        try:  # not `with writing(...)`: this is called per tar member, and a try costs nothing
            self._file.write(view)
        except OSError as error:
            raise output_error(error, self.final) from error
        self._digest.update(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        with writing(self.final):
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
            with writing(self.final):
                self._file.close()  # flushes: a full disk may show only now

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes already written (e.g. a header whose count is only known at the end)."""
        with writing(self.final):
            self._file.flush()
            os.pwrite(self._file.fileno(), data, offset)
        self._hashed = False

    def commit(self) -> ShardFile:
        """Close, rename to the final name, and describe the file (size and sha256)."""
        self.close()
        with writing(self.final):
            if self._hashed:
                sha256 = self._digest.hexdigest()
            else:  # written by a library through its path, or patched: hash what is there
                sha256, self.size = file_sha256(self.path), os.path.getsize(self.path)
            os.replace(self.path, self.final)
        return ShardFile(name=self.final.relative_to(self.root).as_posix(), bytes=self.size, sha256=sha256)

    def abort(self) -> None:
        """Remove the temporary file; never raises for a file that cannot be flushed (a full disk):
        closing it then fails, yet closes it, and the file must go all the same."""
        try:
            self.close()
        except OSError:
            pass
        self.path.unlink(missing_ok=True)


class ShardWriter(ABC):
    """Writes exactly one shard. ``add`` receives the shard's kept samples in order, in batches.

    A batch holds, row-aligned: ``label``, ``candidate`` (global input number), ``path`` (source
    path relative to the source root), ``width``, ``height``, ``source_format``, ``extension``,
    and ``image`` (pixels, fixed-size formats) or ``data`` (the original file bytes, flexible ones).
    Beside the image a format stores ``self.fields``, the fields of the dataset's target kind
    (``raydsconv.targets``): an array field is the batch column of its name, an encoded one
    ``{name}_data`` and ``{name}_extension``. ``label`` is -1 when the kind has no class label.

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
        self.target: TargetKind = target_of(params)
        self.fields: tuple[Field, ...] = stored_fields(params)
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
        """Remove every temporary file after a failure (formats close their own writers first,
        ignoring the errors of a file that is discarded anyway)."""
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


DEFAULT_MAX_OPEN_SHARDS = 128


class OpenShards:
    """The shards a reader holds open (memory maps, file handles), at most ``limit``: the least
    recently used is closed when another is opened. Bounds a process's open files whatever the
    number of shards, instead of raising its descriptor limit."""

    def __init__(self, limit: int = DEFAULT_MAX_OPEN_SHARDS):
        if limit < 1:
            raise InvalidArgumentError(f"max_open_shards must be at least 1, got {limit}")
        self.limit = limit
        self._open: OrderedDict[Any, tuple[Any, Callable[[Any], None] | None]] = OrderedDict()

    def get(self, key: Any, open_shard: Callable[[], Any], close: Callable[[Any], None] | None = None) -> Any:
        if key in self._open:
            self._open.move_to_end(key)
            return self._open[key][0]
        value = open_shard()
        self._open[key] = (value, close)
        while len(self._open) > self.limit:
            _, (old, closer) = self._open.popitem(last=False)
            if closer is not None:
                closer(old)
        return value

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        while self._open:
            _, (value, closer) = self._open.popitem()
            if closer is not None:
                closer(value)


class ShardReader(ABC):
    """Reads samples of one dataset; created lazily inside each worker process. Formats keep what
    they open in ``self.open_shards`` (bounded, least recently used closed first)."""

    def __init__(self, root: Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest
        self.target: TargetKind = target_of(manifest.params)
        self.fields: tuple[Field, ...] = stored_fields(manifest.params)
        self.open_shards = OpenShards()  # the reading core sets its own limit

    def close(self) -> None:
        self.open_shards.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # e.g. at interpreter exit
            self.close()

    def file_name(self, shard: int, role: str) -> str:
        return self.manifest.shards[shard].files[role].name

    def corrupt(self, shard: int, role: str, problem: str) -> CorruptDatasetError:
        """The error for a shard file that disagrees with the manifest: dataset, file and problem."""
        return CorruptDatasetError(f"{self.root}: {self.file_name(shard, role)}: {problem}")

    def check_rows(self, shard: int, role: str, rows: int, unit: str = "rows") -> None:
        expected = self.manifest.shards[shard].num_samples
        if rows != expected:
            raise self.corrupt(shard, role, f"holds {rows} {unit}, the manifest says {expected} samples")

    def check(self, shard: int) -> np.ndarray | None:
        """Open the shard's files and check their headers against the manifest (counts, shapes),
        raising CorruptDatasetError; return the class labels the shard itself stores, or None where
        it stores none. Readers run the same checks when they first open a shard; ``verify`` calls
        this for every shard. A format without checks of its own returns None."""
        return None

    def class_field(self) -> Field | None:
        """The field holding class labels (the index's ``label`` column too), if the kind has one."""
        return next((item for item in self.fields if item.indexed), None)

    @abstractmethod
    def read(self, shard: int, row: int) -> tuple[Any, dict[str, Any]]:
        """Return (image, fields): the image as pixels (fixed-size formats) or encoded bytes (flexible
        ones); each field's value by name (an array field's value, an encoded field's bytes)."""

    def read_rows(self, shard: int, rows: np.ndarray) -> tuple[Any, dict[str, Any]]:
        """Several rows of one shard, ``rows`` sorted: images stacked into one array for fixed-size
        formats (formats override this to read contiguous runs at once), a list of bytes for
        flexible ones; each field's values as one array, or a list of bytes for encoded fields."""
        samples = [self.read(shard, int(row)) for row in rows]
        images = [image for image, _ in samples]
        return (np.stack(images) if images and isinstance(images[0], np.ndarray) else images,
                {item.name: collected([values[item.name] for _, values in samples], item) for item in self.fields})


def collected(values: list[Any], field: Field) -> Any:
    """One field's per-row values as read_rows returns them: an array, or for encoded fields a list."""
    if field.encoded:
        return values
    return np.asarray(values, dtype=field.dtype).reshape(len(values), *field.shape)


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
    field_files: bool = False  # each target field in a file of its own too, role = its stored_name
    targets: tuple[str, ...] | None = None  # the target kinds it can store; None: any
    required_params: tuple[str, ...] = ()
    file_pattern: str = ""  # regex of the names of its shard and dataset-level files (not temporary ones)
    # The format's options: a frozen dataclass whose fields are the options, checked in __post_init__.
    options: type | None = None
    # Called once on the driver after every shard is in place; returns extra params for the manifest.
    finalize: Callable[[Path, list["Shard"], dict[str, Any]], dict[str, Any]] | None = None
    dataset_files: tuple[str, ...] = ()  # the files finalize writes beside the shards
    # Checks those files against the manifest for `raydsconv verify`: [(file name, problem), ...].
    check_dataset: Callable[[Path, Manifest], list[tuple[str, str]]] | None = None

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
        if not self.field_files:
            return self.file_roles
        return (*self.file_roles, *(item.file_stem for item in stored_fields(params)))
