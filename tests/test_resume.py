"""Conversions that survive interruption: the shard as the unit of commit, resume by re-running the
same command (byte-identical to an uninterrupted run), one conversion per output, an --overwrite that
keeps the old dataset until the new one is complete, clean stops on SIGINT/SIGTERM, no empty datasets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_convert_memmap import tree_digest
from test_verify import to_previous_layout

from raydsconv import ConversionError, InvalidArgumentError, ManifestError, convert, open_dataset, verify
from raydsconv.conversion import make_plan
from raydsconv.errors import OutputLockedError
from raydsconv.formats.base import OutputFile
from raydsconv.layout import INDEX_FILE, LOCK_NAME, MANIFEST_FILE, RECORDS_DIR, WORK_DIR
from raydsconv.plan import ConversionPlan
from raydsconv.prepare import Preparation
from raydsconv.samples import write_image_folder
from raydsconv.shards import ShardJob, Target, load_record

CONVERT_ARGS = ("--shape", "32", "32", "--images-per-file", "2", "--num-workers", "1", "--no-progress")
PLAN_OPTIONS = dict(format="memmap", shape=(8, 8), mode="RGB", resize="stretch", images_per_file=4, batch_size=3,
                    num_workers=None, strict=False, draft=False, background=(255, 255, 255), pad_value=0,
                    max_pixels=10**8, validation="full", root_in_archive=None, format_options=None, dense=False,
                    mask_mode="L", mask_pad_value=255)


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> Path:
    """Enough full-size photos that a 1-worker conversion runs for a few seconds: time to interrupt it."""
    root = tmp_path_factory.mktemp("big") / "images"
    write_image_folder(root, num_images=120, num_classes=3, sizes=((640, 480), (480, 640)), seed=5)
    return root


def cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "raydsconv.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True, **popen)


def wait_for_records(output: Path, count: int, process: subprocess.Popen, timeout: float = 180) -> int:
    records = output / WORK_DIR / RECORDS_DIR
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = len(list(records.glob("[0-9]*.json"))) if records.is_dir() else 0
        if found >= count:
            return found
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise AssertionError(f"no {count} shard records in {timeout} s")


def kill_group(process: subprocess.Popen) -> None:
    """The driver and every Ray process it started (a lost machine, as far as the output can tell)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def clean_run(big_folder, tmp_path_factory, ray_session) -> Path:
    output = tmp_path_factory.mktemp("clean") / "ds"
    convert(big_folder, output, shape=(32, 32), images_per_file=2, progress=False)
    return output


# --- the shard, without Ray -------------------------------------------------------------------------

