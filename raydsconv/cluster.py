"""Connecting to Ray: embedded on this machine, or an existing cluster (address, RAY_ADDRESS, SLURM).
The cluster that the ranks of a SLURM step form for one conversion (``srun -n N``) is raydsconv.slurm's."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from raydsconv.errors import ClusterUnreachableError, InvalidArgumentError, RayStartError
from raydsconv.progress import counted

logger = logging.getLogger(__name__)

# Joining a cluster fails within bounded time. Ray 2.60 tries to reach the cluster's GCS 20 times,
# about 31 s each (36 s when something that is not a GCS answers), about ten minutes in all:
# - nothing answers at the address (refused, unreachable): check_address fails within CONNECT_TIMEOUT_S;
# - something else answers there (e.g. the dashboard's port): ray.init tries GCS_ATTEMPTS times, via
#   RAY_gcs_server_port_wait_time_s (read on each connect; a value set by the user wins).
CONNECT_TIMEOUT_S = 10.0
GCS_ATTEMPTS = 1

LOG_NAME = "raydsconv.log"  # in the logs folder of the Ray session
RAY_LOGGERS = ("ray", "ray.data")  # their lines go to LOG_NAME while a conversion runs (ray_logs_to_file)


def available_cpus() -> int:
    """CPUs this process may use (its affinity, e.g. a SLURM or container limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None, say: Callable[[str], None] | None = None,
               log_to_driver: bool = False) -> float:
    """Make sure this process is connected to Ray; return the seconds it took (0 if already connected).

    ``address=None`` starts an embedded Ray sized to this process's CPUs, unless ``RAY_ADDRESS`` is
    set (as under ``ray job submit``), in which case Ray joins that cluster. ``say`` hears what is
    about to take seconds; ``log_to_driver`` prints the workers' output here (Ray's default), else it
    stays in their log files. A Ray already running in this process is used as it is.
    """
    import ray

    if ray.is_initialized():
        if address is not None:
            logger.warning("Ray is already initialised in this process; using it and ignoring address=%r", address)
        return 0.0
    started = time.perf_counter()
    if address is None and not os.environ.get("RAY_ADDRESS"):
        num_cpus = num_cpus or available_cpus()
        if say:
            say(f"starting Ray ({counted(num_cpus, 'CPU')})…")
        try:
            with _lean_head(keep_log_monitor=log_to_driver):
                ray.init(
                    address="local",  # a Ray of our own even where `ray start` runs one on this host
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=log_to_driver,
                )
            mark_fixed_size()
        except OSError:  # a temporary folder that cannot be written: the CLI names the file
            raise
        except Exception as error:  # Ray raises RuntimeError, ValueError or Exception itself: one line here
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RayStartError(
                f"Ray did not start on this machine: {reason}; Ray's own logs are in {_ray_temp_dir()}/session_latest/"
                "logs (usual causes: that disk is full, too little free memory, or RAY_TMPDIR/TMPDIR names a folder "
                "too deep for a socket path)"
            ) from error
    else:
        given = address if address is not None else os.environ.get("RAY_ADDRESS")
        if say:
            say(f"joining the Ray cluster at {given}…")
        try:
            with _environment("RAY_gcs_server_port_wait_time_s", str(GCS_ATTEMPTS)):
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=log_to_driver)
        except ConnectionError as error:
            raise ClusterUnreachableError(
                f"cannot join a Ray cluster at {given}: {error}; check the address: the port of the cluster's GCS "
                "(6379 unless `ray start --head` was told otherwise), not the dashboard's (8265)"
            ) from error
    seconds = time.perf_counter() - started
    logger.info("Ray ready in %.1f s (%s)", seconds, ray.cluster_resources())
    return seconds


_FIXED_SIZE: set[str] = set()  # the GCS addresses of clusters that this process started without an autoscaler


def mark_fixed_size() -> None:
    """The Ray this process is connected to was started by raydsconv: it has no autoscaler, and its
    nodes are all there is (see ``fixed_size_data``)."""
    import ray

    _FIXED_SIZE.add(ray.get_runtime_context().gcs_address)


