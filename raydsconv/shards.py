"""The shard: the unit of work, commit and resume. Ray-free: ``ShardJob.write`` is what one task does
for one shard, and it runs the same without Ray.

A shard is written in input order by one writer per format, each file to a temporary name, hashed
while written, renamed into place; then the shard's record (its files, sizes and sha256, the kept
samples and the skipped ones) is written atomically beside the work state. A shard exists once its
record does: a re-run keeps it if its files still check out, and redoes it otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from raydsconv.errors import ConversionError, writing
from raydsconv.formats import Format
from raydsconv.formats.base import file_sha256
from raydsconv.isolation import IsolatedPreparation
from raydsconv.layout import record_name, write_atomically
from raydsconv.lock import still_held
from raydsconv.manifest import ShardFile
from raydsconv.prepare import Preparation, prepare_batch
from raydsconv.targets import make_known

PROGRESS_NOTE_EVERY_S = 1.0


@dataclass(frozen=True)
class Target:
    """One output format of a conversion: where its shards go and its recorded parameters."""

    format: Format
    root: Path
    params: dict[str, Any]


@dataclass
class ShardRecord:
    """What one written shard holds; saved as ``.raydsconv/shards/NNNNN.json``."""

    shard: int
    files: dict[str, dict[str, ShardFile]]  # format -> role -> file
    kept: np.ndarray  # candidate numbers of the stored samples, in row order
    labels: np.ndarray  # their labels (from the listing, or from the items of an in-memory source)
    width: np.ndarray
    height: np.ndarray
    source_format: list[str]
    index_columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # format -> extra columns
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (candidate, reason)
    node: str = ""  # Ray node that wrote the shard (reported, never stored in the dataset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "files": {fmt: {role: vars(f) for role, f in roles.items()} for fmt, roles in self.files.items()},
            "kept": self.kept.tolist(),
            "labels": self.labels.tolist(),
            "width": self.width.tolist(),
            "height": self.height.tolist(),
            "source_format": self.source_format,
            "index_columns": {fmt: {name: values.tolist() for name, values in columns.items()}
                              for fmt, columns in self.index_columns.items()},
            "skipped": [list(item) for item in self.skipped],
            "node": self.node,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShardRecord":
        return cls(
            shard=int(data["shard"]),
            files={fmt: {role: ShardFile(**f) for role, f in roles.items()} for fmt, roles in data["files"].items()},
            kept=np.asarray(data["kept"], dtype=np.int64),
            labels=np.asarray(data["labels"], dtype=np.int64),
            width=np.asarray(data["width"], dtype=np.int32),
            height=np.asarray(data["height"], dtype=np.int32),
            source_format=[str(f) for f in data["source_format"]],
            index_columns={fmt: {name: np.asarray(values, dtype=np.int64) for name, values in columns.items()}
                           for fmt, columns in data["index_columns"].items()},
            skipped=[(int(candidate), str(reason)) for candidate, reason in data["skipped"]],
            node=str(data.get("node", "")),
        )

    def all_files(self) -> Iterator[ShardFile]:
        for roles in self.files.values():
            yield from roles.values()


def save_record(record: ShardRecord, records: Path) -> None:
    """Atomically: a record is there whole, or not at all."""

    def write(temporary: Path) -> None:
        with open(temporary, "w") as file:
            json.dump(record.to_dict(), file)
            file.flush()
            os.fsync(file.fileno())

    write_atomically(records / record_name(record.shard), write)


def load_record(path: Path) -> ShardRecord | None:
    """A saved record, or None when it cannot be read (it is then redone)."""
    try:
        return ShardRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def file_checks_out(root: Path, shard_file: ShardFile) -> bool:
    """The file is there with its recorded size and sha256."""
    path = root / shard_file.name
    try:
        return path.stat().st_size == shard_file.bytes and file_sha256(path) == shard_file.sha256
    except OSError:
        return False


@dataclass(frozen=True)
class ShardJob:
    """What a worker needs to write shards: picklable, shipped once per conversion."""

    targets: tuple[Target, ...]
    preparation: Preparation
    classes: list[str]
    strict: bool
    batch_size: int
    records: Path  # the folder of shard records
    lock: Path | None = None  # the output's lock, and the token of the run that holds it:
    token: str = ""  # a task of a run that lost the lock (died, or was taken over) writes nothing

    def write(self, shard: int, rows: dict[str, np.ndarray], loader: Any, *, isolated: bool = False,
              threads: int = 1) -> ShardRecord:
        """Read, prepare and write every candidate of ``rows`` (one whole shard, in order) into one
        shard of each target, then save its record. A failure removes the shard's temporary files.

        ``isolated``: prepare each input in a child process, skipping those that crash it (see
        raydsconv.isolation); slower, for a shard whose task died. ``threads``: prepare the batches
        on that many threads (a task that holds several CPUs, see ``prepared_in_threads``). The
        same bytes either way."""
        if self.lock is not None and not still_held(self.lock, self.token):
            raise ConversionError(f"{self.lock}: this conversion no longer holds the output's lock; "
                                  f"shard {shard} left to the run that does")
        count = len(rows["candidate"])
        make_known(self.preparation.target)  # writers find the kind by the name their params record
        progress = _ShardInProgress(shard, self.targets, self.classes, self.strict, expected_rows=count)
        isolation = IsolatedPreparation(loader, self.preparation) if isolated else None
        note = ProgressNote(self.records, shard)
        try:
            if isolation is not None:
                batches = (isolation.prepare(batch) for batch in in_batches(rows, self.batch_size))
            elif threads > 1:
                shared = loader if getattr(loader, "thread_safe", False) else _OneReadAtATime(loader)
                batches = prepared_in_threads(rows, self.batch_size, threads, lambda batch: self.prepare(batch, shared))
            else:
                batches = (self.prepare(batch, loader) for batch in in_batches(rows, self.batch_size))
            done = 0
            for batch in batches:
                progress.add(batch)
                done += len(batch["candidate"])
                note.write(done, len(progress.skipped))
            record = progress.finish()
        except BaseException:
            progress.abort()
            note.remove()  # a retry starts the shard from its first input
            raise
        finally:
            if isolation:
                isolation.close()
        save_record(record, self.records)
        return record

    def prepare(self, batch: dict[str, np.ndarray], loader: Any) -> dict[str, np.ndarray]:
        return prepare_batch(batch, loader=loader, preparation=self.preparation)

    def recorded(self, shard: int) -> ShardRecord | None:
        """The shard's saved record, if a task of this run has written it (at the start of a run, no
        shard still to write has one)."""
        return load_record(self.records / record_name(shard))


def prepared_in_threads(rows: dict[str, np.ndarray], batch_size: int, threads: int,
                        prepare: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """The batches of ``rows`` prepared on ``threads`` threads, yielded in order. Decoding and
    resizing release the GIL (2 threads prepare 1.8-2x as fast as one on 2 CPUs), so a task that
    holds several CPUs uses them without a second process paying the decode path's imports (torch:
    ~2 CPU-s) or prepared pixels crossing the object store. Batches are smaller than ``batch_size``
    so that a small shard spreads too; at most ``threads + 2`` are in memory."""
    size = max(1, min(batch_size, -(-len(rows["candidate"]) // (threads * 4))))
    pool = ThreadPoolExecutor(threads, thread_name_prefix="raydsconv-prepare")
    pending: deque[Future] = deque()
    try:
        for batch in in_batches(rows, size):
            if len(pending) > threads:
                yield pending.popleft().result()
            pending.append(pool.submit(prepare, batch))
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _OneReadAtATime:
    """A loader not known to be thread-safe (a user's torch Dataset), read by one thread at a time;
    preparing what it read still runs in parallel."""

    def __init__(self, loader: Any):
        self.loader, self.lock = loader, threading.Lock()

    def read(self, row: dict[str, Any]) -> Any:
        with self.lock:
            return self.loader.read(row)


def in_batches(rows: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive slices of ``size`` rows (views, not copies)."""
    for start in range(0, len(rows["candidate"]), size):
        yield {key: values[start : start + size] for key, values in rows.items()}


class ProgressNote:
    """How far a shard's task has come, for the driver's progress bar: ``NNNNN.progress`` beside the
    records, "inputs done, inputs skipped", rewritten at most every ``PROGRESS_NOTE_EVERY_S`` (a
    few bytes a second per task, never a failure). The driver stops reading it once the shard's
    record has come back; commit removes it with the records, a resume before it starts."""

    SUFFIX = ".progress"

    def __init__(self, records: Path, shard: int):
        self.path = records / f"{shard:05d}{self.SUFFIX}"
        self.last = time.monotonic()

    def write(self, done: int, skipped: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_NOTE_EVERY_S:
            return
        self.last = now
        with contextlib.suppress(OSError):
            self.path.write_text(f"{done} {skipped}")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def read_progress_notes(records: Path, finished: set[int]) -> dict[int, tuple[int, int]]:
    """shard -> (inputs done, inputs skipped) of the shards being written, leaving out ``finished``."""
    notes = {}
    try:
        entries = list(os.scandir(records))
    except OSError:
        return notes
    for entry in entries:
        stem, dot, suffix = entry.name.partition(".")
        if "." + suffix != ProgressNote.SUFFIX or not stem.isdigit() or int(stem) in finished:
            continue
        try:
            done, skipped = (int(value) for value in Path(entry.path).read_text().split())
        except (OSError, ValueError):  # gone, or caught half-written
            continue
        notes[int(stem)] = (done, skipped)
    return notes


class _ShardInProgress:
    def __init__(self, shard: int, targets: tuple[Target, ...], classes: list[str], strict: bool, expected_rows: int):
        self.shard = shard
        self.strict = strict
        self.writers: dict[str, Any] = {}
        try:
            for target in targets:
                with writing(target.root):
                    self.writers[target.format.name] = target.format.writer(
                        target.root, shard, target.params, classes, expected_rows=expected_rows)
        except BaseException:
            self.abort()  # the writers made so far leave no temporary files
            raise
        self.kept: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.width: list[np.ndarray] = []
        self.height: list[np.ndarray] = []
        self.source_format: list[str] = []
        self.skipped: list[tuple[int, str]] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        ok = batch["ok"]
        if not ok.all():
            bad = np.flatnonzero(~ok)
            if self.strict:
                first = bad[0]
                raise ConversionError(f"{batch['path'][first]}: {batch['reason'][first]} (strict mode)")
            self.skipped.extend((int(batch["candidate"][i]), str(batch["reason"][i])) for i in bad)
            batch = {key: value[ok] for key, value in batch.items()}
        if len(batch["candidate"]) == 0:
            return
        for name, writer in self.writers.items():
            with self._writing(name):
                writer.add(batch)
        self.kept.append(batch["candidate"].astype(np.int64))
        self.labels.append(batch["label"].astype(np.int64))
        self.width.append(batch["width"])
        self.height.append(batch["height"])
        self.source_format.extend(str(f) for f in batch["source_format"])

    def finish(self) -> ShardRecord:
        files = {}
        for name, writer in self.writers.items():
            with self._writing(name):
                files[name] = writer.close()

        def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

        return ShardRecord(
            shard=self.shard,
            files=files,
            kept=joined(self.kept, np.int64),
            labels=joined(self.labels, np.int64),
            width=joined(self.width, np.int32),
            height=joined(self.height, np.int32),
            source_format=self.source_format,
            index_columns={name: writer.index_columns() for name, writer in self.writers.items()},
            skipped=self.skipped,
        )

    def _writing(self, name: str):
        """Libraries that write through a path (HDF5) raise plain OSErrors (a full disk): they name
        the writer's first file. Files written through OutputFile name themselves."""
        writer = self.writers[name]
        return writing(next(iter(writer.files.values())).final if writer.files else writer.root)

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()
