"""An input that kills the process preparing it (a decoder's segfault on a malicious file, an
out-of-memory kill) never makes a conversion loop: the shard's task is retried a bounded number of
times, then the shard is written with each input in a child process, the culprit is skipped with the
signal as its reason, or a strict conversion fails naming it."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from test_convert_memmap import tree_digest
from test_resume import PLAN_OPTIONS
from torch.utils.data import Dataset

from raydsconv import ConversionError, convert, open_dataset
from raydsconv.conversion import make_plan
from raydsconv.formats import FORMATS, Format, register
from raydsconv.formats.base import ShardWriter
from raydsconv.layout import MANIFEST_FILE
from raydsconv.prepare import Preparation
from raydsconv.shards import ShardJob, Target

CRASHING = 17
REASON = "crashed the worker (signal 11)"
TIME_LIMIT = 240  # seconds: generous for a shared 2-core machine; without a bound it ran forever


class CrashingDataset(Dataset):
    """(12, 16, 3) arrays with labels 0..2; reading an item of ``crashing`` kills the reading process
    with SIGSEGV, as a decoder bug would. Never on the driver (where it would kill pytest): a
    conversion reads no item there."""

    classes = ["a", "b", "c"]

    def __init__(self, count: int = 35, crashing: tuple[int, ...] = (CRASHING,)):
        self.count = count
        self.crashing = crashing
        self.driver = os.getpid()

    def __len__(self) -> int:
        return self.count

    @staticmethod
    def image(index: int) -> np.ndarray:
        return np.random.default_rng(index).integers(0, 256, (12, 16, 3), dtype=np.uint8)

    def __getitem__(self, index: int):
        if index in self.crashing:
            if os.getpid() == self.driver:
                raise RuntimeError(f"item {index} was read in the driver process")
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.image(index), index % 3


def convert_crashing(output, **options):
    started = time.monotonic()
    options = {"images_per_file": 10, **options}
    report = convert(CrashingDataset(), output, format="memmap,parquet", shape=(12, 16), batch_size=4,
                     progress=False, **options)
    return report, time.monotonic() - started


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, ray_session):
    output = tmp_path_factory.mktemp("crash") / "ds"
    report, seconds = convert_crashing(output)
    print(f"conversion with a crashing item: {seconds:.1f} s")
    return report, output, seconds


def test_the_crashing_item_is_skipped_with_its_signal_in_bounded_time(crashed):
    report, output, seconds = crashed
    assert seconds < TIME_LIMIT
    assert [(s.path, s.reason) for s in report.skipped] == [(str(CRASHING), REASON)]
    assert report.num_samples == 34 and report.num_shards == 4
    for fmt in ("memmap", "parquet"):
        assert report.manifests[fmt].skipped == [{"path": str(CRASHING), "reason": REASON}]
        dataset = open_dataset(output, format=fmt, output="numpy")
        assert len(dataset) == 34
        for row in range(len(dataset)):
            index = int(dataset.source_path(row))
            image, label = dataset[row]
            assert index != CRASHING and label == index % 3
            assert np.array_equal(image, CrashingDataset.image(index))  # parquet: lossless PNG


def test_a_rerun_gives_the_same_bytes(crashed, tmp_path):
    _, output, _ = crashed
    report, seconds = convert_crashing(tmp_path / "again")
    print(f"second conversion with a crashing item: {seconds:.1f} s")
    assert seconds < TIME_LIMIT and len(report.skipped) == 1
    assert tree_digest(tmp_path / "again") == tree_digest(output)


@pytest.mark.usefixtures("ray_session")
def test_a_crash_in_a_task_of_several_shards_keeps_the_shards_written_before_it(tmp_path):
    """35 one-sample shards on 2 CPUs: 8 tasks of 4-5 shards. The task with the crashing item has
    written (and recorded) the shards before it when its worker dies: those are kept, and only the
    crashing shard and the task's later ones are written again, in isolation."""
    report, seconds = convert_crashing(tmp_path / "ones", images_per_file=1)
    assert seconds < TIME_LIMIT
    assert [(s.path, s.reason) for s in report.skipped] == [(str(CRASHING), REASON)]
    assert report.num_samples == 34 and report.num_shards == 35
    dataset = open_dataset(tmp_path / "ones", format="memmap", output="numpy")
    assert [int(dataset.source_path(row)) for row in range(len(dataset))] == [i for i in range(35) if i != CRASHING]
    assert all(np.array_equal(dataset[row][0], CrashingDataset.image(int(dataset.source_path(row))))
               for row in range(len(dataset)))