@contextmanager
def fixed_size_data() -> Iterator[None]:
    """While Ray Data runs on a Ray that raydsconv started (embedded, or over a SLURM step's ranks):
    without the two actors it starts for every cluster. Its autoscaling coordinator is what Ray
    Data asks which resources it may use, and it schedules nothing until that actor's fresh worker
    has started (1.9 s measured on 2 CPUs) though there is nothing to scale; the stats actor feeds
    the dashboard, which is off. Ray Data is told the nodes' own resources instead, and its stats
    go nowhere. Elsewhere (a cluster someone else started, which may autoscale), or if Ray Data's
    internals have moved, nothing changes."""
    import ray

    try:
        from ray.data._internal import stats
        from ray.data._internal.cluster_autoscaler import default_cluster_autoscaler_v2, rate_based_cluster_autoscaler
        from ray.data._internal.cluster_autoscaler.base_autoscaling_coordinator import AutoscalingCoordinator
    except ImportError:
        yield
        return
    modules = (rate_based_cluster_autoscaler, default_cluster_autoscaler_v2)
    if (ray.get_runtime_context().gcs_address not in _FIXED_SIZE
            or not hasattr(stats, "get_or_create_stats_actor")
            or not all(hasattr(module, "DefaultAutoscalingCoordinator") for module in modules)):
        yield
        return

    class NodesAsTheyAre(AutoscalingCoordinator):
        def __init__(self, *args: Any, **kwargs: Any):
            pass

        def request_resources(self, *args: Any, **kwargs: Any) -> None:
            pass

        def cancel_request(self, *args: Any, **kwargs: Any) -> None:
            pass

        def get_reserved_resources(self, *args: Any, **kwargs: Any) -> dict[str, dict[str, float]]:
            return {node["NodeID"]: dict(node["Resources"]) for node in ray.nodes() if node["Alive"]}

    class NoStats:
        def __getattr__(self, name: str) -> "NoStats":
            return self

        def remote(self, *args: Any, **kwargs: Any) -> None:
            return None

    replaced = [(module, "DefaultAutoscalingCoordinator", NodesAsTheyAre) for module in modules]
    replaced.append((stats, "get_or_create_stats_actor", NoStats))
    originals = [getattr(module, name) for module, name, _ in replaced]
    for module, name, stand_in in replaced:
        setattr(module, name, stand_in)
    try:
        yield
    finally:
        for (module, name, _), original in zip(replaced, originals):
            setattr(module, name, original)


def _ray_temp_dir() -> str:
    """Where an embedded Ray keeps its sessions, by Ray's own rule."""
    try:
        from ray._common.utils import get_default_ray_temp_dir

        return get_default_ray_temp_dir()
    except ImportError:  # Ray's internals moved
        return "/tmp/ray"


@contextmanager
def _lean_head(*, keep_log_monitor: bool) -> Iterator[None]:
    """While an embedded Ray starts: without three processes that a conversion on this machine never
    uses, which cost ~2 s of the start on 2 CPUs and ~1 s of the shutdown: the dashboard's API server
    (started even with ``include_dashboard=False``, and waited for), the autoscaler's monitor (nothing
    to scale), and the log monitor unless workers' output is printed here. ``ray.init`` has no
    option for them, so Ray's node is told for the duration of the call; if Ray's internals have
    moved, Ray starts as usual. Who wants the dashboard calls ``ray.init()`` before converting."""
    try:
        from ray._private.node import Node

        skipped = ["start_api_server", "start_monitor"] + ([] if keep_log_monitor else ["start_log_monitor"])
        originals = {name: Node.__dict__[name] for name in skipped}
    except (ImportError, KeyError):
        yield
        return
    for name in skipped:
        setattr(Node, name, lambda self, **_: None)
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(Node, name, original)


def data_context() -> Any:
    """Ray Data's current DataContext. Ray 2.60 warns about three deprecated settings
    (``use_push_based_shuffle``, ``use_polars``, ``use_arrow_tensor_v2``) whenever it makes one, though
    nobody set them: not that."""
    from ray.data import DataContext

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.data\.context")
        return DataContext.get_current()


def session_log() -> Path | None:
    """``raydsconv.log`` in the logs folder of this process's Ray session, where Ray's log lines of a
    conversion and the CLI's tracebacks go; None while Ray is not running here."""
    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
            return None
        return Path(ray._private.worker._global_node.get_logs_dir_path()) / LOG_NAME
    except Exception:  # Ray's internals moved
        return None


