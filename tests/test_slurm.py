"""jobs/slurm/convert.sbatch against a real SLURM: `scripts/local_slurm.sh start` runs a 2-node one on
this host (CI does so in .ci/run). Without SLURM these tests skip, unless RAYDSCONV_REQUIRE_SLURM=1."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_convert_memmap import tree_digest

from raydsconv import convert

ROOT = Path(__file__).parent.parent
CONVERT_SBATCH = ROOT / "jobs" / "slurm" / "convert.sbatch"
LOCAL_CONF = Path(os.environ.get("RAYDSCONV_SLURM_DIR", "/tmp/raydsconv-slurm")) / "slurm.conf"


@functools.cache
def find_slurm() -> tuple[dict, str | None]:
    """The environment for sbatch, and what is missing for these tests (None: nothing)."""
    env = {**os.environ, "RAYDSCONV_PYTHON": sys.executable, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # the test session's embedded Ray
    if "SLURM_CONF" not in env and LOCAL_CONF.is_file():
        env["SLURM_CONF"] = str(LOCAL_CONF)
    if not shutil.which("sbatch"):
        return env, "sbatch not found"
    try:  # without a config file sinfo retries for a minute
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True,
                               timeout=10)
    except subprocess.TimeoutExpired:
        return env, "sinfo did not answer within 10 s"
    idle = [line for line in nodes.stdout.splitlines() if line.split()[1:] == ["idle"]]
    if nodes.returncode != 0 or len(idle) < 2:
        return env, f"no SLURM with 2 idle nodes: {nodes.stdout.strip()} {nodes.stderr.strip()[-300:]}"
    return env, None


def slurm_env() -> dict:
    """The environment for sbatch, or a skip (a failure under RAYDSCONV_REQUIRE_SLURM=1)."""
    env, problem = find_slurm()
    if problem:
        if os.environ.get("RAYDSCONV_REQUIRE_SLURM") == "1":
            pytest.fail(f"RAYDSCONV_REQUIRE_SLURM=1 but {problem} (run scripts/local_slurm.sh start)")
        pytest.skip(f"{problem} (scripts/local_slurm.sh start runs a local one)")
    return env


def sbatch(tmp_path: Path, *arguments: str) -> tuple[int, str, str]:
    """Submit convert.sbatch on 2 nodes and wait: (exit code, job id, job output)."""
    output = tmp_path / "job.out"
    done = subprocess.run(
        ["sbatch", "--wait", "--nodes=2", f"--chdir={tmp_path}", f"--output={output}", str(CONVERT_SBATCH),
         *arguments],
        env={**slurm_env(), "RAYDSCONV_SLURM_LOGS": str(tmp_path / "logs")}, capture_output=True, text=True,
        timeout=300,
    )
    job = re.search(r"Submitted batch job (\d+)", done.stdout)
    assert job, done.stdout + done.stderr
    return done.returncode, job.group(1), output.read_text()


def job_processes(job: str) -> list[int]:
    """PIDs on this host whose environment belongs to the SLURM job (Ray renames its workers' titles)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"\0SLURM_JOB_ID={job}\0".encode() in b"\0" + environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.usefixtures("ray_session")
def test_two_node_job_writes_the_bytes_of_an_embedded_run(small_folder, tmp_path):
    options = ("--shape", "16", "16", "--images-per-file", "2", "--no-progress")
    code, _, log = sbatch(tmp_path, str(small_folder), str(tmp_path / "slurm"), *options)
    assert code == 0, log[-4000:]
    assert "by 2 Ray nodes" in log, "both nodes should have written shards:\n" + log[-3000:]
    assert re.search(r"cluster ready in [\d.]+ s", log) and re.search(r"teardown [\d.]+ s", log)
    convert(small_folder, tmp_path / "embedded", shape=(16, 16), images_per_file=2, progress=False)
    assert tree_digest(tmp_path / "slurm") == tree_digest(tmp_path / "embedded")


def test_failing_conversion_fails_the_job_and_leaves_nothing_running(tmp_path):
    code, job, log = sbatch(tmp_path, str(tmp_path / "missing"), str(tmp_path / "out"), "--shape", "8", "8")
    assert code == 2, log[-4000:]  # the CLI's exit code for a missing source, passed through
    assert "does not exist" in log and "conversion exited with code 2" in log
    deadline = time.time() + 10  # sbatch --wait returns when SLURM has ended the job's steps
    while job_processes(job) and time.time() < deadline:
        time.sleep(0.2)
    assert job_processes(job) == []
    assert len(list((tmp_path / "logs").glob("*/raylet.out"))) == 2, "each node's Ray logs are kept"
