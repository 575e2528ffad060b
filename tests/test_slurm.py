"""jobs/slurm/convert.sbatch, and `srun -n N python script.py` (raydsconv.slurm), against a real SLURM:
`scripts/local_slurm.sh start` runs a 2-node one on this host (CI does so in .ci/run). Without SLURM
these tests skip, unless RAYDSCONV_REQUIRE_SLURM=1."""

from __future__ import annotations

import functools
import json
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


# -- srun -n N python script.py: the predecessor's way to distribute (raydsconv.slurm) ---------------

SRUN_SCRIPT = Path(__file__).parent / "srun_convert.py"


def srun(tmp_path: Path, *arguments: str, nodes: int = 2, tasks: int = 2, timeout: float = 300,
         extra: tuple[str, ...] = ()) -> tuple[int, dict[int, dict], str, float]:
    """Run tests/srun_convert.py under `srun -N nodes -n tasks --label`: (srun's exit code, each rank's
    JSON result by rank, every line srun printed, seconds)."""
    name = f"rdc-srun-{tmp_path.name}"[:60]
    env = {**slurm_env(), "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    try:
        done = subprocess.run(["srun", f"--nodes={nodes}", f"--ntasks={tasks}", "--label", f"--job-name={name}", *extra,
                               sys.executable, str(SRUN_SCRIPT), *arguments], env=env, capture_output=True, text=True,
                              timeout=timeout, cwd=tmp_path)
    except subprocess.TimeoutExpired as expired:
        subprocess.run(["scancel", f"--name={name}"], env=env, timeout=30)
        pytest.fail(f"srun still running after {timeout} s:\n{(expired.stderr or b'')[-3000:]!r}")
    seconds = time.monotonic() - started
    results = {}
    for line in done.stdout.splitlines():
        labelled = re.match(r"^\s*(\d+): (\{.*\})$", line)
        if labelled:
            results[int(labelled.group(1))] = json.loads(labelled.group(2))
    return done.returncode, results, done.stdout + done.stderr, seconds


def assert_nothing_left(tmp_path: Path, job: str) -> None:
    """No process of the job on this host, no meeting folder beside the outputs."""
    wait_for(lambda: not job_processes(job), 15, f"no process of job {job} left")
    assert not [p.name for p in tmp_path.iterdir() if ".srun-" in p.name], list(tmp_path.iterdir())


@pytest.mark.usefixtures("ray_session")
def test_srun_ranks_run_one_conversion_with_the_bytes_of_an_embedded_run(small_folder, tmp_path):
    # The predecessor's script under its launch line: a converter with dist=True and the step's ranks.
    code, results, log, seconds = srun(tmp_path, str(small_folder), str(tmp_path / "srun"), "converter")
    assert code == 0 and sorted(results) == [0, 1], log[-4000:]
    assert all("error" not in result for result in results.values()), log[-4000:]
    assert "0: one conversion over 2 SLURM ranks on 2 nodes" in log and "this rank (0, on c0) is the driver" in log
    assert "this rank (1, on c1) is a Ray worker" in log, log[-4000:]
    assert re.search(r"^0: Ray ready in [\d.]+ s: 2 nodes, 2 CPUs$", log, re.M), log[-4000:]
    assert "by 2 Ray nodes" in results[0]["summary"], "both nodes should have written shards:\n" + log[-3000:]
    # Every rank got rank 0's report: the script goes on alike on both.
    assert results[1]["summary"] == results[0]["summary"] and results[1]["len"] == results[0]["len"] == 33
    started = time.monotonic()
    convert(small_folder, tmp_path / "embedded", shape=(16, 16), images_per_file=2, progress=False)
    print(f"srun -N 2 -n 2: {seconds:.1f} s for the whole step; embedded convert(): {time.monotonic() - started:.1f} s")
    assert tree_digest(tmp_path / "srun") == tree_digest(tmp_path / "embedded")
    assert_nothing_left(tmp_path, results[0]["job"])


@pytest.mark.usefixtures("ray_session")
def test_srun_second_rank_on_a_node_only_waits(small_folder, tmp_path):
    # 3 ranks on 2 nodes (blocks: ranks 0 and 1 on c0, 2 on c1): one Ray node per node; rank 1 waits.
    code, results, log, _ = srun(tmp_path, str(small_folder), str(tmp_path / "srun"), "convert", tasks=3,
                                 extra=("--overcommit",))
    assert code == 0 and sorted(results) == [0, 1, 2], log[-4000:]
    assert "this rank (1, on c0) is waiting (another rank runs the Ray node of c0)" in log, log[-4000:]
    assert "this rank (2, on c1) is a Ray worker" in log and "2: starting a Ray node on c1" in log
    assert "1: starting a Ray node" not in log
    assert {result["num_samples"] for result in results.values()} == {33}
    convert(small_folder, tmp_path / "embedded", shape=(16, 16), images_per_file=2, progress=False)
    assert tree_digest(tmp_path / "srun") == tree_digest(tmp_path / "embedded")
    assert_nothing_left(tmp_path, results[0]["job"])


def test_srun_failing_conversion_fails_every_rank_and_leaves_nothing_running(small_folder, tmp_path):
    # strict: the first unreadable image fails a Ray task, after the cluster has formed.
    code, results, log, _ = srun(tmp_path, str(small_folder), str(tmp_path / "out"), "converter", "strict=1")
    assert code != 0 and sorted(results) == [0, 1], log[-4000:]
    assert "Ray ready in" in log, log[-4000:]
    assert "(strict mode)" in results[0]["error"], log[-4000:]
    assert results[1]["error"].startswith("ConversionError: rank 0's conversion failed: ") and "(strict mode)" in \
        results[1]["error"]
    assert not (tmp_path / "out" / MANIFEST_FILE).exists()
    assert_nothing_left(tmp_path, results[0]["job"])


def test_srun_rank_0_refusing_the_arguments_fails_every_rank_at_once(tmp_path):
    code, results, log, seconds = srun(tmp_path, str(tmp_path / "missing"), str(tmp_path / "out"), "convert")
    assert code != 0 and sorted(results) == [0, 1], log[-4000:]
    assert "does not exist" in results[0]["error"] and results[0]["error"].startswith("InvalidArgumentError")
    # The same class on rank 1 (the CLI's exit code 2), and no Ray was started for nothing.
    assert results[1]["error"].startswith("InvalidArgumentError: rank 0's conversion failed: ")
    assert "starting Ray" not in log and "starting a Ray node" not in log
    assert_nothing_left(tmp_path, results[0]["job"])


STEP = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "3",
        "SLURM_NODEID": "1", "SLURM_LOCALID": "0", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_TASKS_PER_NODE": "2,1",
        "SLURMD_NODENAME": "c1", "SLURM_STEP_NODELIST": "c[0-1]", "SLURM_CPUS_ON_NODE": "1"}