class RayLog(logging.Handler):
    """Ray's log lines of one conversion (see ``ray_logs_to_file``): written to ``session_log()``,
    those that come before Ray has started (its session's folder does not exist yet) kept until it
    has. ``path``: where they went (None: nowhere yet); ``warnings``: how many were warnings or worse."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.path: Path | None = None
        self.warnings = 0
        self.waiting: list[logging.LogRecord] = []
        self.printed_on_import = ""  # what importing Ray printed, for the file too
        self.file: logging.FileHandler | None = None
        # Ray's own format (ray.init gives it to every handler of the "ray" logger anyway)
        self.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(filename)s:%(lineno)s -- %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.warnings += 1
        if self.file is not None or self._open():
            self.file.emit(record)
        elif len(self.waiting) < 10_000:
            self.waiting.append(record)

    def _open(self) -> bool:
        path = session_log()
        if path is None:
            return False
        try:
            self.file = logging.FileHandler(path)
        except OSError:  # that disk is full: the lines are not worth failing for
            return False
        self.file.setFormatter(self.formatter)
        self.path = path
        if self.printed_on_import:
            self.file.stream.write(self.printed_on_import)
        for record in self.waiting:
            self.file.emit(record)
        self.waiting.clear()
        return True

    def close(self) -> None:
        if self.file is None:
            self._open()  # Ray started after the last record: the file gets those kept
        if self.file is not None:
            self.file.close()
        super().close()


@contextmanager
def ray_logs_to_file(enabled: bool = True) -> Iterator[RayLog]:
    """Inside the block, the log lines of Ray and Ray Data in this process go to ``session_log()``
    instead of the terminal (Ray Data's own files keep theirs too); afterwards the handlers are as
    they were, and the RayLog says where the lines went. ``enabled=False`` changes nothing."""
    log = RayLog()
    if not enabled:
        yield log
        return
    if any(name not in sys.modules for name in RAY_LOGGERS):  # importing them sets up the handlers changed below
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):  # and may print (in Jupyter without ipywidgets: advice to install it)
            for name in RAY_LOGGERS:
                importlib.import_module(name)
        log.printed_on_import = printed.getvalue()
    saved = {}
    for name in RAY_LOGGERS:
        ray_logger = logging.getLogger(name)
        saved[name] = list(ray_logger.handlers)
        for console in [h for h in ray_logger.handlers
                        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]:
            ray_logger.removeHandler(console)
        ray_logger.addHandler(log)
    try:
        yield log
    finally:
        for name, handlers in saved.items():
            ray_logger = logging.getLogger(name)
            ray_logger.removeHandler(log)
            for handler in handlers:
                if handler not in ray_logger.handlers:
                    ray_logger.addHandler(handler)
        log.close()


def check_address(address: str | None) -> None:
    """Fail within CONNECT_TIMEOUT_S, naming the address, when nothing answers at the Ray cluster
    address given (``address``, else ``RAY_ADDRESS``): a TCP connection to its GCS port. Nothing to
    check for an embedded Ray, a Ray already running in this process (the address is then ignored),
    or a Ray Client address (``ray://``)."""
    given = address if address is not None else os.environ.get("RAY_ADDRESS")
    if not given or "://" in given:
        return
    import ray
    from ray._private.services import canonicalize_bootstrap_address  # Ray's own reading of "auto", hosts

    if ray.is_initialized():
        return
    try:
        resolved = canonicalize_bootstrap_address(address)
    except ValueError as error:
        raise InvalidArgumentError(f"Ray address {given!r}: {error}") from None
    if resolved is None:  # "local": an embedded Ray ("auto" without a cluster raised ConnectionError)
        return
    host, _, port = resolved.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        timed_out = isinstance(error, TimeoutError)
        reason = f"no answer in {CONNECT_TIMEOUT_S:.0f} s" if timed_out else (error.strerror or str(error)).lower()
        where = given if resolved == given else f"{given} ({resolved})"
        raise ClusterUnreachableError(
            f"no Ray cluster answers at {where}: {reason}; check that Ray runs there (`ray status --address "
            f"{given}`) and that this machine can reach that port, or leave out the address to use an embedded Ray"
        ) from None


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name=value`` in the environment inside the block, unless the user has set ``name``."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
