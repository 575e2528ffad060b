"""Connecting to Ray: embedded on this machine, or an existing cluster (address, RAY_ADDRESS, SLURM)."""

from __future__ import annotations

import logging
import os
import time

logger = logging.getLogger(__name__)


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
        ray.init(address=address, logging_level=logging.WARNING)
    seconds = time.perf_counter() - started
    logger.info("Ray ready in %.1f s (%s)", seconds, ray.cluster_resources())
    return seconds
