"""The command line: a real end-to-end run in a subprocess, and the one-line errors (exit code 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from raydsconv.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "raydsconv.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_convert_then_info_end_to_end(small_folder, tmp_path):
    output = tmp_path / "ds"
    done = run_cli("convert", str(small_folder), str(output), "--shape", "20", "30", "--mode", "L",
                   "--resize", "pad", "--images-per-file", "10", "--num-workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "skipped 4 inputs" in done.stdout and "odd/empty.jpg: empty file" in done.stdout
    info = run_cli("info", str(output), "--json")
    assert info.returncode == 0, info.stderr
    description = json.loads(info.stdout)
    assert description["format"] == "memmap"
    assert description["params"]["shape"] == [20, 30] and description["params"]["mode"] == "L"
    assert description["classes"] == ["class_0", "class_1", "class_2", "empty_class", "odd"]
    assert description["num_samples"] == sum(s["num_samples"] for s in description["shards"])
    assert len(description["skipped"]) == 4
    first = np.load(output / description["shards"][0]["files"]["images"]["name"], mmap_mode="r")
    assert first.shape[1:] == (20, 30)
    again = run_cli("convert", str(small_folder), str(output), "--shape", "20", "30")
    assert again.returncode == 2 and "not empty" in again.stderr and "Traceback" not in again.stderr
    human = run_cli("info", str(output))
    assert human.returncode == 0 and "20x30 (height x width) L" in human.stdout


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda src, tmp: [str(tmp / "missing"), str(tmp / "o"), "--shape", "8", "8"], "does not exist"),
        (lambda src, tmp: [str(src / "class_0" / "im_1.jpg"), str(tmp / "o"), "--shape", "8", "8"], "is a file"),
        (lambda src, tmp: [str(tmp), str(tmp / "o"), "--shape", "8", "8"], "no class sub-folders"),
        (lambda src, tmp: [str(src), str(tmp / "o"), "--shape", "0", "8"], "shape"),
        (lambda src, tmp: [str(src), str(tmp / "o"), "--shape", "8", "8", "--mode", "RGBX"], "mode"),
        (lambda src, tmp: [str(src), str(tmp / "o"), "--shape", "8", "8", "--images-per-file", "0"], "--images-per-file"),
        (lambda src, tmp: [str(src), str(src / "out"), "--shape", "8", "8"], "inside the source"),
        (lambda src, tmp: [str(src), str(tmp / "o")], "shape"),
    ],
)
def test_wrong_arguments_give_one_line_and_exit_2(small_folder, tmp_path, capsys, make_args, message):
    (tmp_path / "src_empty").mkdir()
    code = main(["convert", *make_args(small_folder, tmp_path / "src_empty")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("raydsconv: error:") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["convert", "src"], ["convert", "a", "b", "--shape", "x", "8"], ["frobnicate"]])
def test_usage_mistakes_give_one_line_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.startswith("raydsconv") and err.count("\n") == 1


def test_demo_is_the_readme_main_command_and_works(tmp_path):
    done = run_cli("demo", "--workdir", str(tmp_path), "--num-images", "24")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "memmap: read 39 samples back through a DataLoader with 2 workers" in done.stdout
    assert "parquet: read 39 samples back" in done.stdout
    assert "odd/truncated.jpg" in done.stdout


@pytest.mark.usefixtures("ray_session")
def test_importing_and_reading_never_import_ray(tmp_path, small_folder):
    from raydsconv import convert

    convert(small_folder, tmp_path / "ds", shape=(8, 8), progress=False)
    code = (
        "import sys, raydsconv\n"
        f"ds = raydsconv.open_dataset({str(tmp_path / 'ds')!r})\n"
        "image, label = ds[0]\n"
        "assert 'ray' not in sys.modules, 'reading imported ray'\n"
        "print(len(ds))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_several_formats_in_one_run(small_folder, tmp_path):
    output = tmp_path / "ds"
    done = run_cli("convert", str(small_folder), str(output), "--format", "memmap,tar", "--shape", "8", "8",
                   "--num-workers", "1", "--no-progress")
    assert done.returncode == 0, done.stderr
    description = json.loads(run_cli("info", str(output), "--json").stdout)
    assert sorted(description["formats"]) == ["memmap", "tar"]
    assert description["formats"]["memmap"]["num_samples"] == description["formats"]["tar"]["num_samples"]
    human = run_cli("info", str(output)).stdout
    assert "memmap dataset" in human and "tar dataset" in human


def test_info_on_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


@pytest.mark.usefixtures("ray_session")
def test_bench_prints_a_table_a_recommendation_and_a_plot(small_folder, tmp_path):
    from raydsconv import convert

    convert(small_folder, tmp_path / "ds", shape=(8, 8), images_per_file=10, progress=False)
    done = run_cli("bench", str(tmp_path / "ds"), "--samples", "30", "--batch-sizes", "4", "--max-workers", "1",
                   "--json", "--plot", str(tmp_path / "curve.png"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    measured = {(m["output"], m["num_workers"], m["epoch"]) for m in result["measurements"]}
    assert measured == {(o, w, e) for o in ("tensor", "pil") for w in (0, 1) for e in ("cold", "warm")}
    assert all(m["images_per_second"] > 0 for m in result["measurements"])
    assert result["recommendation"].startswith("use output=")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
