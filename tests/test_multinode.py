"""The pipeline runs unchanged on a multi-node Ray cluster and writes the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_convert_memmap import tree_digest

from raydsconv import convert

HERE = Path(__file__).parent


def result_line(stdout: str) -> dict:
    """The script's JSON result: its last line that is one (a removed node's raylet may log to stdout after it)."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith("{")))


@pytest.mark.usefixtures("ray_session")
def test_two_node_cluster_output_is_byte_identical_to_embedded(small_folder, tmp_path):
    convert(small_folder, tmp_path / "embedded", shape=(16, 16), images_per_file=2, progress=False)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(HERE.parent)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "multinode_convert.py"), str(small_folder),
                           str(tmp_path / "cluster")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_line(done.stdout)
    assert result["cluster_nodes"] == 2
    assert result["nodes"] == 2, "both nodes should have written shards"
    assert tree_digest(tmp_path / "cluster") == tree_digest(tmp_path / "embedded")


@pytest.mark.usefixtures("ray_session")
def test_one_cpu_embedded_output_is_byte_identical_to_two_cpus(small_folder, tmp_path):
    convert(small_folder, tmp_path / "two", shape=(16, 16), images_per_file=2, progress=False)  # 2-CPU session
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(HERE.parent)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "multinode_convert.py"), str(small_folder),
                           str(tmp_path / "one"), "single"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert result_line(done.stdout)["cpus"] == 1
    assert tree_digest(tmp_path / "one") == tree_digest(tmp_path / "two")


def test_losing_a_node_then_the_same_conversion_ends_byte_identical(tmp_path_factory, tmp_path, ray_session):
    from raydsconv.samples import write_image_folder

    source = tmp_path_factory.mktemp("photos") / "images"
    write_image_folder(source, num_images=80, num_classes=2, sizes=((640, 480),), seed=9)
    convert(source, tmp_path / "embedded", shape=(32, 32), images_per_file=2, progress=False)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(HERE.parent)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(HERE / "multinode_convert.py"), str(source), str(tmp_path / "cluster"),
                           "remove-node"], capture_output=True, text=True, env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_line(done.stdout)
    assert result["node_removed"] and result["alive_nodes"] == 1, result
    assert result["already_complete"] or result["resumed_shards"] >= 3, result
    assert tree_digest(tmp_path / "cluster") == tree_digest(tmp_path / "embedded")
