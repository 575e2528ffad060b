"""One conversion over the ranks of a SLURM job step: ``srun -n N python convert.py``, the way the
predecessor's users distribute, runs one conversion on a Ray cluster spanning the step's nodes instead
of N whole conversions into the same folder.

A conversion (``convert()``, a converter's ``.convert()``, ``raydsconv convert``) takes part when it
starts inside a step of several tasks (``SLURM_STEP_NUM_TASKS`` > 1; a batch script itself is no step)
with no Ray address (no ``address=``, no ``RAY_ADDRESS``) and no Ray initialised in the process:

- rank 0 (``SLURM_PROCID`` 0) is the driver: it plans and lists as always; when there are shards to
  write it starts a Ray head on its node, publishes its address, waits until every node of the step
  has a Ray node in the cluster, converts, and when the conversion ends (done, failed or stopped by a
  signal) says so to the other ranks and stops what it started;
- the first rank on each other node (``SLURM_LOCALID`` 0) starts a Ray worker node there, joined to
  that head (``ray start --address HEAD --block``, a child process), and keeps it until rank 0 says
  the conversion ended; any other rank (a second rank on a node) only waits for that word.

Every rank then returns rank 0's ConversionReport (so the same script goes on alike on every rank), or
raises rank 0's error (the same class where it is one of raydsconv's, else ConversionError; a
ConversionInterrupted for a stopped conversion): a failed conversion fails every rank.

The ranks meet in a small folder beside the output, which every node must share anyway
(``OUTPUT_PARENT/.NAME.srun-JOB.STEP``, or in ``RAYDSCONV_SLURM_MEETING``): rank 0 writes there
``beat`` (rewritten every ``BEAT_EVERY_S`` while it lives), ``head`` (the Ray head's address), ``done``
(how the conversion ended, with its report); a rank that starts a Ray node writes ``rank-R.json``
(its node, port and log), every other rank ``left-R`` once it is done. Rank 0 removes the folder.

A Ray node gets the CPUs the step holds on its node (this process's CPUs times the step's tasks
there, at most ``SLURM_CPUS_ON_NODE``) and, where the job says its memory (``--mem``,
``--mem-per-cpu``), 30% of it as object store (at most ``RAYDSCONV_OBJECT_STORE_MAX_MB``, 16 GiB), the
rest as Ray's memory. Its ports are free ones picked on its node; its temp dir is node-local and short
(``RAYDSCONV_RAY_TMP``, default /tmp: ``rdc-JOB.STEP-RANK``) and is kept, with Ray's logs and the
node's ``ray-start.log``. Every Ray process is a child of its rank and gets SIGTERM should the rank
die (Linux); nothing here runs ``ray stop``.

Settings (environment): ``RAYDSCONV_SLURM_RANKS=0`` opts out (every rank converts on its own, as
before); ``RAYDSCONV_START_TIMEOUT`` (120 s): how long rank 0 waits for the nodes to join, and the
other ranks for rank 0 to start the conversion; ``RAYDSCONV_HEAD_IP``: the head's address where Ray
picks the wrong interface.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from raydsconv import errors
from raydsconv.cluster import available_cpus, mark_fixed_size
from raydsconv.errors import ConversionError, ConversionInterrupted, writing
from raydsconv.progress import Progress, counted
from raydsconv.signals import Stopped, stop_on_signals

if TYPE_CHECKING:
    from raydsconv.conversion import ConversionReport

logger = logging.getLogger(__name__)

OPT_OUT = "RAYDSCONV_SLURM_RANKS"  # "0": every rank converts on its own
START_TIMEOUT_S = 120.0  # RAYDSCONV_START_TIMEOUT, as for jobs/slurm/cluster.sh
BEAT_EVERY_S = 2.0  # rank 0 rewrites its beat this often
BEAT_LOST_S = 60.0  # a beat unchanged this long: rank 0 is gone
DEAD_AFTER_S = 600.0  # a meeting folder whose beat is this old is removed by the next rank 0 (clocks differ a bit)
POLL_S = 0.2
STOP_TIMEOUT_S = 30.0  # a Ray node that has not stopped after SIGTERM gets SIGKILL
OBJECT_STORE_MAX_MB = 16384

_conversions: dict[Path, int] = {}  # conversions of each output so far in this process (the meeting's key)


@dataclass(frozen=True)
class Step:
    """This process's place in a SLURM job step of several tasks."""

    job: str
    step: str
    restart: int  # SLURM_RESTART_COUNT: a requeued job runs its steps again under the same ids
    rank: int
    ranks: int
    local_rank: int  # among the step's tasks on this node
    node: str
    num_nodes: int
    tasks_here: int  # the step's tasks on this node
    nodelist: str

    @property
    def starts_node(self) -> bool:
        """This rank runs its node's Ray node (the head, for rank 0)."""
        return self.local_rank == 0

    def describe(self) -> str:
        if self.rank == 0:
            role = "the driver"
        elif self.starts_node:
            role = "a Ray worker"
        else:
            role = f"waiting (another rank runs the Ray node of {self.node})"
        return (f"one conversion over {self.ranks} SLURM ranks on {counted(self.num_nodes, 'node')} (job {self.job}, "
                f"step {self.step}): this rank ({self.rank}, on {self.node}) is {role}")


