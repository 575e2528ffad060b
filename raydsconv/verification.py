"""``raydsconv verify``: everything that can be checked about a dataset on disk, every problem listed.

- the manifest's schema; its format known and complete;
- every shard file present, with its recorded size and sha256 (hashed in parallel, at disk speed);
- each shard's own headers against the manifest (counts, shapes, dtypes; a tar's members where the
  index places them), the labels a shard stores against the index's and against the class count;
- the index against the manifest (row count, shard/row columns, labels);
- dataset-level files: HDF5's virtual dataset, a several-formats output's ``formats.json``;
- files the dataset does not list (warnings: the dataset still reads correctly);
- with ``deep``: every stored image and mask decoded.

Neither torch nor Ray is imported.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raydsconv.checks import Problem, file_problems, format_problems, index_problems, label_problems
from raydsconv.errors import CorruptDatasetError, ManifestError
from raydsconv.formats.base import file_sha256
from raydsconv.layout import FORMATS_NAME, WORK_DIR, manifest_path, read_formats
from raydsconv.manifest import Manifest, ShardFile, load_manifest

DEEP_ROWS = 256  # rows read per call when decoding a shard


@dataclass
class VerifyReport:
    path: Path
    problems: list[Problem] = field(default_factory=list)
    files_hashed: int = 0
    bytes_hashed: int = 0
    hash_seconds: float = 0.0
    samples: int = 0
    samples_decoded: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        speed = self.bytes_hashed / 1e6 / self.hash_seconds if self.hash_seconds else 0.0
        decoded = f", {self.samples_decoded} decoded" if self.samples_decoded else ""
        checked = (f"{self.files_hashed} files ({self.bytes_hashed / 1e6:.1f} MB) hashed at {speed:.0f} MB/s, "
                   f"{self.samples} samples{decoded}")
        if self.ok:
            warnings = f", {len(self.problems)} warning(s)" if self.problems else ""
            return f"{self.path}: ok: {checked}{warnings}"
        return f"{self.path}: {len(self.errors)} problem(s) found; {checked}"

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "problems": [asdict(p) for p in self.problems],
                "files_hashed": self.files_hashed, "bytes_hashed": self.bytes_hashed,
                "hash_seconds": round(self.hash_seconds, 3), "samples": self.samples,
                "samples_decoded": self.samples_decoded}

    def raise_for_problems(self) -> None:
        if not self.ok:
            listed = "; ".join(str(p) for p in self.errors[:5])
            more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
            raise CorruptDatasetError(f"{self.path}: {listed}{more}")


def verify(path: str | os.PathLike, *, deep: bool = False, format: str | None = None,
           threads: int | None = None) -> VerifyReport:
    """Check the dataset at ``path`` (one format's dataset, or the top of a several-formats output:
    all of them, or ``format``); never raises for what it finds: see ``VerifyReport.problems``."""
    report = VerifyReport(Path(path))
    threads = threads or min(8, os.cpu_count() or 1)
    if (report.path / FORMATS_NAME).is_file():
        for name, folder in _formats_listing(report, format):
            _verify_dataset(report, report.path / folder, f"{folder}/", deep, threads, expected_format=name)
    else:
        _verify_dataset(report, report.path, "", deep, threads, expected_format=format)
    return report


def _formats_listing(report: VerifyReport, wanted: str | None) -> list[tuple[str, str]]:
    """The (format, folder) pairs of formats.json that exist; the others reported."""
    try:
        pairs = list((read_formats(report.path) or {}).items())
    except ValueError as error:
        report.problems.append(Problem(FORMATS_NAME, str(error)))
        return []
    if wanted is not None:
        pairs = [(name, folder) for name, folder in pairs if name == wanted]
        if not pairs:
            report.problems.append(Problem(FORMATS_NAME, f"lists no format {wanted!r}"))
    found = []
    for name, folder in pairs:
        if Path(folder).name != folder or not (report.path / folder).is_dir():
            report.problems.append(Problem(FORMATS_NAME, f"lists format {name!r} in {folder!r}, which is not a folder here"))
        else:
            found.append((name, folder))
    listed = {folder for _, folder in pairs} | {FORMATS_NAME}
    report.problems += [Problem(entry.name, "is not part of the dataset", warning=True)
                        for entry in sorted(report.path.iterdir(), key=lambda e: e.name) if entry.name not in listed]
    return found


def _verify_dataset(report: VerifyReport, root: Path, prefix: str, deep: bool, threads: int,
                    expected_format: str | None) -> None:
    problems: list[Problem] = []
    try:
        manifest = load_manifest(root, check_files=False)
    except ManifestError as error:
        path = manifest_path(root)
        problems.append(Problem(path.relative_to(root).as_posix(), str(error).removeprefix(f"{path}: ")))
        report.problems += [_prefixed(p, prefix) for p in problems]
        return
    if expected_format is not None and manifest.format != expected_format:
        problems.append(Problem(manifest.file, f"holds format {manifest.format!r}, formats.json says {expected_format!r}"))
    fmt, format_issues = format_problems(manifest)
    problems += format_issues
    size_issues = file_problems(root, manifest)
    problems += size_issues
    damaged = {p.file for p in size_issues}
    problems += _hash_problems(report, root, manifest, damaged, threads)
    index_issues = index_problems(root, manifest, contents=True)
    problems += index_issues
    report.samples += manifest.num_samples
    if fmt is not None and not format_issues and not index_issues:
        damaged |= {p.file for p in problems}
        problems += _shard_problems(report, root, manifest, fmt, damaged, deep, threads)
    if fmt is not None and fmt.check_dataset is not None and not format_issues:
        problems += [Problem(name, message) for name, message in fmt.check_dataset(root, manifest)]
    problems += _stray_files(root, manifest, fmt)
    report.problems += [_prefixed(p, prefix) for p in problems]


def _prefixed(problem: Problem, prefix: str) -> Problem:
    return Problem(prefix + problem.file, problem.message, problem.sample, problem.warning)


def _hash_problems(report: VerifyReport, root: Path, manifest: Manifest, skip: set[str], threads: int) -> list[Problem]:
    """sha256 of every file whose size is right, several files at once."""
    files = [f for shard in manifest.shards for f in shard.files.values() if f.name not in skip]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        digests = list(pool.map(lambda f: _sha256(root / f.name), files))
    report.hash_seconds += time.perf_counter() - started
    report.files_hashed += len(files)
    report.bytes_hashed += sum(f.bytes for f in files)
    return [_hash_problem(f, digest) for f, digest in zip(files, digests) if digest != f.sha256]


def _hash_problem(shard_file: ShardFile, digest: str | None) -> Problem:
    if digest is None:
        return Problem(shard_file.name, "cannot be read")
    return Problem(shard_file.name, "sha256 differs from the manifest's: the file's contents changed")


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _shard_problems(report: VerifyReport, root: Path, manifest: Manifest, fmt: Any, damaged: set[str],
                    deep: bool, threads: int) -> list[Problem]:
    """Each shard's headers through the format's reader; its stored labels against the index's;
    with ``deep``, every sample decoded. Shards whose files are already known damaged are left out."""
    import pyarrow.parquet as pq

    index_labels = pq.read_table(root / manifest.index_file, columns=["label"]).column("label").to_numpy()
    starts = np.concatenate([[0], np.cumsum([s.num_samples for s in manifest.shards])]).astype(np.int64)
    shards = [s.index for s in manifest.shards if not {f.name for f in s.files.values()} & damaged]

    def check(shard: int) -> tuple[list[Problem], int]:
        reader = fmt.reader(root, manifest)  # one per thread: readers keep open files
        try:
            stored = reader.check(shard)
        except CorruptDatasetError as error:
            return [_problem_from(error, root)], 0
        first = int(starts[shard])
        name = next(iter(manifest.shards[shard].files.values())).name
        problems = []
        if stored is not None:
            expected = index_labels[first : int(starts[shard + 1])]
            wrong = np.flatnonzero(np.asarray(stored) != expected)
            if len(wrong):
                problems.append(Problem(name, f"stored label {int(stored[wrong[0]])} differs from the index's "
                                              f"{int(expected[wrong[0]])} ({len(wrong)} samples)",
                                        sample=first + int(wrong[0])))
            problems += label_problems(name, np.asarray(stored), len(manifest.classes), first)
        decoded = 0
        if deep and not problems:
            problems, decoded = _decode_problems(reader, manifest, shard, first, name)
        return problems, decoded

    problems = []
    with ThreadPoolExecutor(threads) as pool:
        for found, decoded in pool.map(check, shards):
            problems += found
            report.samples_decoded += decoded
    return problems


def _decode_problems(reader: Any, manifest: Manifest, shard: int, first: int, name: str) -> tuple[list[Problem], int]:
    """Read every row of the shard and decode what is stored encoded (images, masks)."""
    from raydsconv.images import decode_rgb
    from raydsconv.masks import mask_array
    from raydsconv.targets import Mask

    count = manifest.shards[shard].num_samples
    spec = reader.target.spec if isinstance(reader.target, Mask) else None
    for start in range(0, count, DEEP_ROWS):
        rows = np.arange(start, min(start + DEEP_ROWS, count))
        try:
            images, fields = reader.read_rows(shard, rows)
            targets = fields["mask"] if spec is not None else [None] * len(rows)
        except Exception as error:
            return [Problem(name, f"rows {rows[0]}..{rows[-1]} cannot be read ({type(error).__name__}: {error})",
                            sample=first + int(rows[0]))], int(start)
        for row, image, target in zip(rows, images, targets):
            try:
                if isinstance(image, bytes):
                    decode_rgb(image, None).load()
                if spec is not None and isinstance(target, bytes):
                    mask_array(target, spec, max_pixels=None)
            except Exception as error:
                return [Problem(name, f"cannot be decoded ({type(error).__name__}: {error})",
                                sample=first + int(row))], int(row)
    return [], count


def _problem_from(error: CorruptDatasetError, root: Path) -> Problem:
    """A reader's one-line error ('ROOT: FILE: problem') as a Problem."""
    text = str(error).removeprefix(f"{root}: ")
    file, _, message = text.partition(": ")
    return Problem(file, message or text)


def _stray_files(root: Path, manifest: Manifest, fmt: Any) -> list[Problem]:
    """Files the dataset does not list: harmless to readers, but worth knowing (a copy gone wrong?).
    Folders holding listed files (the manifest's, ``.raydsconv-dataset/``) are looked into."""
    listed = {manifest.file, manifest.index_file}
    listed |= {f.name for shard in manifest.shards for f in shard.files.values()}
    if fmt is not None:
        listed |= set(fmt.dataset_files)
    folders = {parent.as_posix() for name in listed for parent in Path(name).parents if parent != Path(".")}
    problems = []

    def look(folder: Path, prefix: str) -> None:
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            name = prefix + entry.name
            if name == WORK_DIR:
                problems.append(Problem(name + "/", "holds a conversion's work state (an unfinished run, or an "
                                                    "--overwrite in progress)", warning=True))
            elif name in folders and entry.is_dir():
                look(entry, name + "/")
            elif name not in listed:
                problems.append(Problem(name, "is not part of the dataset", warning=True))

    look(root, "")
    return problems
