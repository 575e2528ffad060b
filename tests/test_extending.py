"""The worked example of docs/extending.md, run as written: a new format plugs in from outside."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from raydsconv import convert, open_dataset
from raydsconv.formats import FORMATS
from raydsconv.testing import FormatConformance

DOC = Path(__file__).parent.parent / "docs" / "extending.md"


@pytest.fixture(scope="module")
def npz_format(tmp_path_factory):
    import ray.cloudpickle

    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)[0]
    module_path = tmp_path_factory.mktemp("plugin") / "npz_format.py"
    module_path.write_text(code)
    spec = importlib.util.spec_from_file_location("npz_format", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["npz_format"] = module
    spec.loader.exec_module(module)
    ray.cloudpickle.register_pickle_by_value(module)  # this test's module is not installed on the workers
    yield module
    ray.cloudpickle.unregister_pickle_by_value(module)
    FORMATS.pop("npz", None)
    del sys.modules["npz_format"]


@pytest.mark.usefixtures("ray_session")
def test_the_documented_format_converts_and_reads_back(npz_format, small_folder, tmp_path):
    convert(small_folder, tmp_path / "both", format=["npz", "memmap"], shape=(10, 12), images_per_file=6,
            progress=False)
    ours, theirs = open_dataset(tmp_path / "both", format="npz"), open_dataset(tmp_path / "both", format="memmap")
    assert len(ours) == len(theirs) > 0
    for i in range(len(ours)):
        assert ours[i][1] == theirs[i][1]
        assert np.array_equal(np.asarray(ours[i][0]), np.asarray(theirs[i][0]))
    assert sorted(p.name for p in (tmp_path / "both" / "npz").glob("shard-*.npz"))[0] == "shard-00000.npz"


@pytest.mark.usefixtures("ray_session")
class TestTheDocumentedFormatConforms(FormatConformance):
    """The shipped conformance suite, as a plugin's author runs it (masks: skipped, npz stores none)."""

    @pytest.fixture(scope="class")
    def format(self, npz_format):
        return "npz"