def test_which_processes_share_a_conversion(monkeypatch):
    from raydsconv import slurm

    monkeypatch.setattr(slurm, "_ray_running", lambda: False)
    step = slurm.this_step(None, STEP)
    assert (step.rank, step.ranks, step.node, step.tasks_here, step.starts_node) == (2, 3, "c1", 1, True)
    assert step.describe().endswith("this rank (2, on c1) is a Ray worker")
    assert slurm.node_cpus(step, STEP) == 1  # at most what the job holds on the node
    assert slurm.this_step(None, {**STEP, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}).tasks_here == 2
    # Not shared: one task, a batch script (no step), an address, RAY_ADDRESS, the opt-out, Ray running here.
    assert slurm.this_step(None, {**STEP, "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert slurm.this_step(None, {k: v for k, v in STEP.items() if k not in ("SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS")}
                           | {"SLURM_NTASKS": "3"}) is None
    assert slurm.this_step("auto", STEP) is None and slurm.this_step(None, {**STEP, "RAY_ADDRESS": "h:6379"}) is None
    assert slurm.this_step(None, {**STEP, "RAYDSCONV_SLURM_RANKS": "0"}) is None
    monkeypatch.setattr(slurm, "_ray_running", lambda: True)
    assert slurm.this_step(None, STEP) is None

    assert slurm.tasks_per_node("2(x3),1") == [2, 2, 2, 1] and slurm.tasks_per_node("weird") == []
    assert slurm.node_memory(4, {"SLURM_MEM_PER_CPU": "1000"}) == (2800 << 20, 1200 << 20)
    assert slurm.node_memory(4, {"SLURM_MEM_PER_NODE": "100000"})[1] == 16384 << 20  # the object store's cap
    assert slurm.node_memory(4, {}) is None


def test_a_report_travels_to_the_other_ranks_whole(small_folder, tmp_path, ray_session):
    from raydsconv import slurm

    report = convert(small_folder, tmp_path / "ds", shape=(8, 8), images_per_file=5, progress=False)
    travelled = slurm.report_from_dict(json.loads(json.dumps(slurm.report_to_dict(report))))
    assert travelled == report and travelled.summary() == report.summary()


def test_rank_0_removes_the_meetings_a_killed_step_left_about_the_same_output(tmp_path, monkeypatch):
    from raydsconv import slurm

    monkeypatch.setattr(slurm, "_ray_running", lambda: False)
    dead, live, other = (tmp_path / name for name in (".out.srun-5.0", ".out.srun-6.0", ".other.srun-5.0"))
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "beat").write_text("3\n")
    for folder in (dead, other):
        os.utime(folder / "beat", (time.time() - slurm.DEAD_AFTER_S - 60,) * 2)
    meeting = slurm.Meeting.of(slurm.this_step(None, {**STEP, "SLURM_JOB_ID": "8"}), tmp_path / "out")
    meeting.create()
    assert meeting.path.name == ".out.srun-8.0" and meeting.ready()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.srun-5.0", ".out.srun-6.0", ".out.srun-8.0"]
    assert meeting.path.stat().st_mode & 0o777 == 0o700