def this_step(address: str | None, environ: Mapping[str, str] | None = None) -> Step | None:
    """The SLURM step whose ranks share a conversion started here with ``address``, or None: not in a
    step of several tasks, an address given (or RAY_ADDRESS), Ray already initialised in this process,
    or RAYDSCONV_SLURM_RANKS=0."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off"):
        return None
    if address is not None or env.get("RAY_ADDRESS"):
        return None
    ranks_and_rank = step_ranks(env)
    if ranks_and_rank is None:
        return None
    ranks, rank = ranks_and_rank
    try:
        node_index = int(env.get("SLURM_NODEID") or 0)
        num_nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
        local_rank = int(env.get("SLURM_LOCALID") or 0)
        restart = int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return None
    if ranks < 2 or _ray_running():
        return None
    per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or "")
    return Step(job=env["SLURM_JOB_ID"], step=env["SLURM_STEP_ID"], restart=restart, rank=rank, ranks=ranks,
                local_rank=local_rank, node=env.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0],
                num_nodes=num_nodes, tasks_here=per_node[node_index] if node_index < len(per_node) else 1,
                nodelist=env.get("SLURM_STEP_NODELIST") or env.get("SLURM_NODELIST") or "?")


def step_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(tasks, this task's rank) of the SLURM job step this process is one of; None outside one."""
    env = os.environ if environ is None else environ
    if not all(env.get(name) for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID")):
        return None  # not in a job step (a batch script has SLURM_NTASKS but no step)
    try:
        return int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1), int(env["SLURM_PROCID"])
    except ValueError:
        return None


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def tasks_per_node(text: str) -> list[int]:
    """SLURM's compact count of tasks per node, ``2(x3),1`` -> [2, 2, 2, 1]; [] if unreadable."""
    counts: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if not match:
            return []
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def node_cpus(step: Step, environ: Mapping[str, str] | None = None) -> int:
    """The CPUs of this node's Ray node: this process's (its SLURM binding) times the step's tasks
    here, at most what the job holds on the node."""
    env = os.environ if environ is None else environ
    cpus = available_cpus() * step.tasks_here
    with contextlib.suppress(ValueError):
        cpus = min(cpus, int(env.get("SLURM_CPUS_ON_NODE") or cpus))
    return max(cpus, 1)