def test_a_shard_is_written_and_recorded_without_ray(small_folder, tmp_path):
    plan, listing = make_plan(small_folder, **PLAN_OPTIONS)
    target = Target(plan.formats[0].format, tmp_path, plan.params(plan.formats[0]))
    (tmp_path / "records").mkdir()
    job = ShardJob((target,), Preparation(plan.image, keep_bytes=False), listing.classes, strict=False,
                   batch_size=3, records=tmp_path / "records")
    start, stop = plan.shard_range(1)
    rows = {"candidate": np.arange(start, stop), "path": np.asarray(listing.paths[start:stop], dtype=object),
            "label": listing.labels[start:stop], "shard": np.full(stop - start, 1)}
    record = job.write(1, rows, listing.loader)
    assert record.kept.tolist() == list(range(start, stop)) and record.labels.tolist() == listing.labels[start:stop].tolist()
    assert load_record(tmp_path / "records" / "00001.json").to_dict() == record.to_dict()
    for shard_file in record.files["memmap"].values():  # hashed while written, equal to the file's
        assert hashlib.sha256((tmp_path / shard_file.name).read_bytes()).hexdigest() == shard_file.sha256
        assert (tmp_path / shard_file.name).stat().st_size == shard_file.bytes
    assert np.load(tmp_path / "images-00001.npy").shape == (stop - start, 8, 8, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images-00001.npy", "labels-00001.npy", "records"]


def test_a_failed_shard_leaves_no_file(small_folder, tmp_path):
    plan, listing = make_plan(small_folder, **PLAN_OPTIONS)
    target = Target(plan.formats[0].format, tmp_path, plan.params(plan.formats[0]))
    job = ShardJob((target,), Preparation(plan.image, keep_bytes=False), listing.classes, strict=True,
                   batch_size=2, records=tmp_path)
    bad = next(i for i, path in enumerate(listing.paths) if path == "odd/truncated.jpg")
    rows = {"candidate": np.arange(bad - 2, bad + 1), "path": np.asarray(listing.paths[bad - 2 : bad + 1], dtype=object),
            "label": listing.labels[bad - 2 : bad + 1], "shard": np.zeros(3, dtype=np.int64)}
    with pytest.raises(ConversionError, match="strict mode"):
        job.write(0, rows, listing.loader)
    assert list(tmp_path.iterdir()) == []


def test_output_file_hash_stays_right_when_a_header_is_patched(tmp_path):
    file = OutputFile(tmp_path / "x.bin", tmp_path)
    file.write(b"HEADER-0" + b"payload" * 1000)
    file.patch(0, b"HEADER-9")
    committed = file.commit()
    data = (tmp_path / "x.bin").read_bytes()
    assert data.startswith(b"HEADER-9") and committed.sha256 == hashlib.sha256(data).hexdigest()
    assert committed.bytes == len(data) and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_plan_round_trips_and_names_its_differences(small_folder):
    plan, _ = make_plan(small_folder, **{**PLAN_OPTIONS, "format": "memmap,parquet",
                                         "format_options": {"parquet": {"row_group_size": 8}}})
    recorded = json.loads(json.dumps(plan.to_dict()))
    assert ConversionPlan.from_dict(recorded, "plan.json") == plan
    assert plan.differences(recorded) == []
    other, _ = make_plan(small_folder, **{**PLAN_OPTIONS, "shape": (6, 6), "images_per_file": 5})
    assert other.differences(recorded) == [
        "formats.1.name: None now, 'parquet' in the output",
        "formats.1.options.row_group_size: None now, 8 in the output",
        "image.shape: [6, 6] now, [8, 8] in the output",
        "images_per_file: 5 now, 4 in the output",
    ]
    with pytest.raises(InvalidArgumentError, match="'parquet' has no option row_groups"):
        make_plan(small_folder, **{**PLAN_OPTIONS, "format": "parquet", "format_options": {"parquet": {"row_groups": 8}}})


# --- resume, idempotence, refusal -------------------------------------------------------------------

@pytest.mark.usefixtures("ray_session")
def test_same_command_on_a_finished_dataset_does_nothing(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, shape=(8, 8), images_per_file=5, progress=False)
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*")}
    again = convert(small_folder, output, shape=(8, 8), images_per_file=5, progress=False)
    assert again.already_complete and "already complete" in again.summary()
    assert again.num_samples == open_dataset(output).manifest.num_samples
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*")} == before


@pytest.mark.usefixtures("ray_session")
def test_a_dataset_of_the_previous_layout_is_done_for_its_plan_and_replaced_whole_by_another(small_folder, tmp_path):
    output = tmp_path / "ds"
    convert(small_folder, output, shape=(8, 8), images_per_file=5, progress=False)
    to_previous_layout(output)  # manifest version 2: manifest.json and index.parquet beside the shards
    before = tree_digest(output)
    assert convert(small_folder, output, shape=(8, 8), images_per_file=5, progress=False).already_complete
    assert tree_digest(output) == before
    convert(small_folder, output, shape=(6, 6), images_per_file=5, overwrite=True, progress=False)
    report = verify(output)
    assert report.ok and report.problems == []  # no manifest.json or index.parquet of the old one left
    assert open_dataset(output).manifest.format_version == 3 and open_dataset(output)[0][0].size == (6, 6)


@pytest.mark.usefixtures("ray_session")
def test_an_index_of_an_interrupted_commit_is_ours_to_clear(small_folder, tmp_path):
    output = tmp_path / "ds"
    with pytest.raises(ConversionError, match="strict mode"):
        convert(small_folder, output, shape=(8, 8), images_per_file=4, strict=True, num_workers=1, progress=False)
    (output / INDEX_FILE).parent.mkdir()
    (output / INDEX_FILE).write_bytes(b"written before the manifest, then the commit was interrupted")
    convert(small_folder, output, shape=(6, 6), images_per_file=4, overwrite=True, progress=False)  # another plan
    report = verify(output)
    assert report.ok and report.problems == []


@pytest.mark.usefixtures("ray_session")
def test_resume_keeps_good_shards_redoes_damaged_ones_and_refuses_a_changed_source(small_folder, tmp_path):
    source = shutil.copytree(small_folder, tmp_path / "src", symlinks=True)
    output, clean = tmp_path / "ds", tmp_path / "clean"
    convert(source, clean, shape=(8, 8), images_per_file=4, progress=False)
    # strict mode stops at the first bad input: an unfinished conversion of the same plan
    with pytest.raises(ConversionError, match="strict mode"):
        convert(source, output, shape=(8, 8), images_per_file=4, strict=True, num_workers=1, progress=False)
    records = sorted((output / WORK_DIR / RECORDS_DIR).glob("*.json"))
    assert records and not (output / MANIFEST_FILE).exists()
    with pytest.raises(ManifestError, match="holds an unfinished conversion; run the same convert command again"):
        open_dataset(output)
    damaged = load_record(records[0]).files["memmap"]["images"].name
    with open(output / damaged, "r+b") as file:  # same size, one byte flipped
        file.seek(200)
        byte = file.read(1)
        file.seek(200)
        file.write(bytes([byte[0] ^ 0xFF]))
    (output / ".images-00099.npy.1-0.partial").write_bytes(b"left by a killed task")
    (source / "class_0" / "new.jpg").write_bytes(b"a file added since")
    with pytest.raises(InvalidArgumentError, match="unfinished conversion of another plan.*source's files changed"):
        convert(source, output, shape=(8, 8), images_per_file=4, progress=False)
    (source / "class_0" / "new.jpg").unlink()
    report = convert(source, output, shape=(8, 8), images_per_file=4, progress=False)
    assert 0 < report.resumed_shards < report.num_shards
    assert f"resumed: {report.resumed_shards} of {report.num_shards} shards" in report.summary()
    assert tree_digest(output) == tree_digest(clean)


@pytest.mark.usefixtures("ray_session")
def test_a_conversion_that_keeps_no_sample_fails_and_writes_no_dataset(tmp_path):
    source = tmp_path / "src" / "only_class"
    source.mkdir(parents=True)
    (source / "notes.txt").write_text("not an image")
    (source / "empty.jpg").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"none of the 2 inputs became a sample.*empty file"):
        convert(tmp_path / "src", tmp_path / "ds", shape=(8, 8), progress=False)
    assert list((tmp_path / "ds").iterdir()) == []


