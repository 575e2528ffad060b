"""A full disk, a read-only output and an unreachable Ray cluster: one line naming the file (or the
address) and what to do, no temporary file left behind, and the same command resumes once the
space is there, ending byte-identical to a clean run. In every format.

The disk tests need root: they mount a small tmpfs and read-only bind mounts (skipped otherwise)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_convert_memmap import tree_digest

import raydsconv.cluster
import raydsconv.conversion
from raydsconv import convert
from raydsconv.cli import main
from raydsconv.cluster import CONNECT_TIMEOUT_S, GCS_ATTEMPTS
from raydsconv.errors import OutputWriteError
from raydsconv.formats.hdf5 import write_virtual_dataset
from raydsconv.layout import INDEX_FILE, MANIFEST_FILE, RECORDS_DIR, WORK_DIR
from raydsconv.manifest import load_manifest
from raydsconv.samples import write_image_folder

FORMATS = ["memmap", "hdf5", "parquet", "ipc", "tar"]
PAGE = 4096  # tmpfs allocates whole pages
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs and read-only bind mounts")


def options(fmt: str) -> dict:
    return {"format": fmt, "images_per_file": 3, **({"shape": (32, 32)} if fmt in ("memmap", "hdf5") else {})}


def cli_args(fmt: str) -> list[str]:
    shape = ["--shape", "32", "32"] if fmt in ("memmap", "hdf5") else []
    return ["--format", fmt, "--images-per-file", "3", *shape, "--num-workers", "1", "--no-progress"]


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", **env}
    environment.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "raydsconv.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=timeout)


def one_line(stderr: str) -> str:
    """The error is a single line: no traceback, nothing of Ray's."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydsconv: error: "), stderr
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    """Temporary files: shards', records', the index's, the manifest's."""
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(".partial") or p.name.startswith(".manifest-"))


def records(output: Path) -> int:
    return len(list((output / WORK_DIR / RECORDS_DIR).glob("[0-9]*.json")))


def half_full_size(reference: Path) -> int:
    """A tmpfs size that holds the work state (a record per shard, plan, lock) and about half of
    the shard files of ``reference``: a conversion fills it while writing its shards."""
    shards = load_manifest(reference).shards
    shard_pages = sum(-(-f.bytes // PAGE) for shard in shards for f in shard.files.values())
    return (len(shards) + 2 + shard_pages // 2) * PAGE


def fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    with open(path, "wb", buffering=0) as file:
        for chunk in (bytes(1 << 20), bytes(PAGE)):
            try:
                while True:
                    file.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("disk-src") / "images"
    write_image_folder(root, num_images=24, sizes=((96, 72), (72, 96)), seed=3)
    return root


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory, ray_session):
    """``clean(fmt)``: an uninterrupted conversion on a roomy disk, made on first use."""
    made: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt not in made:
            made[fmt] = tmp_path_factory.mktemp(f"clean-{fmt}") / "ds"
            convert(source, made[fmt], progress=False, **options(fmt))
        return made[fmt]

    return get


@pytest.fixture
def mount():
    """``mount(*arguments, at=DIR)`` for this test only; unmounted at the end."""
    mounted: list[Path] = []

    def mount(*arguments: str, at: Path, remount: bool = False) -> Path:
        at.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", *arguments, str(at)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount here: {done.stderr.strip()}")
        if not remount:
            mounted.append(at)
        return at

    yield mount
    for at in reversed(mounted):
        subprocess.run(["umount", "-l", str(at)], check=False)


@pytest.fixture
def read_only(mount, tmp_path) -> Path:
    """An empty folder on a read-only bind mount."""
    (tmp_path / "rw").mkdir()
    folder = mount("--bind", str(tmp_path / "rw"), at=tmp_path / "ro")
    return mount("-o", "remount,bind,ro", at=folder, remount=True)


# --- a full disk while the shards are written --------------------------------------------------------

@needs_root
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_while_writing_shards_is_one_line_and_the_same_command_resumes(fmt, source, clean, mount,
                                                                                   tmp_path):
    reference = clean(fmt)
    disk = mount("-t", "tmpfs", "-o", f"size={half_full_size(reference)}", "tmpfs", at=tmp_path / "disk")
    output = disk / "ds"
    command = ("convert", str(source), str(output), *cli_args(fmt))
    failed = run_cli(*command)
    line = one_line(failed.stderr)
    assert failed.returncode == 2
    assert line.startswith(f"raydsconv: error: {output}/") and ": no space left on device; free some space" in line
    assert line.endswith("run the same command again to resume")
    assert leftovers(disk) == [] and not (output / MANIFEST_FILE).exists()
    kept = records(output)
    assert kept >= 1  # the shards written before the disk filled stay

    mount("-o", "remount,size=64m", at=disk, remount=True)
    again = run_cli(*command)
    assert again.returncode == 0, again.stderr
    assert f"resumed: {kept} of {len(load_manifest(reference).shards)} shards" in again.stdout
    assert tree_digest(output) == tree_digest(reference)


@needs_root
@pytest.mark.parametrize("fmt", FORMATS)
def test_convert_raises_an_oserror_of_ours_when_the_disk_fills(fmt, source, clean, mount, tmp_path):
    reference = clean(fmt)
    disk = mount("-t", "tmpfs", "-o", f"size={half_full_size(reference)}", "tmpfs", at=tmp_path / "disk")
    output = disk / "ds"
    with pytest.raises(OutputWriteError) as caught:  # not a RayTaskError: the task's error, as it was
        convert(source, output, progress=False, num_workers=1, **options(fmt))
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert error.filename.startswith(f"{output}/") and "\n" not in str(error)
    assert str(error).startswith(f"{error.filename}: no space left on device; free some space")
    assert leftovers(disk) == []
    kept = records(output)

    mount("-o", "remount,size=64m", at=disk, remount=True)
    report = convert(source, output, progress=False, **options(fmt))
    assert report.resumed_shards == kept >= 1
    assert tree_digest(output) == tree_digest(reference)


# --- a full disk at commit ---------------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_full_disk_at_commit_leaves_every_shard_and_no_temporary_file(fmt, source, clean, mount, tmp_path,
                                                                        monkeypatch, capsys):
    reference = clean(fmt)
    num_shards = len(load_manifest(reference).shards)
    disk = mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", at=tmp_path / "disk")
    output, filler = disk / "ds", disk / "filler"
    real_commit = raydsconv.conversion.commit

    def commit_on_a_full_disk(*args, **kwargs):  # every shard is written: now the disk fills up
        fill(filler)
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(raydsconv.conversion, "commit", commit_on_a_full_disk)
    with pytest.raises(OutputWriteError) as caught:
        convert(source, output, progress=False, **options(fmt))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(output / INDEX_FILE)
    assert str(caught.value) == (f"{output / INDEX_FILE}: no space left on device; free some space there (or "
                                 "choose an output with more room), then run the same command again to resume")
    assert leftovers(disk) == [] and not (output / MANIFEST_FILE).exists()
    assert records(output) == num_shards

    filler.unlink()  # the same again from the CLI: no shard to write, commit fails the same way
    capsys.readouterr()
    assert main(["convert", str(source), str(output), *cli_args(fmt)]) == 2
    assert one_line(capsys.readouterr().err) == f"raydsconv: error: {caught.value}"
    assert leftovers(disk) == [] and records(output) == num_shards

    filler.unlink()
    monkeypatch.setattr(raydsconv.conversion, "commit", real_commit)
    assert main(["convert", str(source), str(output), *cli_args(fmt)]) == 0
    assert f"resumed: {num_shards} of {num_shards} shards" in capsys.readouterr().out
    assert tree_digest(output) == tree_digest(reference)


