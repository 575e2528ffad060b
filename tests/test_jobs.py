"""`ray job submit` against a real local Ray cluster with its dashboard (started and stopped here
by PID: never `ray stop`, which would end every Ray process of the user)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from raydsconv.layout import MANIFEST_FILE

RAY = str(Path(sys.executable).with_name("ray"))
JOBS = Path(__file__).parent.parent / "jobs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def job_address():
    # No 30 s drain on SIGTERM at teardown: the whole head stops at once anyway.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="rdc-head-")
    dashboard = free_port()
    # Every port of its own: the test session's Ray already holds the default ones (its dashboard
    # agent's 52365 among them), and a head whose agent cannot bind accepts no jobs.
    ports = [f"--{name}={free_port()}" for name in (
        "port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
        "runtime-env-agent-port", "node-manager-port", "object-manager-port", "ray-client-server-port")]
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--num-cpus=1", *ports, "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--temp-dir={temp_dir}",
         "--object-store-memory=300000000", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True)
        if probe.returncode == 0:
            break
        if head.poll() is not None:
            pytest.fail(f"ray start failed: {head.stderr.read().decode()[-2000:]}")
        time.sleep(1)
    else:
        pytest.fail("the Ray head did not come up within 90 s")
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)  # the head and every process it started, nothing else
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


def submit(address: str, env: dict, *arguments: str) -> subprocess.CompletedProcess:
    deadline = time.time() + 120
    while True:
        done = subprocess.run([RAY, "job", "submit", "--address", address, "--working-dir", str(JOBS), "--",
                               sys.executable, "convert.py", *arguments], env=env, capture_output=True, text=True,
                              timeout=300)
        # A busy head answers before its job agent is up; Ray itself says to try again.
        if "No available agent to submit job" not in done.stderr + done.stdout or time.time() > deadline:
            return done
        time.sleep(2)


def test_job_converts_and_a_failing_job_reports_failure(job_address, small_folder, tmp_path):
    address, env = job_address
    done = submit(address, env, str(small_folder), str(tmp_path / "ds"), "--shape", "8", "8", "--no-progress")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr)
    manifest = json.loads((tmp_path / "ds" / MANIFEST_FILE).read_text())
    assert manifest["num_samples"] > 0 and len(manifest["skipped"]) == 4
    failed = submit(address, env, str(tmp_path / "missing"), str(tmp_path / "out"), "--shape", "8", "8")
    assert failed.returncode != 0
    assert "does not exist" in failed.stdout + failed.stderr and "failed" in (failed.stdout + failed.stderr).lower()