# --- one conversion per output ----------------------------------------------------------------------

def write_lock(output: Path, **holder) -> Path:
    lock = output / WORK_DIR / LOCK_NAME
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "since": "earlier", **holder}))
    return lock


@pytest.mark.usefixtures("ray_session")
def test_a_lock_held_elsewhere_is_reported_and_a_dead_holders_is_taken_over(small_folder, tmp_path):
    output = tmp_path / "ds"
    lock = write_lock(output, host="node-17", pid=4242)
    with pytest.raises(OutputLockedError, match=rf"pid 4242 on host node-17.*delete {lock}"):
        convert(small_folder, output, shape=(8, 8), progress=False)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "process_start": ""}))
    with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()} on this host"):
        convert(small_folder, output, shape=(8, 8), progress=False)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(finished.stdout), "process_start": "1"}))
    report = convert(small_folder, output, shape=(8, 8), progress=False)  # its holder is dead: taken over
    assert report.num_samples > 0 and not (output / WORK_DIR).exists()


# --- interruptions of a real driver process ---------------------------------------------------------

@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_cleanly_and_the_same_command_resumes(big_folder, clean_run, tmp_path, signal_number):
    output = tmp_path / "ds"
    process = cli("convert", str(big_folder), str(output), *CONVERT_ARGS)
    try:
        wait_for_records(output, 3, process)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=120)
    finally:
        kill_group(process)
    assert process.returncode == 128 + signal_number, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("raydsconv: interrupted after ")
    assert stderr.strip().endswith("run the same command again to resume")
    assert not (output / MANIFEST_FILE).exists()
    again = cli("convert", str(big_folder), str(output), *CONVERT_ARGS)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "resumed: " in stdout and " of 60 shards were already written" in stdout
    assert tree_digest(output) == tree_digest(clean_run)


def test_kill_9_of_everything_then_the_same_command_ends_byte_identical(big_folder, clean_run, small_folder, tmp_path):
    output = tmp_path / "ds"
    process = cli("convert", str(big_folder), str(output), *CONVERT_ARGS)
    try:
        written = wait_for_records(output, 30, process)  # about half-way
        with pytest.raises(OutputLockedError, match=f"pid {process.pid} on this host"):  # one writer at a time
            convert(big_folder, output, shape=(32, 32), images_per_file=2, progress=False)
    finally:
        kill_group(process)
    assert written < 60 and not (output / MANIFEST_FILE).exists()
    again = cli("convert", str(big_folder), str(output), *CONVERT_ARGS)
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert tree_digest(output) == tree_digest(clean_run)
    resumed = int(stdout.split("resumed: ")[1].split()[0])
    assert written <= resumed < 60
    done = cli("convert", str(big_folder), str(output), *CONVERT_ARGS)
    stdout, _ = done.communicate(timeout=300)
    assert done.returncode == 0 and stdout.startswith("already complete")


def test_an_interrupted_or_failed_overwrite_keeps_the_old_dataset(big_folder, small_folder, clean_run, tmp_path):
    output = tmp_path / "ds"
    shutil.copytree(clean_run, output)
    old = tree_digest(output)
    process = cli("convert", str(big_folder), str(output), *CONVERT_ARGS[:-1], "--mode", "L", "--overwrite")
    try:
        wait_for_records(output, 5, process)
    finally:
        kill_group(process)
    assert {k: v for k, v in tree_digest(output).items() if not k.startswith(f"{WORK_DIR}/")} == old
    assert len(open_dataset(output)) == 120
    failed = cli("convert", str(small_folder), str(output), "--shape", "8", "8", "--strict", "--overwrite")
    _, stderr = failed.communicate(timeout=300)
    assert failed.returncode == 1 and "(strict mode)" in stderr, stderr
    assert {k: v for k, v in tree_digest(output).items() if not k.startswith(f"{WORK_DIR}/")} == old
    again = cli("convert", str(big_folder), str(output), *CONVERT_ARGS, "--mode", "L", "--overwrite")
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert open_dataset(output)[0][0].mode == "L" and not (output / WORK_DIR).exists()