def node_memory(cpus: int, environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """(Ray's memory, object store) in bytes from the job's memory on this node; None where the job
    does not say it (Ray then sizes by the machine)."""
    env = os.environ if environ is None else environ
    try:
        if int(env.get("SLURM_MEM_PER_NODE") or 0) > 0:
            total_mb = int(env["SLURM_MEM_PER_NODE"])
        elif int(env.get("SLURM_MEM_PER_CPU") or 0) > 0:
            total_mb = int(env["SLURM_MEM_PER_CPU"]) * cpus
        else:
            return None
        store_mb = min(total_mb * 30 // 100, int(env.get("RAYDSCONV_OBJECT_STORE_MAX_MB") or OBJECT_STORE_MAX_MB))
    except ValueError:
        return None
    return (total_mb - store_mb) << 20, store_mb << 20


def start_timeout() -> float:
    try:
        return float(os.environ.get("RAYDSCONV_START_TIMEOUT") or START_TIMEOUT_S)
    except ValueError:
        return START_TIMEOUT_S


# -- the meeting folder --------------------------------------------------------------------------


class Meeting:
    """The folder where the ranks of one conversion meet: small files, each written whole."""

    def __init__(self, path: Path, family: str = ""):
        self.path = path
        self.family = family  # the start of the names of every meeting about the same output

    @classmethod
    def of(cls, step: Step, output: Path) -> "Meeting":
        """The meeting of this process's next conversion into ``output`` (every rank runs the same
        conversions in the same order, so the n-th of each rank meet)."""
        count = _conversions.get(output, 0)
        _conversions[output] = count + 1
        family = f".{output.name}.srun-"
        name = f"{family}{step.job}.{step.step}"
        name += f".r{step.restart}" if step.restart else ""
        name += f".{count}" if count else ""
        place = os.environ.get("RAYDSCONV_SLURM_MEETING")
        if place:  # a folder shared by every node, for outputs whose parent is not writable
            key = hashlib.sha256(os.fsencode(output)).hexdigest()[:12]  # outputs of the same name apart
            return cls(Path(place).absolute() / f"{name}-{key}", family)
        return cls(output.parent / name, family)

    def create(self) -> None:
        """Rank 0: make the folder (only its user may write there), with a first beat, in one rename."""
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.path, ignore_errors=True)  # left by a killed run of the same step
            self._remove_dead()
            staging = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            (staging / "beat").write_text("0\n")
            os.replace(staging, self.path)

    def _remove_dead(self) -> None:
        """Remove the meetings about the same output that a killed rank 0 left (SIGKILL, the end of
        a job): ours, with a beat older than DEAD_AFTER_S (a live one beats every BEAT_EVERY_S)."""
        if not self.family:
            return
        for other in self.path.parent.glob(f"{glob.escape(self.family)}*"):
            with contextlib.suppress(OSError):
                beat = (other / "beat").stat()
                if beat.st_uid == os.getuid() and time.time() - beat.st_mtime > DEAD_AFTER_S:
                    shutil.rmtree(other)

    def ready(self) -> bool:
        return (self.path / "beat").exists()

    def check_owner(self) -> None:
        """A meeting folder made by someone else (another user in a shared scratch) is not ours to trust."""
        info = self.path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise ConversionError(f"{self.path} is not rank 0's meeting folder (another user's, or writable by "
                                  "others); remove it, or set RAYDSCONV_SLURM_MEETING to a folder of your own")

    def write(self, name: str, data: dict[str, Any]) -> None:
        temporary = self.path / f".{name}.{os.getpid()}.partial"
        temporary.write_text(json.dumps(data, default=str))
        os.replace(temporary, self.path / name)

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def exists(self, name: str) -> bool:
        return (self.path / name).exists()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _Beat:
    """Rank 0's beat: ``beat`` rewritten in place (a shared filesystem checks an open file's size and
    time, not always a new name) every BEAT_EVERY_S, by a thread, while the conversion lasts."""

    def __init__(self, meeting: Meeting):
        self.path = meeting.path / "beat"
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="raydsconv-slurm-beat", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        count = 0
        while not self.stopping.wait(BEAT_EVERY_S):
            count += 1
            with contextlib.suppress(OSError):
                self.path.write_text(f"{count}\n")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)