@pytest.mark.usefixtures("ray_session")
def test_strict_mode_fails_naming_the_item_in_bounded_time(tmp_path):
    started = time.monotonic()
    with pytest.raises(ConversionError) as failed:
        convert_crashing(tmp_path / "strict", strict=True)
    seconds = time.monotonic() - started
    print(f"strict conversion with a crashing item failed after {seconds:.1f} s")
    message = str(failed.value)
    assert seconds < TIME_LIMIT
    assert "\n" not in message and message.startswith(f"{CRASHING}: ") and "signal 11" in message, message
    assert not (tmp_path / "strict" / MANIFEST_FILE).exists()


# --- isolation itself, without Ray -------------------------------------------------------------------

def shard_job(source, tmp_path, *, fmt: str = "memmap", strict: bool = False):
    plan, listing = make_plan(source, **{**PLAN_OPTIONS, "format": fmt, "shape": (12, 16), "strict": strict})
    target = Target(plan.formats[0].format, tmp_path, plan.params(plan.formats[0]))
    (tmp_path / "records").mkdir()
    preparation = Preparation(plan.image if fmt == "memmap" else None, keep_bytes=fmt != "memmap",
                              num_classes=len(listing.classes) if listing.labels_from_items else None)
    job = ShardJob((target,), preparation, listing.classes, strict=strict, batch_size=3, records=tmp_path / "records")
    rows = {"candidate": np.arange(len(listing)), "path": np.asarray(listing.paths, dtype=object),
            "label": listing.labels, "shard": np.zeros(len(listing), dtype=np.int64)}
    return job, rows, listing.loader


@pytest.mark.parametrize("fmt", ["memmap", "tar"])
def test_isolation_writes_the_same_bytes_as_the_plain_path(small_folder, tmp_path, fmt):
    digests = []
    for isolated in (False, True):
        folder = tmp_path / str(isolated)
        folder.mkdir()
        job, rows, loader = shard_job(small_folder, folder, fmt=fmt)
        record = job.write(0, rows, loader, isolated=isolated)
        assert record.skipped  # the folder's odd cases, skipped the same way in both
        digests.append((record.to_dict(), tree_digest(folder)))
    assert digests[0] == digests[1]


def test_isolation_skips_every_crashing_item_without_ray(tmp_path):
    job, rows, loader = shard_job(CrashingDataset(count=8, crashing=(0, 5, 7)), tmp_path)
    record = job.write(0, rows, loader, isolated=True)
    assert record.kept.tolist() == [1, 2, 3, 4, 6]
    assert record.skipped == [(0, REASON), (5, REASON), (7, REASON)]
    assert np.array_equal(np.load(tmp_path / "images-00000.npy"), np.stack([CrashingDataset.image(i) for i in record.kept]))


# --- an error is not a crash ---------------------------------------------------------------------------

class BuggyWriter(ShardWriter):
    """A writer with a bug: fails on the first rows it is given."""

    def add(self, batch: dict[str, np.ndarray]) -> None:
        raise LookupError("a bug in a writer (test)")


@pytest.fixture
def buggy_format():
    fmt = register(Format(name="buggy", kind="flexible", writer=BuggyWriter, reader=FORMATS["tar"].reader,
                          file_roles=("samples",), file_pattern=r"samples-\d+\.never"))
    yield fmt.name
    FORMATS.pop(fmt.name, None)


@pytest.mark.usefixtures("ray_session")
def test_an_error_in_a_task_fails_at_once_as_itself(small_folder, tmp_path, buggy_format):
    """Not retried, not written again in isolation: raised on the driver with its own type."""
    started = time.monotonic()
    with pytest.raises(LookupError, match="a bug in a writer") as failed:
        convert(small_folder, tmp_path / "ds", format=buggy_format, images_per_file=5, progress=False)
    assert "in add" in str(failed.value.__cause__)  # the worker's traceback
    assert time.monotonic() - started < TIME_LIMIT
