"""Cheap structural checks of a dataset on disk against its manifest, shared by the readers (run
when a dataset is opened) and by ``raydsconv.verify()`` (which runs them all and lists every problem).

Cheap means no file is read whole: a stat per shard file, the index's footer, a few columns.
Hashes and decoding are ``raydsconv.verify()``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raydsconv.errors import CorruptDatasetError, UnsupportedFormatError
from raydsconv.manifest import Manifest
from raydsconv.targets import ClassLabel, target_of

INDEX_COLUMNS = ("label", "shard", "row")  # what readers rely on; the other columns are descriptive


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: in which file (relative to the dataset), and which sample."""

    file: str
    message: str
    sample: int | None = None
    warning: bool = False  # e.g. a stray file: worth saying, but the dataset reads correctly

    def __str__(self) -> str:
        sample = f"sample {self.sample}: " if self.sample is not None else ""
        return f"{self.file}: {sample}{self.message}"


def raise_first(root: Path, problems: list[Problem]) -> None:
    """Readers stop at the first problem; the message names the dataset and points at verify."""
    errors = [p for p in problems if not p.warning]
    if errors:
        more = f" (and {len(errors) - 1} more; `raydsconv verify {root}` lists them)" if len(errors) > 1 else ""
        raise CorruptDatasetError(f"{root}: {errors[0]}{more}")


def format_problems(manifest: Manifest):
    """The manifest's format, and what is missing for its reader: (Format or None, problems)."""
    from raydsconv.formats import get_format

    try:
        fmt = get_format(manifest.format)
    except UnsupportedFormatError as error:
        return None, [Problem(manifest.file, str(error))]
    problems = [Problem(manifest.file, f"params lack {name}, which format {fmt.name!r} needs")
                for name in fmt.required_params if name not in manifest.params]
    for shard in manifest.shards:
        missing = [role for role in fmt.roles(manifest.params) if role not in shard.files]
        if missing:
            problems.append(Problem(manifest.file, f"shard {shard.index} lacks its {', '.join(missing)} file"))
    return fmt, problems


def file_problems(root: Path, manifest: Manifest) -> list[Problem]:
    """Every shard file present with its recorded size (a stat each, no open)."""
    problems = []
    for shard in manifest.shards:
        for shard_file in shard.files.values():
            try:
                size = (root / shard_file.name).stat().st_size
            except FileNotFoundError:
                problems.append(Problem(shard_file.name, f"is missing (a file of shard {shard.index})"))
                continue
            if size != shard_file.bytes:
                problems.append(Problem(shard_file.name, f"has {size} bytes, the manifest says {shard_file.bytes}: "
                                                         "the file was truncated or replaced"))
    return problems


def index_problems(root: Path, manifest: Manifest, *, contents: bool) -> list[Problem]:
    """The index agrees with the manifest: its row count from the footer; with ``contents``, also
    that its shard/row columns place every sample where the manifest's counts say and that its
    labels are within the classes."""
    import pyarrow.parquet as pq

    name = manifest.index_file
    try:
        file = pq.ParquetFile(root / name)
        rows, columns = file.metadata.num_rows, set(file.schema_arrow.names)
    except FileNotFoundError:
        return [Problem(name, "missing: the dataset is incomplete")]
    except Exception as error:  # pyarrow raises several kinds for a damaged file
        return [Problem(name, f"cannot be read ({type(error).__name__}: {error}); the index is damaged")]
    missing = [column for column in INDEX_COLUMNS if column not in columns]
    if missing:
        return [Problem(name, f"lacks column(s) {', '.join(missing)}")]
    if rows != manifest.num_samples:
        return [Problem(name, f"has {rows} rows, the manifest {manifest.num_samples} samples")]
    if not contents:
        return []
    try:
        table = file.read(columns=list(INDEX_COLUMNS))
    except Exception as error:
        return [Problem(name, f"cannot be read ({type(error).__name__}: {error}); the index is damaged")]
    counts = [shard.num_samples for shard in manifest.shards]
    expected_shard = np.repeat(np.arange(len(counts)), counts)
    expected_row = np.concatenate([np.arange(count) for count in counts]) if counts else np.zeros(0, np.int64)
    problems = []
    for column, expected in (("shard", expected_shard), ("row", expected_row)):
        wrong = np.flatnonzero(table.column(column).to_numpy() != expected)
        if len(wrong):
            problems.append(Problem(name, f"column {column!r} disagrees with the manifest's shard counts "
                                          f"({len(wrong)} rows)", sample=int(wrong[0])))
    if isinstance(target_of(manifest.params), ClassLabel):  # other kinds' labels are -1; their classes name other things
        problems += label_problems(name, table.column("label").to_numpy(), len(manifest.classes))
    return problems


def labels_outside(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Positions of the labels outside 0 .. num_classes-1 (none when the class count is not known)."""
    if not num_classes or not len(labels):
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((labels < 0) | (labels >= num_classes))


def label_problems(file: str, labels: np.ndarray, num_classes: int, first_sample: int = 0) -> list[Problem]:
    """Labels outside 0 .. num_classes-1 (unchecked when the class count is not known)."""
    bad = labels_outside(labels, num_classes)
    if not len(bad):
        return []
    return [Problem(file, f"label {int(labels[bad[0]])} is outside 0..{num_classes - 1} "
                          f"({len(bad)} such labels)", sample=first_sample + int(bad[0]))]


def open_problems(root: Path, manifest: Manifest) -> list[Problem]:
    """What a reader checks when it opens a dataset: format, files and sizes, the index's footer. (The
    index's contents need not be read: each shard's own headers are checked when it is first read.)"""
    _, problems = format_problems(manifest)
    return problems + file_problems(root, manifest) + index_problems(root, manifest, contents=False)


def check_on_open(root: Path, manifest: Manifest) -> None:
    raise_first(root, open_problems(root, manifest))