@needs_root
def test_the_manifest_and_hdf5s_dataset_file_on_a_full_disk_leave_nothing_behind(clean, mount, tmp_path):
    """Written last at commit: a full disk then leaves no temporary file (nor a crashed libhdf5)."""
    manifest = load_manifest(clean("hdf5"))
    disk = mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", at=tmp_path / "disk")
    fill(disk / "filler")
    with pytest.raises(OutputWriteError) as caught:
        manifest.write(disk)
    assert caught.value.filename == str(disk / MANIFEST_FILE) and caught.value.errno == errno.ENOSPC
    with pytest.raises(OutputWriteError) as caught:
        write_virtual_dataset(disk, manifest.shards, manifest.params)
    assert caught.value.filename == str(disk / "dataset.h5") and caught.value.errno == errno.ENOSPC
    assert [p.name for p in disk.iterdir()] == ["filler"]


# --- a read-only output ------------------------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_read_only_output_or_parent_fails_before_ray_starts(fmt, source, read_only, tmp_path, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raydsconv.cluster, "ensure_ray", no_ray)
    for output in (read_only, read_only / "new" / "ds"):
        with pytest.raises(OutputWriteError) as caught:
            convert(source, output, progress=False, **options(fmt))
        assert caught.value.errno == errno.EROFS
        assert str(caught.value) == f"{read_only}: read-only file system; choose a writable output"

    ray_dir = tmp_path / "ray-tmp"
    failed = run_cli("convert", str(source), str(read_only), *cli_args(fmt), RAY_TMPDIR=str(ray_dir))
    assert failed.returncode == 2
    assert one_line(failed.stderr) == f"raydsconv: error: {read_only}: read-only file system; choose a writable output"
    assert not ray_dir.exists()  # Ray never started
    assert list(read_only.iterdir()) == []


# --- a Ray address where nothing answers -------------------------------------------------------------

def test_an_unreachable_ray_address_fails_within_seconds_naming_it(source, tmp_path):
    started = time.monotonic()
    failed = run_cli("convert", str(source), str(tmp_path / "ds"), "--address", "127.0.0.1:1", "--shape", "8", "8",
                     timeout=120)
    seconds = time.monotonic() - started
    line = one_line(failed.stderr)
    assert failed.returncode == 2 and seconds < CONNECT_TIMEOUT_S + 30  # start-up included; Ray alone: ~10 min
    assert line.startswith("raydsconv: error: no Ray cluster answers at 127.0.0.1:1")
    assert "connection refused" in line and "ray status --address 127.0.0.1:1" in line
    assert not (tmp_path / "ds").exists()


def test_an_address_where_something_else_listens_fails_within_a_minute(source, tmp_path):
    """Not a GCS (e.g. the dashboard's port): Ray tries GCS_ATTEMPTS times, ~36 s each (Ray logs a
    few lines of its own meanwhile), not 20 times."""
    with socket.create_server(("", 0)) as listener:  # accepts connections (on every interface), never answers
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        failed = run_cli("convert", str(source), str(tmp_path / "ds"), "--address", address, "--shape", "8", "8",
                         timeout=300)
    seconds = time.monotonic() - started
    assert failed.returncode == 2 and seconds < GCS_ATTEMPTS * 40 + 30, (seconds, failed.stderr)
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"raydsconv: error: cannot join a Ray cluster at {address}: ") and "Traceback" not in failed.stderr
    assert "not the dashboard's (8265)" in last
