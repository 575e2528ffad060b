"""Shared fixtures: one embedded Ray for the whole session and small generated image folders."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from raydsconv.samples import photo_like, write_odd_cases

# An earlier local ray.init may have left ~/.ray/auth_token behind; tests use no token auth.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SMALL_SIZES = ((64, 48), (48, 64), (80, 60), (50, 50), (96, 40))


@pytest.fixture(scope="session")
def ray_session():
    """One Ray instance for the whole run (2 CPUs, 1 GiB object store, no dashboard), stopped at the end."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rdc-ray-")  # short: Ray's socket paths have a length limit
    tests = str(Path(__file__).parent)  # workers unpickle datasets defined in test modules
    ray.init(
        num_cpus=2,
        object_store_memory=1 << 30,
        include_dashboard=False,
        _temp_dir=temp_dir,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}},
    )
    from raydsconv.cluster import data_context

    data_context().enable_progress_bars = False  # without Ray 2.60's DeprecationWarnings
    yield ray
    # Ray Data's iterators left for the garbage collector stop their threads when collected; one
    # still running after ray.shutdown() that touches Ray makes Ray end this process (exit code 1,
    # no summary printed: seen once at the end of a full run)
    gc.collect()
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


def write_small_folder(root: Path, *, per_class: int = 6, seed: int = 0) -> Path:
    """Three classes of small photo-like JPEGs and PNGs (one in a nested folder), an empty class,
    and a class of odd cases."""
    rng = np.random.default_rng(seed)
    for c in range(3):
        folder = root / f"class_{c}"
        (folder / "sub").mkdir(parents=True)
        for i in range(per_class):
            width, height = SMALL_SIZES[(c + i) % len(SMALL_SIZES)]
            image = photo_like(rng, width, height)
            target = folder / "sub" if i == 0 else folder
            if i % 3 == 2:
                image.save(target / f"im_{i}.png")
            else:
                image.save(target / f"im_{i}.jpg", quality=90)
    (root / "empty_class").mkdir()
    write_odd_cases(root, "odd")
    return root


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> Path:
    return write_small_folder(tmp_path_factory.mktemp("src") / "images")
