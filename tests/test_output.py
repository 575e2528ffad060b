"""What a person reads: our phase lines, one progress bar counting images and the summary; Ray's own
log lines in a file the summary names (on the terminal only with --verbose); errors in the CLI's words."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from raydsconv import progress as progress_module
from raydsconv.cli import main
from raydsconv.progress import Progress
from raydsconv.shards import ProgressNote, read_progress_notes

# What Ray writes when it is let through: its log format, its messages, its workers' prefixes.
RAY_LINE = re.compile(r"\b(INFO|WARNING|DEBUG)\b|streaming_executor|Full logs|ray[-_.]data|DataContext|"
                      r"Token authentication|Progress bars|Active & requested|\(pid=|\(raylet|Dataset dataset_")


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def run_in_terminal(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """The CLI with stderr on a terminal (120 columns) and stdout on a pipe: (exit code, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "raydsconv.cli", *args], stdout=subprocess.PIPE,
                               stderr=slave, env=cli_env())
    os.close(slave)
    err, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other end is closed
                    break
                if not chunk:
                    break
                err += chunk
            elif process.poll() is not None:
                break
        out = process.stdout.read()
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.returncode, out.decode(), err.decode()


def test_a_cli_conversion_in_a_terminal_shows_phases_one_bar_of_images_and_the_summary(small_folder, tmp_path):
    code, out, err = run_in_terminal("convert", str(small_folder), str(tmp_path / "ds"), "--shape", "16", "16",
                                     "--images-per-file", "5", "--num-workers", "2")
    assert code == 0, err
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip()]
    assert not [line for line in lines if RAY_LINE.search(line)], err
    assert lines[0] == "listed 37 inputs in 5 classes"
    assert lines[1] == "starting Ray (2 CPUs)…"
    bars = lines[2:]
    assert bars and all(line.startswith("converting: ") for line in bars), err
    assert re.match(r"converting: 100%\|.*\| 37/37 \[.* images/s, 4 skipped\]", bars[-1].strip()), bars[-1]
    summary = out.strip().splitlines()
    assert summary[0] == f"converted 33 of 37 inputs into 8 shards of memmap at {tmp_path / 'ds'}"
    log = Path(summary[-1].removeprefix("Ray's log: "))
    assert summary[-1].startswith("Ray's log: /") and log.name == "raydsconv.log"
    assert "execution finished" in log.read_text()  # Ray Data's lines went there


