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
from raydsconv.layout import MANIFEST_FILE

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


def sbatch(tmp_path: Path, *arguments: str, name: str = "job") -> tuple[int, str, str]:
    """Submit convert.sbatch on 2 nodes and wait: (exit code, job id, job output NAME.out; Ray's logs
    in NAME-logs, or logs for the first)."""
    job = Job(tmp_path, *arguments, name=name)
    return job.wait(), job.id, job.log()


class Job:
    """convert.sbatch on 2 nodes, submitted without waiting (`sbatch --wait` in the background: it prints
    the job id at once, and exits with the job's exit code)."""

    def __init__(self, tmp_path: Path, *arguments: str, name: str = "job"):
        self.output = tmp_path / f"{name}.out"
        logs = tmp_path / ("logs" if name == "job" else f"{name}-logs")
        self.process = subprocess.Popen(
            ["sbatch", "--wait", "--nodes=2", f"--chdir={tmp_path}", f"--output={self.output}", str(CONVERT_SBATCH),
             *arguments],
            env={**slurm_env(), "RAYDSCONV_SLURM_LOGS": str(logs)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        job = re.search(r"Submitted batch job (\d+)", line)
        if not job:
            self.process.kill()
            out, err = self.process.communicate()
            pytest.fail(f"sbatch: {line}{out}{err}")
        self.id = job.group(1)

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            subprocess.run(["scancel", self.id], env=slurm_env(), timeout=30)
            self.process.wait(30)
            pytest.fail(f"job {self.id} still running after {timeout} s:\n{self.log()[-3000:]}")

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.output.read_text() if self.output.exists() else ""


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


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll until condition() is true (returned) or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not so after {timeout} s")
        time.sleep(interval)
    return result


# What SLURM sends the batch shell (only: B:) shortly before the time limit, from `#SBATCH --signal=`.
WARNING_SIGNAL = re.search(r"^#SBATCH --signal=B:(\w+)@\d+$", CONVERT_SBATCH.read_text(), re.M).group(1)


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


@pytest.mark.usefixtures("ray_session")
def test_warning_signal_stops_the_job_cleanly_and_the_same_job_resumes(tmp_path):
    from raydsconv.samples import write_image_folder

    source, out = tmp_path / "images", tmp_path / "out"
    write_image_folder(source, num_images=120, num_classes=3, sizes=((640, 480), (480, 640)), seed=5)
    arguments = (str(source), str(out), "--shape", "32", "32", "--images-per-file", "2", "--no-progress")
    records = out / ".raydsconv" / "shards"

    first = Job(tmp_path, *arguments, name="first")
    try:
        wait_for(lambda: not first.running() or any(records.glob("*.json")), 150, "a shard record written")
        assert first.running(), "the job ended before a shard was written:\n" + first.log()[-4000:]
        # As SLURM's --signal=B: does: the batch shell only, neither the driver nor the Ray nodes.
        subprocess.run(["scancel", "--batch", f"--signal={WARNING_SIGNAL}", first.id], env=slurm_env(), check=True,
                       timeout=30)
        code = first.wait(120)
    finally:
        if first.running():
            subprocess.run(["scancel", first.id], env=slurm_env(), timeout=30)
    log = first.log()
    assert code == 143, log[-4000:]
    stopped = re.findall(r"^raydsconv: interrupted after (\d+) of (\d+) shards; run the same command again to resume$",
                         log, re.M)
    assert len(stopped) == 1, log[-4000:]
    counted, total = map(int, stopped[0])
    assert f"SIG{WARNING_SIGNAL}: stopping the conversion" in log and "conversion exited with code 143" in log
    assert re.search(r"teardown [\d.]+ s", log), log[-4000:]
    wait_for(lambda: not job_processes(first.id), 15, f"no process of job {first.id} left")
    assert not (out / MANIFEST_FILE).exists()
    # Ray tasks already running when the driver stopped may still finish their shard before the teardown.
    written = len(list(records.glob("*.json")))
    assert 0 < counted <= written < total == 60, log[-4000:]

    code, _, log = sbatch(tmp_path, *arguments, name="second")
    assert code == 0, log[-4000:]
    assert f"resumed: {written} of {total} shards were already written" in log, log[-4000:]
    convert(source, tmp_path / "embedded", shape=(32, 32), images_per_file=2, progress=False)
    assert tree_digest(out) == tree_digest(tmp_path / "embedded")
