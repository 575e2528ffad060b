"""Connecting to Ray: embedded on this machine, or an existing cluster (address, RAY_ADDRESS, SLURM)."""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator

from raydsconv.errors import ClusterUnreachableError, InvalidArgumentError

logger = logging.getLogger(__name__)

# Joining a cluster fails within bounded time. Ray 2.60 tries to reach the cluster's GCS 20 times,
# about 31 s each (36 s when something that is not a GCS answers), about ten minutes in all:
# - nothing answers at the address (refused, unreachable): check_address fails within CONNECT_TIMEOUT_S;
# - something else answers there (e.g. the dashboard's port): ray.init tries GCS_ATTEMPTS times, via
#   RAY_gcs_server_port_wait_time_s (read on each connect; a value set by the user wins).
CONNECT_TIMEOUT_S = 10.0
GCS_ATTEMPTS = 1


def available_cpus() -> int:
    """CPUs this process may use (its affinity, e.g. a SLURM or container limit), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None) -> float:
    """Make sure this process is connected to Ray; return the seconds it took (0 if already connected).

    ``address=None`` starts an embedded Ray sized to this process's CPUs, unless ``RAY_ADDRESS`` is
    set (as under ``ray job submit``), in which case Ray joins that cluster.
    """
    import ray

    if ray.is_initialized():
        if address is not None:
            logger.warning("Ray is already initialised in this process; using it and ignoring address=%r", address)
        return 0.0
    started = time.perf_counter()
    if address is None and not os.environ.get("RAY_ADDRESS"):
        ray.init(
            num_cpus=num_cpus or available_cpus(),
            include_dashboard=False,
            logging_level=logging.WARNING,
        )
    else:
        given = address if address is not None else os.environ.get("RAY_ADDRESS")
        try:
            with _environment("RAY_gcs_server_port_wait_time_s", str(GCS_ATTEMPTS)):
                ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as error:
            raise ClusterUnreachableError(
                f"cannot join a Ray cluster at {given}: {error}; check the address: the port of the cluster's GCS "
                "(6379 unless `ray start --head` was told otherwise), not the dashboard's (8265)"
            ) from error
    seconds = time.perf_counter() - started
    logger.info("Ray ready in %.1f s (%s)", seconds, ray.cluster_resources())
    return seconds


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