def test_verbose_lets_ray_through_and_a_log_gets_plain_lines(small_folder, tmp_path):
    done = subprocess.run([sys.executable, "-m", "raydsconv.cli", "convert", str(small_folder), str(tmp_path / "ds"),
                           "--format", "tar", "--images-per-file", "100", "--verbose"],
                          capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "listed 37 inputs in 5 classes\nstarting Ray (" in done.stderr
    assert "converting: 0 of 37 images\n" in done.stderr  # no terminal: a plain line, then one every 30 s
    assert "execution finished" in done.stderr  # Ray Data's INFO lines
    assert "into 1 shard of tar" in done.stdout and "Ray's log" not in done.stdout


def test_ray_that_cannot_start_is_one_line_naming_its_logs(small_folder, tmp_path):
    # Ray refuses an object store this small (a ValueError from ray.init, before any process starts)
    done = subprocess.run([sys.executable, "-m", "raydsconv.cli", "convert", str(small_folder), str(tmp_path / "ds"),
                           "--shape", "8", "8"], capture_output=True, text=True, timeout=120,
                          env=cli_env(RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION="0.0000001"))
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("raydsconv: error: Ray did not start on this machine: Attempting to cap object store")
    assert "session_latest/logs" in error and "Traceback" not in done.stderr
    left = sorted(str(p.relative_to(tmp_path / "ds")) for p in (tmp_path / "ds").rglob("*"))
    assert left == [".raydsconv", ".raydsconv/plan.json", ".raydsconv/shards"]  # the plan, to resume; no lock held


@pytest.mark.usefixtures("ray_session")
def test_the_python_api_prints_phases_with_progress_and_nothing_without(small_folder, tmp_path, capfd):
    from raydsconv import convert

    report = convert(small_folder, tmp_path / "quiet", format="ipc", images_per_file=100, progress=False)
    assert capfd.readouterr() == ("", "")
    assert "into 1 shard of ipc" in report.summary()
    assert report.ray_log is not None and report.summary().endswith(f"Ray's log: {report.ray_log}")

    convert(small_folder, tmp_path / "shown", format="ipc", images_per_file=10)
    out, err = capfd.readouterr()
    assert out == "" and err == "listed 37 inputs in 5 classes\nconverting: 0 of 37 images\n"  # Ray was running


@pytest.mark.usefixtures("ray_session")
def test_shape_with_only_flexible_formats_is_refused_by_the_cli_and_warned_by_the_api(small_folder, tmp_path,
                                                                                     capsys, caplog):
    from raydsconv import convert

    assert main(["convert", str(small_folder), str(tmp_path / "o"), "--format", "parquet,tar", "--shape", "8", "8"]) == 2
    err = capsys.readouterr().err
    assert err == ("raydsconv: error: --shape is for the formats that store resized pixels (memmap and hdf5); "
                   "--format parquet,tar keeps the original images: leave out --shape\n")
    with caplog.at_level(logging.WARNING, logger="raydsconv"):
        convert(small_folder, tmp_path / "p", format="parquet", shape=(8, 8), progress=False)
    assert "shape=(8, 8) is ignored: parquet keeps the original images" in caplog.text


@pytest.mark.parametrize("argv, message", [
    ([], "format 'memmap' stores one image size: give --shape H W"),
    (["--shape", "0", "8"], "--shape H W must be two positive integers, got 0 8"),
    (["--shape", "8", "8", "--images-per-file", "0"], "--images-per-file must be a positive integer, got 0"),
    (["--shape", "8", "8", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--shape", "8", "8", "--num-workers", "-1"], "--num-workers must be a non-negative integer, got -1"),
    (["--format", "tar", "--hdf5-compression", "gzip"],
     "--hdf5-compression is for --format hdf5, which this conversion does not write"),
])
def test_cli_errors_name_the_flags(small_folder, tmp_path, capsys, argv, message):
    assert main(["convert", str(small_folder), str(tmp_path / "o"), *argv]) == 2
    assert capsys.readouterr().err == f"raydsconv: error: {message}\n"


@pytest.mark.usefixtures("ray_session")
def test_bench_on_several_formats_asks_for_the_flag(small_folder, tmp_path, capsys):
    from raydsconv import convert

    convert(small_folder, tmp_path / "two", format="memmap,tar", shape=(8, 8), images_per_file=50, progress=False)
    assert main(["bench", str(tmp_path / "two")]) == 2
    assert capsys.readouterr().err == (f"raydsconv: error: {tmp_path / 'two'} holds several formats (memmap, tar); "
                                       "pass --format NAME\n")


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and re.fullmatch(r"raydsconv \d+\.\d+\.\d+\n", capsys.readouterr().out)


@pytest.mark.usefixtures("ray_session")
def test_bench_leaves_out_batch_sizes_larger_than_what_it_reads(small_folder, tmp_path, capsys, caplog):
    from raydsconv import convert

    convert(small_folder, tmp_path / "ds", shape=(8, 8), images_per_file=10, progress=False)
    assert main(["bench", str(tmp_path / "ds"), "--batch-sizes", "4", "64", "--samples", "30", "--max-workers", "0"]) == 0
    out = capsys.readouterr().out
    rows = out.splitlines()[1:out.splitlines().index("")]
    assert rows and all(row.split()[1] == "4" for row in rows) and "nan" not in out, out
    assert "batch size 64 not measured: 30 samples make a single batch" in caplog.text  # on stderr in the CLI


def test_demo_without_a_workdir_removes_its_files_and_says_so(tmp_path):
    done = subprocess.run([sys.executable, "-m", "raydsconv.cli", "demo", "--num-images", "8"], capture_output=True,
                          text=True, env=cli_env(TMPDIR=str(tmp_path), RAY_TMPDIR="/tmp"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    removed = re.search(r"removed (\S+) \((\d+) MB\); give --workdir DIR to keep the files", done.stdout)
    assert removed and Path(removed[1]).parent == tmp_path and not Path(removed[1]).exists(), done.stdout
    assert not [line for line in done.stderr.splitlines() if RAY_LINE.search(line)], done.stderr


def test_the_data_context_comes_without_ray_deprecation_warnings():
    """Ray 2.60 warns about three settings nobody set whenever it makes a DataContext."""
    code = "from raydsconv.cluster import data_context\ndata_context()\n"
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], capture_output=True,
                          text=True, env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.usefixtures("ray_session")
def test_flexible_formats_decode_to_arrays_torch_takes_without_a_warning(small_folder, tmp_path):
    """torch warns about a tensor of a read-only array, and numpy's view of a PIL image is one."""
    from raydsconv import convert

    convert(small_folder, tmp_path / "ds", format="parquet", images_per_file=100, progress=False)
    code = (
        "import raydsconv, torch\n"
        f"ds = raydsconv.open_dataset({str(tmp_path / 'ds')!r}, output='tensor')\n"
        "image, label = ds[0]\n"
        "array, label = raydsconv.open_dataset(ds.dataset_path, output='numpy')[1]\n"
        "assert array.flags.writeable\n"
        "torch.utils.data.default_collate([array, array])\n"
    )
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          env=cli_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# --- the bar itself, fed by hand --------------------------------------------------------------------

def test_the_plain_bar_counts_finished_shards_and_the_notes_of_running_ones(monkeypatch):
    monkeypatch.setattr(progress_module, "PLAIN_EVERY_S", 0.0)
    stream = io.StringIO()
    notes = {2: (40, 1), 3: (10, 0)}
    with Progress(stream=stream).images(300, done=100, skipped=2, poll=lambda finished: notes) as bar:
        bar.partial = notes  # what the poll thread sets
        bar.finished(2, 100, 3)  # shard 2's record supersedes its note
        assert bar.counts() == (100 + 100 + 10, 2 + 3 + 0)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "converting: 100 of 300 images"
    assert re.fullmatch(r"converting: 210 of 300 images \(70%\), [\d,]+ images/s, [\d:]+ left, 5 skipped", lines[1])


def test_progress_false_writes_nothing():
    stream = io.StringIO()
    progress = Progress(enabled=False, stream=stream)
    progress.say("starting Ray")
    with progress.images(10, poll=lambda finished: {0: (5, 0)}) as bar:
        bar.finished(0, 10, 1)
    assert stream.getvalue() == ""


def test_progress_notes_are_throttled_and_read_back(tmp_path, monkeypatch):
    import raydsconv.shards

    note = ProgressNote(tmp_path, 7)
    note.write(32, 0)  # less than PROGRESS_NOTE_EVERY_S after the task began: not written
    assert read_progress_notes(tmp_path, set()) == {}
    monkeypatch.setattr(raydsconv.shards, "PROGRESS_NOTE_EVERY_S", 0.0)
    note.write(64, 1)
    (tmp_path / "00007.json").write_text("{}")  # a record: not a note
    (tmp_path / "00008.progress").write_text("3")  # caught half-written
    assert read_progress_notes(tmp_path, set()) == {7: (64, 1)}
    assert read_progress_notes(tmp_path, {7}) == {}
    note.remove()
    assert not (tmp_path / "00007.progress").exists()


def test_a_finished_shard_is_counted_without_summing_the_others_again(monkeypatch):
    """Counting is linear in the shards: each finished shard adds to running sums (the bar summed
    every finished shard per shard, quadratic: 0.26 s at 1,282 shards, ~26 s at 12,820)."""
    stream = io.StringIO()
    with Progress(stream=stream).images(10_000 * 3, poll=None) as bar:
        for shard in range(10_000):
            bar.finished(shard, 3, shard % 2)
        bar.finished(17, 3, 0)  # the same shard again (written once more): replaces its count
        assert bar.counts() == (30_000, 4_999)
        monkeypatch.setattr(bar, "done_shards", _NoIteration(bar.done_shards))
        bar.partial = {10_000: (2, 1)}
        assert bar.counts() == (30_000, 5_000)


class _NoIteration(dict):
    def __iter__(self):
        raise AssertionError("counts() iterated over every finished shard")

    def items(self):
        raise AssertionError("counts() iterated over every finished shard")