class _Pulse:
    """The other ranks' view of rank 0's beat: lost when unchanged for BEAT_LOST_S."""

    def __init__(self, meeting: Meeting):
        self.path = meeting.path / "beat"
        self.last: bytes | None = None
        self.changed = time.monotonic()

    def lost(self) -> str | None:
        try:
            beat = self.path.read_bytes()
        except FileNotFoundError:
            return f"rank 0 ended without a word: its meeting folder {self.path.parent} is gone"
        except OSError:
            beat = None
        now = time.monotonic()
        if beat != self.last:
            self.last, self.changed = beat, now
        elif now - self.changed > BEAT_LOST_S:
            return f"rank 0 stopped answering: {self.path} unchanged for {BEAT_LOST_S:.0f} s"
        return None


# -- a Ray node as a child process -----------------------------------------------------------------


def _die_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child gets SIGTERM when this process dies (Linux's PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up now: nothing but the call after fork

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG

    return preexec


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on this machine now (the OS's picks)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class RayNode:
    """``ray start --block`` as a child process of this rank: a Ray node (head, or a worker joined to
    ``head``) that stops every process it started on SIGTERM, and gets SIGTERM should this rank die."""

    def __init__(self, *, temp: Path, cpus: int, memory: tuple[int, int] | None, head: str | None = None):
        self.temp, self.log = temp, temp / "ray-start.log"
        temp.mkdir(parents=True, exist_ok=True)
        (temp / "ray_current_cluster").unlink(missing_ok=True)  # a former head's address
        ports = free_ports(9)
        self.port = ports[0]  # the node manager's: tells this node among the cluster's
        args = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                f"--num-cpus={cpus}", f"--temp-dir={temp}", f"--node-manager-port={ports[0]}",
                f"--object-manager-port={ports[1]}", f"--metrics-export-port={ports[2]}",
                f"--dashboard-agent-listen-port={ports[3]}", f"--dashboard-agent-grpc-port={ports[4]}",
                f"--runtime-env-agent-port={ports[5]}", "--min-worker-port=0", "--max-worker-port=0"]
        if memory is not None:
            args += [f"--memory={memory[0]}", f"--object-store-memory={memory[1]}"]
        if head is None:
            args += ["--head", f"--port={ports[6]}", f"--ray-client-server-port={ports[7]}",
                     f"--dashboard-port={ports[8]}", "--include-dashboard=false"]
            if os.environ.get("RAYDSCONV_HEAD_IP"):
                args.append(f"--node-ip-address={os.environ['RAYDSCONV_HEAD_IP']}")
        else:
            args.append(f"--address={head}")
        # The whole cluster goes down together: no point draining (as in jobs/slurm/ray_node.sh).
        env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **os.environ}
        with open(self.log, "ab") as log:
            # Its own session: a Ctrl-C to the terminal's foreground group reaches the rank, which stops it.
            self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True, preexec_fn=_die_with_parent())

    def alive(self) -> bool:
        return self.process.poll() is None

    def address(self) -> str | None:
        """The head's GCS address, once it is up (Ray writes it into the temp dir)."""
        try:
            return (self.temp / "ray_current_cluster").read_text().strip() or None
        except OSError:
            return None

    def failure(self) -> str:
        """Why it ended by itself: its exit code and the last line of its log."""
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        last = f": {lines[-1].strip()[:300]}" if lines else ""
        return f"exited with code {self.process.poll()}{last} (see {self.log})"

    def terminate(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM; SIGKILL to its process group after STOP_TIMEOUT_S; then what is left of its session:
        Ray's worker processes (each in a process group of its own) that have not yet seen their raylet
        go, and that SLURM no longer counts in the step once their parent has gone."""
        self.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for number in (signal.SIGTERM, signal.SIGKILL):
            left = session_processes(self.process.pid)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, number)
            deadline = time.monotonic() + 5
            while left and time.monotonic() < deadline:
                time.sleep(0.1)
                left = session_processes(self.process.pid)
            if not left:
                return


def session_processes(session: int) -> list[int]:
    """The processes of this user in the session ``session`` (Linux; elsewhere none)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after the command name, which may hold anything
            if int(fields[3]) == session and stat.parent.stat().st_uid == os.getuid() and fields[0] != "Z":
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return found


def ray_temp_dir(step: Step) -> Path:
    # Short and node-local: Ray's socket paths must stay under ~107 characters.
    return Path(os.environ.get("RAYDSCONV_RAY_TMP") or "/tmp") / f"rdc-{step.job}.{step.step}-{step.rank}"


# -- rank 0 ------------------------------------------------------------------------------------------


class Driver:
    """Rank 0's part, around its conversion (a context manager; see the module's docstring):
    ``start_cluster`` where the conversion needs Ray, ``finished(report)`` when it has one; on leaving,
    the other ranks hear how it ended and Ray is stopped."""

    def __init__(self, step: Step, output: Path, progress: Progress, stopped: Stopped):
        self.step, self.progress, self.stopped = step, progress, stopped
        self.meeting = Meeting.of(step, output)
        self.head: RayNode | None = None
        self.connected = False
        self.report: ConversionReport | None = None
        self.beat: _Beat | None = None

    def __enter__(self) -> "Driver":
        self.progress.say(self.step.describe())
        logger.info("%s; meeting in %s", self.step.describe(), self.meeting.path)
        self.meeting.create()
        self.beat = _Beat(self.meeting)
        return self

    def finished(self, report: ConversionReport) -> ConversionReport:
        self.report = report
        return report

    def start_cluster(self, *, say: Callable[[str], None], log_to_driver: bool) -> float:
        """Start the Ray head here, wait until every node of the step has joined, connect; the seconds."""
        import ray

        started = time.perf_counter()
        timeout = start_timeout()
        deadline = time.monotonic() + timeout
        cpus = node_cpus(self.step)
        say(f"starting Ray over {counted(self.step.num_nodes, 'SLURM node')}, the head on {self.step.node} "
            f"({counted(cpus, 'CPU')})…")
        self.head = RayNode(temp=ray_temp_dir(self.step), cpus=cpus, memory=node_memory(cpus))
        while (address := self.head.address()) is None:
            if not self.head.alive():
                raise ConversionError(f"the Ray head on {self.step.node} did not start: {self.head.failure()}")
            if time.monotonic() > deadline:
                raise ConversionError(f"the Ray head on {self.step.node} did not start within {timeout:.0f} s "
                                      f"(see {self.head.log}); raise RAYDSCONV_START_TIMEOUT if it is slow")
            time.sleep(POLL_S)
        self.meeting.write("head", {"address": address, "node": self.step.node})
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
        mark_fixed_size()  # started without a dashboard, for this conversion alone
        self.connected = True
        self._wait_for_nodes(deadline, timeout, say)
        seconds = time.perf_counter() - started
        total = int(ray.cluster_resources().get("CPU", 0))
        say(f"Ray ready in {seconds:.1f} s: {counted(self.step.num_nodes, 'node')}, {counted(total, 'CPU')}")
        logger.info("Ray over the SLURM ranks at %s: %s", address, ray.cluster_resources())
        return seconds

    def _wait_for_nodes(self, deadline: float, timeout: float, say: Callable[[str], None]) -> None:
        import ray

        expected, told = self.step.num_nodes, False
        while True:
            alive = [node for node in ray.nodes() if node.get("Alive")]
            if len(alive) >= expected:
                return
            nodes = self._rank_nodes()
            for rank, node in nodes.items():
                if node.get("failed"):
                    raise ConversionError(f"the Ray node of rank {rank} on {node.get('node')} {node['failed']}")
            if self.head is not None and not self.head.alive():
                raise ConversionError(f"the Ray head on {self.step.node} {self.head.failure()}")
            if time.monotonic() > deadline:
                raise ConversionError(self._missing(alive, nodes, timeout))
            if not told:
                say(f"waiting for the Ray nodes of {counted(expected - len(alive), 'more SLURM node')}…")
                told = True
            time.sleep(POLL_S)

    def _rank_nodes(self) -> dict[int, dict[str, Any]]:
        """What the ranks that start a Ray node wrote about it, by rank."""
        nodes = {}
        for path in self.meeting.path.glob("rank-*.json"):
            data = self.meeting.read(path.name)
            if data is not None:
                nodes[int(path.name[5:-5])] = data
        return nodes

    def _missing(self, alive: list[dict], nodes: dict[int, dict[str, Any]], timeout: float) -> str:
        joined = {node.get("NodeManagerPort") for node in alive}
        late = [f"{data.get('node')} (rank {rank}, log {data.get('log')})" for rank, data in sorted(nodes.items())
                if data.get("port") not in joined]
        silent = self.step.num_nodes - 1 - len(nodes)
        missing = []
        if late:
            missing.append(f"started but not joined: {', '.join(late)}")
        if silent > 0:
            missing.append(f"{counted(silent, 'node')} of {self.step.nodelist} started none (their first rank never "
                           f"reached the conversion: no rank-R.json in {self.meeting.path})")
        return (f"only {len(alive)} of {self.step.num_nodes} Ray nodes joined within {timeout:.0f} s: "
                f"{'; '.join(missing) or 'unknown which'}; raise RAYDSCONV_START_TIMEOUT if they are slow")

    def __exit__(self, kind, error, traceback) -> None:
        with self.stopped.deferred():  # a signal now waits: the others must hear, Ray must stop
            self._end(error)

    def _end(self, error: BaseException | None) -> None:
        started = time.perf_counter()
        outcome = _outcome(self.report if error is None else None, error)
        if self.connected:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
        try:
            self.meeting.write("done", outcome)
        except OSError as problem:  # the others leave when the beat stops
            logger.warning("cannot tell the other SLURM ranks that the conversion ended: %s", problem)
        if self.head is not None:
            self.head.terminate()  # meanwhile the others stop their nodes
        self._wait_for_the_others()
        if self.head is not None:
            self.head.stop()
        if self.beat is not None:
            self.beat.stop()
        self.meeting.remove()
        if self.head is not None:
            self.progress.say(f"Ray over the SLURM ranks stopped in {time.perf_counter() - started:.1f} s")

    def _wait_for_the_others(self) -> None:
        """Until every other rank has read ``done`` (and stopped its Ray node), or START_TIMEOUT."""
        others = set(range(1, self.step.ranks))
        deadline = time.monotonic() + start_timeout()
        while others and time.monotonic() < deadline:
            others = {rank for rank in others if not self.meeting.exists(f"left-{rank}")}
            if others:
                time.sleep(POLL_S)
        if others:
            logger.warning("SLURM ranks %s did not say they left within %.0f s", sorted(others), start_timeout())


def driving(step: Step | None, output: Path, progress: Progress,
            stopped: Stopped) -> Driver | contextlib.nullcontext[None]:
    """A Driver for rank 0 of a step (see ``this_step``); outside one, a context of None."""
    return Driver(step, output, progress, stopped) if step is not None else contextlib.nullcontext()


def _outcome(report: ConversionReport | None, error: BaseException | None) -> dict[str, Any]:
    """How rank 0's conversion ended, for ``done``."""
    if error is None and report is not None:
        return {"status": "ok", "report": report_to_dict(report)}
    if isinstance(error, ConversionInterrupted):
        return {"status": "interrupted", "signal": error.signal_number, "message": str(error)}
    if error is None:
        error = ConversionError("the conversion ended without a report")
    return {"status": "failed", "error": type(error).__name__, "message": str(error) or type(error).__name__}


# -- the other ranks ---------------------------------------------------------------------------------


def serve(step: Step, output: Path, progress: Progress) -> ConversionReport:
    """A rank other than 0: run this node's Ray worker node (the node's first rank) or only wait, until
    rank 0's conversion has ended; then its report, or its error."""
    with stop_on_signals() as stopped:
        try:
            return _serve(step, Meeting.of(step, output), progress)
        except BaseException:
            if stopped.signal_number is None:
                raise
            raise ConversionInterrupted(
                f"rank {step.rank} stopped by {signal.Signals(stopped.signal_number).name} while serving the "
                "conversion of rank 0", stopped.signal_number) from None


def _serve(step: Step, meeting: Meeting, progress: Progress) -> ConversionReport:
    progress.say(step.describe())
    timeout = start_timeout()
    deadline = time.monotonic() + timeout
    while not meeting.ready():
        if time.monotonic() > deadline:
            raise ConversionError(
                f"rank 0 did not start this conversion within {timeout:.0f} s (nothing at {meeting.path}): every "
                f"rank of the step must run the same conversion (same output), or set {OPT_OUT}=0 to convert on each "
                "rank alone")
        time.sleep(POLL_S)
    meeting.check_owner()
    node: RayNode | None = None
    pulse = _Pulse(meeting)
    try:
        while (outcome := meeting.read("done")) is None:
            if step.starts_node and node is None and (head := meeting.read("head")) is not None:
                cpus = node_cpus(step)
                progress.say(f"starting a Ray node on {step.node} ({counted(cpus, 'CPU')}) joining the head at "
                             f"{head['address']}…")
                node = RayNode(temp=ray_temp_dir(step), cpus=cpus, memory=node_memory(cpus), head=head["address"])
                meeting.write(f"rank-{step.rank}.json", {"node": step.node, "port": node.port, "log": str(node.log)})
            if node is not None and not node.alive():
                failure = node.failure()
                with contextlib.suppress(OSError):
                    meeting.write(f"rank-{step.rank}.json", {"node": step.node, "port": node.port, "failed": failure})
                raise ConversionError(f"the Ray node of rank {step.rank} on {step.node} {failure}")
            lost = pulse.lost()
            if lost:
                raise ConversionError(lost)
            time.sleep(POLL_S)
    finally:
        if node is not None:
            node.stop()
        with contextlib.suppress(OSError):
            meeting.write(f"left-{step.rank}", {})
    progress.say(f"the conversion of rank 0 ended ({outcome.get('status')})"
                 + (f"; the Ray node on {step.node} stopped" if node is not None else ""))
    return _result(outcome)


def _result(outcome: dict[str, Any]) -> ConversionReport:
    """Rank 0's report, or its error raised here."""
    status = outcome.get("status")
    if status == "ok":
        return report_from_dict(outcome["report"])
    if status == "interrupted":
        raise ConversionInterrupted(f"rank 0: {outcome.get('message')}", int(outcome.get("signal") or signal.SIGTERM))
    message = f"rank 0's conversion failed: {outcome.get('message')}"
    kind = getattr(errors, str(outcome.get("error")), None)
    if isinstance(kind, type) and issubclass(kind, errors.RaydsconvError):
        try:
            error = kind(message)
        except TypeError:  # another signature
            error = None
        if error is not None:
            raise error
    raise ConversionError(f"rank 0's conversion failed: {outcome.get('error')}: {outcome.get('message')}")


def report_to_dict(report: ConversionReport) -> dict[str, Any]:
    data = {}
    for item in dataclasses.fields(report):
        value = getattr(report, item.name)
        if item.name == "manifests":
            value = {name: manifest.to_dict() for name, manifest in value.items()}
        elif item.name == "skipped":
            value = [skipped.to_dict() for skipped in value]
        elif isinstance(value, Path):
            value = str(value)
        data[item.name] = value
    return data


def report_from_dict(data: dict[str, Any]) -> ConversionReport:
    from raydsconv.conversion import ConversionReport
    from raydsconv.manifest import Manifest
    from raydsconv.sources import Skipped

    values = {item.name: data[item.name] for item in dataclasses.fields(ConversionReport) if item.name in data}
    values["output"] = Path(values["output"])
    values["ray_log"] = Path(values["ray_log"]) if values.get("ray_log") else None
    values["skipped"] = [Skipped(**skipped) for skipped in values["skipped"]]
    values["manifests"] = {name: Manifest.from_dict(manifest) for name, manifest in values["manifests"].items()}
    return ConversionReport(**values)
